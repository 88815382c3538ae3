"""`karma demo` end to end on a tiny grid (tiny random backbone, a dataset written in code)."""

from __future__ import annotations

from pathlib import Path

from karma.cli import main
from karma.testing.datasets import write_tiny_dataset

ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs_end_to_end_on_the_tiny_config(tmp_path: Path, capsys) -> None:
    data = write_tiny_dataset(tmp_path / "data")
    grid = tmp_path / "grid.yaml"
    # A relative config path: resolved against the karma checkout, as the shipped demo grid's are.
    grid.write_text(
        """
name: tiny demo
bootstrap: 20
diagnostic_users: 10
threads: 1
runs:
  - {name: popularity, kind: popularity}
  - name: karma
    kind: karma
    config: configs/debug/tiny.yaml
    overrides: [train.max_steps=4, train.eval_every=2, train.checkpoint_every=2,
                train.lr_warmup_steps=1, knowledge.reconstruction_weight=0.5]
  - {name: query-floor, kind: query-floor, baseline: query-floor}
  - name: search-karma
    kind: karma
    config: configs/debug/tiny.yaml
    init_from: karma
    baseline: query-floor
    overrides: [data.mode=search, train.max_steps=4, train.eval_every=2,
                train.checkpoint_every=2, train.lr_warmup_steps=1,
                knowledge.reconstruction_weight=0.5, model.encoder.query_position=last]
"""
    )
    out = tmp_path / "report"
    code = main(
        ["demo", "--grid", str(grid), "--data", str(data), "--out", str(out), "--examples", "2"]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "| popularity |" in printed and "| karma |" in printed
    # search runs in a table of their own, against the query-only floor
    recommendation, search = printed.split("## Personalized search")
    assert "| search-karma |" not in recommendation and "| search-karma |" in search
    assert "| query-floor |" in search and "Query-blind rankings on the same users" in search
    assert printed.count("  query: ") == 2  # two personalized search examples
    # ... from the search-mode run, whose LLM reads the query (not retrieve-then-filter)
    assert "(search-karma run, test users; the LLM reads the query and the history)" in printed
    assert (out / "results.md").is_file() and (out / "recall_at_k.png").is_file()
    # query adherence side by side: the search model, the floor, then the query-blind runs
    adherence = printed.split("Query adherence@10:")[1].split("\n\n")[0].splitlines()[1:]
    assert [line.split()[0] for line in adherence] == [
        "query-floor",
        "search-karma",
        "popularity",
        "karma",
    ]
    assert "query-blind (recommendation)" in adherence[2]
    # the floor lists every unmasked item of the queried genre first: no ranking adheres more
    scores = [float(line.split()[1]) for line in adherence]
    assert scores[0] == max(scores) > 0
    # closing sentences: the search model against its floor, with its adherence
    summary = printed.split("What it shows: ")[1]
    assert "Search: search-karma finds the held-out item at HR@10" in summary
    assert "for query-floor (Δ" in summary and "of its top 10 in the queried genres" in summary
    # as the shipped demo: the search model starts from the recommendation run's weights
    saved = (out / "search-karma" / "seed0" / "run_config.yaml").read_text()
    assert f"init_from: {(out / 'karma' / 'seed0').resolve()}" in saved


def test_demo_grid_missing_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    assert main(["demo", "--grid", str(tmp_path / "nope.yaml"), "--data", str(tmp_path)]) == 2
    assert "demo grid" in capsys.readouterr().err


def test_demo_lists_show_each_title_once() -> None:
    from karma.demo import distinct_titles

    titles = ["Chasing Amy", "Heat", "chasing  amy", "Sabrina", "Sabrina", "Fargo"]
    assert distinct_titles([0, 1, 2, 3, 4, 5], titles, 3) == [0, 1, 3]
    assert distinct_titles([2, 0, 5], titles, 5) == [2, 5]


def test_examples_fall_back_to_a_labelled_filter_without_a_search_run(tmp_path: Path) -> None:
    from karma.config import load_config
    from karma.experiments.grid import GridConfig

    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(
        f"""
name: rec only
data: {tmp_path}
runs:
  - {{name: popularity, kind: popularity}}
  - {{name: karma, kind: karma, config: {ROOT / "configs" / "debug" / "tiny.yaml"}}}
"""
    )
    from karma.demo import examples_run

    chosen = examples_run(load_config(GridConfig, grid_file))
    assert chosen is not None and chosen[0].name == "karma" and chosen[1] is False
