"""The serving subcommands end to end on a toy artifact."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from karma.cli import main
from karma.serve.artifact import load_artifact
from karma.serve.recommend import format_table, recommend


def test_recommend_prints_the_offline_top_k(
    artifact_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["recommend", str(artifact_dir), "--history", "m1", "Movie 2 part 2", "-k", "3"]) == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["rank", "score", "item_id", "title"]
    expected = recommend(load_artifact(artifact_dir), ["m1", "m2"], k=3)
    assert [line.split()[2] for line in lines[1:]] == [r["item_id"] for r in expected]


def test_recommend_names_unknown_items(
    artifact_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["recommend", str(artifact_dir), "--history", "m1", "ghost"]) == 2
    assert "'ghost'" in capsys.readouterr().err


def test_format_table_cuts_long_titles() -> None:
    table = format_table(
        [{"rank": 1, "score": 0.5, "item_id": "a", "title": "x" * 100}], title_width=10
    )
    assert table.splitlines()[1].endswith("x" * 9 + "…")


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_index_command_records_parameters_and_recall(
    artifact_dir: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["index", str(artifact_dir), "--kind", kind, "--nlist", "4", "--nprobe", "4", "-k", "10"]
    assert main(args) == 0
    assert "recall@10" in capsys.readouterr().out
    manifest = json.loads((artifact_dir / "manifest.json").read_text())
    entry = manifest["indexes"][kind]
    assert entry["config"]["kind"] == kind and entry["num_items"] == 60
    if kind in ("flat", "ivf"):  # 4 probes of 4 lists = every list: exact
        assert entry["report"]["recall"] == 1.0
    assert (artifact_dir / "index" / f"{kind}.faiss").is_file()
    assert load_artifact(artifact_dir, index=kind).index_config.kind == kind


def test_index_command_rejects_bad_parameters(
    artifact_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["index", str(artifact_dir), "--kind", "ivf", "--nprobe", "0"]) == 2
    assert "nprobe" in capsys.readouterr().err


def test_add_items_command(artifact_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "new.csv"
    pd.DataFrame({"item_id": ["n1", "n2"], "title": ["Brand New", "Also New"]}).to_csv(
        path, index=False
    )
    assert main(["add-items", str(artifact_dir), str(path)]) == 0
    model = load_artifact(artifact_dir)
    assert model.num_items == 62
    assert model.resolve_items(["n1", "Also New"]) == [60, 61]
    assert model.items["text"].iloc[60] == "Brand New"


def test_export_of_a_missing_run_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", str(tmp_path / "nope"), "--out", str(tmp_path / "a")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("env", "option", "expected"),
    [
        ("from-env", None, "from-env"),  # KARMA_API_KEY when --api-key is absent
        ("from-env", "from-option", "from-option"),  # the option wins
        (None, None, None),  # neither: no key
        ("", None, None),  # an empty variable is no key
    ],
)
def test_serve_reads_the_api_key_from_the_environment(
    artifact_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: str | None,
    option: str | None,
    expected: str | None,
) -> None:
    from karma.serve import app

    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # `karma serve` sets it when unset
    if env is None:
        monkeypatch.delenv("KARMA_API_KEY", raising=False)
    else:
        monkeypatch.setenv("KARMA_API_KEY", env)
    seen = []
    monkeypatch.setattr(app, "serve", lambda model, config: seen.append(config))
    args = ["serve", str(artifact_dir), "--port", "8123"]
    assert main(args + (["--api-key", option] if option else [])) == 0
    assert seen[0].api_key == expected and seen[0].port == 8123


def test_serve_help_names_the_environment_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert "KARMA_API_KEY" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize(
    "history", [["toy story", "HEAT (1995)"], ["Toy Story (1995)", "25"], [" 1 ", "heat"]]
)
def test_recommend_takes_titles_in_any_case_and_with_their_year(
    movie_artifact: Path, history: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["recommend", str(movie_artifact), "--history", *history, "-k", "3"]) == 0
    ids = [line.split()[2] for line in capsys.readouterr().out.strip().splitlines()[1:]]
    expected = recommend(load_artifact(movie_artifact), ["1", "25"], k=3)
    assert ids == [r["item_id"] for r in expected]


def test_recommend_stops_on_an_ambiguous_title_with_the_candidates(
    movie_artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["recommend", str(movie_artifact), "--history", "Chasing Amy"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "246 (1997), 268 (1997)" in err and "item id" in err
