"""`compare_runs` on two run directories whose rankings differ, with values worked out by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from karma.baselines.popularity import PopularityRetriever
from karma.cli import main
from karma.data.dataset import PreparedDataset
from karma.experiments.compare import compare_runs, run_labels
from karma.runs.layout import finish_run, start_run
from karma.testing.datasets import write_leave_one_out

NUM_ITEMS = 20
# Each user: train click, valid click, test click (the target). History = the first two, masked.
SEQUENCES = [[5, 6, 0], [10, 11, 19], [3, 4, 0], [1, 2, 0]]


def popularity_run(run_dir: Path, counts: np.ndarray, data: Path) -> Path:
    run = start_run(run_dir, "popularity", data)
    PopularityRetriever(counts).save(run_dir)
    finish_run(run)
    return run_dir


def test_compare_runs_reports_the_paired_difference(tmp_path: Path) -> None:
    ds = PreparedDataset(write_leave_one_out(tmp_path / "ds", SEQUENCES, NUM_ITEMS))
    # a ranks item 0 first (counts 20, 19, ..., 1); b ranks item 19 first (counts 1, ..., 20).
    a = popularity_run(tmp_path / "a", np.arange(NUM_ITEMS, 0, -1), ds.root)
    b = popularity_run(tmp_path / "b", np.arange(1, NUM_ITEMS + 1), ds.root)
    table = compare_runs([a, b], ds, metrics=("hr@10", "ndcg@10"), bootstrap=200)
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    cells_a = [c.strip() for c in rows["a"].split("|")[2:-1]]
    cells_b = [c.strip() for c in rows["b"].split("|")[2:-1]]
    # a: targets 0, 0, 0 at rank 1 (hit, NDCG 1); target 19 has 17 unmasked items above: miss.
    assert cells_a[:2] == ["0.7500", "0.7500"] and cells_a[2:] == ["", ""]
    # b: target 19 at rank 1; item 0 is last (17 unmasked items above it) for the other three.
    assert cells_b[:2] == ["0.2500", "0.2500"]
    # Per-user b - a: -1, +1, -1, -1 -> mean -0.5 on both metrics; the CI stays in [-1, 1].
    for cell in cells_b[2:]:
        mean, low, high = (
            float(x) for x in cell.replace("[", "").replace("]", "").replace(",", "").split()
        )
        assert mean == pytest.approx(-0.5)
        assert -1.0 <= low <= mean <= high <= 1.0 and low < high


def test_compare_pairs_tail_share_and_marks_coverage_as_not_per_user(tmp_path: Path) -> None:
    ds = PreparedDataset(write_leave_one_out(tmp_path / "ds", SEQUENCES, NUM_ITEMS))
    a = popularity_run(tmp_path / "a", np.arange(NUM_ITEMS, 0, -1), ds.root)
    b = popularity_run(tmp_path / "b", np.arange(1, NUM_ITEMS + 1), ds.root)
    table = compare_runs([a, b], ds, metrics=("tail_share@10", "coverage@10"), bootstrap=200)
    cells_a, cells_b = (
        [c.strip() for c in line.split("|")[2:-1]] for line in table.splitlines()[2:]
    )
    share_a, share_b = float(cells_a[0]), float(cells_b[0])
    # The same users on both sides: the paired mean difference is the difference of the means.
    assert float(cells_b[2].split()[0]) == pytest.approx(share_b - share_a)
    assert "[" in cells_b[2]
    assert cells_b[3] == f"{float(cells_b[1]) - float(cells_a[1]):+.4f} (not per user)"


def test_run_labels_are_the_shortest_tails_that_tell_runs_apart() -> None:
    assert run_labels(["runs/a", "runs/b"]) == ["a", "b"]
    assert run_labels(["g/a/seed0", "g/b/seed0"]) == ["a/seed0", "b/seed0"]
    assert run_labels(["x/a/seed0", "y/a/seed0"]) == ["x/a/seed0", "y/a/seed0"]
    assert run_labels(["runs/a", "runs/a"]) == ["runs/a", "runs/a"]


def test_cli_compare_prints_the_paired_table_of_grid_cells(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ds = PreparedDataset(write_leave_one_out(tmp_path / "ds", SEQUENCES, NUM_ITEMS))
    a = popularity_run(tmp_path / "a" / "seed0", np.arange(NUM_ITEMS, 0, -1), ds.root)
    b = popularity_run(tmp_path / "b" / "seed0", np.arange(1, NUM_ITEMS + 1), ds.root)
    assert main(["compare", str(a), str(b), "--metrics", "hr@10", "--bootstrap", "200"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0] == "| run | hr@10 | Δhr@10 vs a/seed0 [95% CI] |"
    assert rows[2].startswith("| a/seed0 | 0.7500 |  |")  # worked out in the test above
    assert rows[3].startswith("| b/seed0 | 0.2500 | -0.5000 [")


def test_cli_compare_refuses_one_run_and_an_unknown_metric(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ds = PreparedDataset(write_leave_one_out(tmp_path / "ds", SEQUENCES, NUM_ITEMS))
    a = popularity_run(tmp_path / "a", np.arange(NUM_ITEMS, 0, -1), ds.root)
    b = popularity_run(tmp_path / "b", np.arange(1, NUM_ITEMS + 1), ds.root)
    assert main(["compare", str(a)]) == 2
    assert "at least two run directories" in capsys.readouterr().err
    assert main(["compare", str(a), str(b), "--metrics", "hr@7"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("karma: error: unknown metric hr@7;") and "hr@10" in err
    assert main(["compare", str(a), str(tmp_path / "nowhere")]) == 2
