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
