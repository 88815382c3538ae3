"""The grid report on a new-item split: paired Δ among the cold items alone, by hand."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import numpy as np
import pytest

from karma.config import load_config
from karma.eval.metrics import TargetRanks
from karma.experiments import runner
from karma.experiments.grid import GridConfig
from karma.experiments.report import (
    cold_only_markdown,
    paired_delta,
    paired_deltas,
    plot_deltas,
)
from karma.experiments.runner import RunResult
from karma.testing.datasets import write_leave_one_out
from karma.train.lock import LOCK_FILE

# (train | valid | test): u0 0 | 1 | 4, u1 2 | 3 | 5, u2 3 | 0 | 1; items 4 and 5 are cold.
SEQUENCES = [[0, 1, 4], [2, 3, 5], [3, 0, 1]]


def _grid(tmp_path: Path) -> GridConfig:
    data = write_leave_one_out(tmp_path / "data", SEQUENCES, 6, cold_items=[4, 5])
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(
        f"""
name: cold grid
data: {data}
output_dir: {tmp_path / "out"}
seeds: [0, 1]
baseline: a
bootstrap: 50
diagnostics: false
runs:
  - {{name: a, kind: popularity}}
  - {{name: b, kind: popularity}}
"""
    )
    return load_config(GridConfig, grid_file)


def _result(name: str, seed: int, cold_greater: list[int] | None) -> RunResult:
    users = ["u0", "u1", "u2"]
    zeros = np.zeros(3, dtype=np.int64)
    return RunResult(
        name,
        seed,
        {"hr@10": 0.0},
        users,
        TargetRanks(zeros, zeros),
        cold_only_user_ids=users if cold_greater is not None else [],
        cold_only_ranks=(
            TargetRanks(np.array(cold_greater), zeros) if cold_greater is not None else None
        ),
    )


def test_cold_only_delta_by_hand(tmp_path: Path) -> None:
    grid = _grid(tmp_path)
    # Seed 0: a's targets land at 0, 15, 60 candidates above -> HR@10 1/3, HR@50 2/3;
    # b's at 3, 5, 20 -> HR@10 2/3, HR@50 1. Seed 1: a has no cold-only ranks -> not paired.
    a = [_result("a", 0, [0, 15, 60]), _result("a", 1, None)]
    b = [_result("b", 0, [3, 5, 20]), _result("b", 1, [0, 0, 0])]
    delta, (lo, hi) = paired_delta(a, b, "hr@10", 100, cold_only=True)
    assert delta == pytest.approx(1 / 3)
    assert 0.0 <= lo <= delta <= hi <= 1.0
    assert paired_delta(a, b, "hr@50", 100, cold_only=True)[0] == pytest.approx(1 / 3)
    assert paired_delta(a, b, "hr@10", 100)[0] == 0.0  # the full-catalog ranks are all equal

    table = cold_only_markdown(grid, {"a": a, "b": b})
    row_a = next(line for line in table.splitlines() if line.startswith("| a |"))
    row_b = next(line for line in table.splitlines() if line.startswith("| b |"))
    assert "| 0.3333 | 0.6667 |" in row_a  # a: only seed 0 has cold-only ranks
    assert "0.8333 ± 0.2357" in row_b  # b: HR@10 2/3 and 1 over the two seeds
    assert "+0.3333 [" in row_b
    assert cold_only_markdown(grid, {"a": [_result("a", 0, None)], "b": []}) == ""


def test_paired_deltas_by_hand_and_their_forest_plot(tmp_path: Path) -> None:
    grid = _grid(tmp_path)
    a = [_result("a", 0, [0, 15, 60]), _result("a", 1, None)]
    b = [_result("b", 0, [3, 5, 20]), _result("b", 1, [0, 0, 0])]
    deltas = {(d.run, d.metric, d.cold_only): d for d in paired_deltas(grid, [*a, *b])}
    # The baseline gets no row; b vs a on HR@10 / HR@200 over all users, HR@10 / HR@50 among
    # the new items alone.
    assert set(deltas) == {("b", "hr@10", False), ("b", "hr@200", False)} | {
        ("b", "hr@10", True),
        ("b", "hr@50", True),
    }
    assert {d.baseline for d in deltas.values()} == {"a"}
    assert deltas["b", "hr@10", False].difference == 0.0  # full-catalog ranks all equal
    assert not deltas["b", "hr@10", False].significant
    assert deltas["b", "hr@10", True].difference == pytest.approx(1 / 3)  # as in the table above
    assert deltas["b", "hr@50", True].difference == pytest.approx(1 / 3)  # a's 60 is out
    assert paired_deltas(grid, b) == []  # no finished baseline: nothing to compare against

    path = tmp_path / "deltas.png"
    assert plot_deltas(grid.name, list(deltas.values()), path)
    assert path.stat().st_size > 0
    assert not plot_deltas(grid.name, [], tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_round_trip_keeps_cold_only_ranks() -> None:
    result = _result("b", 0, [3, 5, 20])
    again = RunResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again.cold_only_ranks is not None
    assert again.cold_only_ranks.greater.tolist() == [3, 5, 20]
    assert again.cold_only_user_ids == ["u0", "u1", "u2"]


def test_results_finished_without_cold_only_ranks_get_them_without_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    grid = _grid(tmp_path)
    grid.seeds = [0]
    first = runner.run_grid(grid, progress=False)
    assert all(r.cold_only_ranks is not None for r in first)
    assert all(len(r.cold_only_user_ids) == 2 for r in first)  # u0 and u1 have cold targets
    done = grid.run_dir(grid.runs[0], 0) / runner.RESULT_FILE
    old = json.loads(done.read_text())
    del old["cold_only_per_user"]  # as written before karma kept these ranks
    done.write_text(json.dumps(old))

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(runner, "train_retriever", no_training)
    again = runner.run_grid(grid, progress=False)
    assert again[0].cold_only_ranks is not None and first[0].cold_only_ranks is not None
    assert again[0].cold_only_ranks.greater.tolist() == first[0].cold_only_ranks.greater.tolist()
    assert "cold_only_per_user" in json.loads(done.read_text())  # written back once


def test_a_cell_another_process_trains_is_skipped_then_run(tmp_path: Path) -> None:
    grid = _grid(tmp_path)
    grid.seeds = [0]
    busy = grid.run_dir(grid.runs[0], 0)
    busy.mkdir(parents=True)
    fd = os.open(busy / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as another stream's RunDirLock would
    os.pwrite(fd, b"4242\n", 0)
    try:
        first = runner.run_grid(grid, progress=False)
    finally:
        os.close(fd)  # that stream ends
    assert [r.name for r in first] == ["b"]
    assert not (busy / runner.RESULT_FILE).exists()
    again = runner.run_grid(grid, progress=False)
    assert [r.name for r in again] == ["a", "b"]


def test_report_only_reports_finished_cells_and_trains_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    grid = _grid(tmp_path)
    grid.seeds = [0]
    only_a = grid.select(["a"])
    assert [r.name for r in runner.run_grid(only_a, progress=False)] == ["a"]

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("--report-only trained a cell")

    monkeypatch.setattr(runner, "train_retriever", no_training)
    monkeypatch.setattr(runner, "run_one", no_training)
    results = runner.run_grid(grid, progress=False, train=False)
    assert [r.name for r in results] == ["a"]  # b is not finished: left out, untouched
    assert not grid.run_dir(grid.runs[1], 0).exists()


def test_cli_report_only_with_nothing_finished_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from karma.cli import main

    grid = _grid(tmp_path)
    grid_file = tmp_path / "grid.yaml"
    assert main(["experiment", str(grid_file), "--report-only", "--no-progress"]) == 2
    assert "no cell of the grid has finished yet" in capsys.readouterr().err
    assert not (grid.output_dir / "results.md").exists()


def test_cli_only_trains_a_slice_and_reports_the_whole_grid(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from karma.cli import main

    grid = _grid(tmp_path)
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(grid_file.read_text() + "  - {name: c, kind: popularity}\n")
    report = grid.output_dir / "results.md"

    def rows() -> list[str]:
        """The runs in the report's main table (its first table), below the header row."""
        main_table = report.read_text(encoding="utf-8").split("\n## ")[0]
        table = [line for line in main_table.splitlines() if line.startswith("| ")]
        return [line.split(" | ")[0].removeprefix("| ") for line in table[1:]]

    caplog.set_level("INFO", logger="karma.experiments.commands")
    assert main(["experiment", str(grid_file), "seeds=[0]", "--only", "b", "--no-progress"]) == 0
    assert rows() == ["a", "b"]  # b and its baseline a
    assert "--only: also a, which the named runs are compared with" in caplog.text  # said
    assert main(["experiment", str(grid_file), "seeds=[0]", "--only", "c", "--no-progress"]) == 0
    assert rows() == ["a", "b", "c"]  # c trained alone; b, finished by the first slice, stays
    args = ["experiment", str(grid_file), "seeds=[0]", "--only", "c", "--report-only"]
    assert main([*args, "--no-progress"]) == 0
    assert rows() == ["a", "c"]  # a report of the slice, asked for
