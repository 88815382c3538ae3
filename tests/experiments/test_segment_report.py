"""The grid report's paired Δ by target segment (head / long tail / new) and by history length,
checked by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from karma.config import load_config
from karma.data.dataset import PreparedDataset
from karma.eval.metrics import TargetRanks
from karma.experiments.grid import GridConfig
from karma.experiments.report import (
    HISTORY_SEGMENTS,
    history_segments,
    paired_delta,
    results_markdown,
    seed_markdown,
    segment_markdown,
    target_segments,
    write_report,
)
from karma.experiments.runner import RunResult
from karma.testing.datasets import write_leave_one_out

# (train | valid | test). Training clicks: item 0: 4, item 1: 4, item 2: 2, items 3, 4: 1, the
# rest 0. The head is the 20 % most-clicked of the 10 items: items 0 and 1.
SEQUENCES = [[0, 1, 2, 5, 0], [0, 1, 3, 5, 1], [0, 1, 4, 5, 2], [0, 1, 2, 5, 9]]
USERS = ["head0", "head1", "tail", "new"]


def _grid(tmp_path: Path, sequences: list[list[int]] = SEQUENCES) -> GridConfig:
    data = write_leave_one_out(tmp_path / "data", sequences, 10, user_ids=USERS)
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(
        f"name: segments\ndata: {data}\noutput_dir: {tmp_path / 'out'}\nseeds: [0]\n"
        "baseline: a\nbootstrap: 100\ndiagnostics: false\n"
        "runs:\n  - {name: a, kind: popularity}\n  - {name: b, kind: popularity}\n",
        encoding="utf-8",
    )
    return load_config(GridConfig, grid_file)


def _result(name: str, greater: list[int]) -> RunResult:
    """Users in USERS order; `greater[u]` = candidates scored above u's target."""
    ranks = TargetRanks(np.array(greater), np.zeros(len(greater), dtype=np.int64))
    return RunResult(name, 0, {"hr@10": 0.0}, list(USERS), ranks)


def test_target_segments_by_training_clicks(tmp_path: Path) -> None:
    grid = _grid(tmp_path)
    dataset = PreparedDataset(grid.data)
    assert dataset.train_item_counts()[[0, 1, 2, 3, 4, 5, 9]].tolist() == [4, 4, 2, 1, 1, 0, 0]
    segments = target_segments(dataset, "test")
    assert segments == {"head": {"head0", "head1"}, "long_tail": {"tail"}, "new": {"new"}}


def test_segment_deltas_by_hand(tmp_path: Path) -> None:
    grid = _grid(tmp_path)
    # HR@10 per user: a 1, 0, 1, 0 (20 and 300 candidates above the 2nd and 4th targets);
    # b 1, 1, 0, 0. HR@200: a 1, 1, 1, 0; b 1, 1, 1, 0.
    a, b = _result("a", [0, 20, 0, 300]), _result("b", [0, 0, 50, 300])
    head, tail = {"head0", "head1"}, {"tail"}
    assert paired_delta([a], [b], "hr@10", 100, users=head)[0] == pytest.approx(0.5)
    delta, (lo, hi) = paired_delta([a], [b], "hr@10", 100, users=tail)
    assert (delta, lo, hi) == (-1.0, -1.0, -1.0)
    assert np.isnan(paired_delta([a], [b], "hr@10", 100, users=set())[0])

    segments = {grid.data: target_segments(PreparedDataset(grid.data), "test")}
    table = segment_markdown(grid, {"a": [a], "b": [b]}, segments)
    header, _, row = table.strip().splitlines()[-3:]
    assert header.startswith("| run | baseline | head users | head Δhr@10")
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:3] == ["b", "a", "2"]
    assert cells[3].startswith("+0.5000 [") and not cells[3].endswith("*")
    assert cells[4].startswith("+0.0000 [+0.0000, +0.0000]")  # HR@200 equal on the head
    assert cells[5:8] == ["1", "-1.0000 [-1.0000, -1.0000] *", "+0.0000 [+0.0000, +0.0000]"]
    assert cells[8] == "1"  # the new-item user
    assert not any(line.startswith("| a |") for line in table.splitlines())  # not vs itself
    # A seed the baseline lacks pairs with nothing: it adds no users to the count.
    b1 = RunResult("b", 1, {"hr@10": 0.0}, list(USERS), b.ranks)
    row = segment_markdown(grid, {"a": [a], "b": [b, b1]}, segments).strip().splitlines()[-1]
    assert [c.strip() for c in row.strip("|").split("|")][:3] == ["b", "a", "2"]
    assert segment_markdown(grid, {"a": [a]}, segments) == ""  # nothing to compare


def test_the_report_carries_the_segment_table(tmp_path: Path) -> None:
    grid = _grid(tmp_path)
    results = [_result("a", [0, 20, 0, 300]), _result("b", [0, 0, 50, 300])]
    assert "By target segment" not in results_markdown(grid, results)  # no segments given
    write_report(grid, results)
    assert "## By target segment" in (tmp_path / "out" / "results.md").read_text()


def test_history_segments_by_length(tmp_path: Path) -> None:
    # Test histories are every click but the last: 4, 8, 5 and 6 items (short: at most 5).
    sequences = [[0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6], [0] * 7]
    grid = _grid(tmp_path, sequences)
    segments = history_segments(PreparedDataset(grid.data), "test")
    assert segments == {"short_history": {"head0", "tail"}, "long_history": {"head1", "new"}}
    # HR@10 per user (USERS order): a 1, 0, 1, 0; b 1, 1, 0, 0.
    a, b = _result("a", [0, 20, 0, 300]), _result("b", [0, 0, 50, 300])
    table = segment_markdown(grid, {"a": [a], "b": [b]}, {grid.data: segments}, HISTORY_SEGMENTS)
    assert "## By history length" in table
    row = [c.strip() for c in table.strip().splitlines()[-1].strip("|").split("|")]
    # short: head0 (1 vs 1), tail (0 vs 1) -> Δ -0.5; long: head1 (1 vs 0), new (0 vs 0) -> +0.5
    assert row[:3] == ["b", "a", "2"] and row[3].startswith("-0.5000 [")
    assert row[5] == "2" and row[6].startswith("+0.5000 [")


def test_history_table_is_left_out_when_every_user_is_in_one_segment(tmp_path: Path) -> None:
    grid = _grid(tmp_path)  # every test history has 4 items: all short
    segments = {grid.data: history_segments(PreparedDataset(grid.data), "test")}
    assert segments[grid.data]["long_history"] == set()
    a, b = _result("a", [0, 20, 0, 300]), _result("b", [0, 0, 50, 300])
    assert segment_markdown(grid, {"a": [a], "b": [b]}, segments, HISTORY_SEGMENTS) == ""


def test_exposure_columns_need_every_seed(tmp_path: Path) -> None:
    grid = _grid(tmp_path)
    ranks = _result("a", [0, 0, 0, 0]).ranks
    a = [
        RunResult("a", s, {"hr@10": 0.0, "tail_share@10": v}, list(USERS), ranks)
        for s, v in ((0, 0.25), (1, 0.75))
    ]
    b = [
        RunResult("b", 0, {"hr@10": 0.0, "tail_share@10": 0.5}, list(USERS), ranks),
        RunResult("b", 1, {"hr@10": 0.0}, list(USERS), ranks),
    ]  # evaluated before they existed
    table = results_markdown(grid, a + b).split("\n## ")[0]  # the main table, not the others
    header = next(line for line in table.splitlines() if line.startswith("| run"))
    assert "tail_share@10" in header and "coverage@10" not in header  # no run has coverage
    column = header.split(" | ").index("tail_share@10")
    cells = {
        line.split(" | ")[0]: line.split(" | ")[column]
        for line in table.splitlines()
        if line.startswith(("| a ", "| b "))
    }
    assert cells == {"| a": "0.500 ± 0.354", "| b": "–"}  # b: one seed of two has it
    plain = results_markdown(grid, [_result("a", [0, 0, 0, 0]), _result("b", [0, 0, 0, 0])])
    assert "tail_share" not in next(x for x in plain.splitlines() if x.startswith("| run"))


def test_seed_table_by_hand(tmp_path: Path) -> None:
    grid = _grid(tmp_path)
    # HR@10 per user: a 1, 0, 1, 0 on seeds 0 and 1; b seed 0: 1, 1, 0, 0 (Δ 0), seed 1: 1, 1, 1, 1
    # (Δ +0.5, no user loses), seed 2: b alone. HR@200: a 1, 1, 1, 0 on both seeds; b seed 0:
    # 1, 1, 1, 0 (Δ 0), seed 1: all 1 (Δ +0.25).
    a_ranks = _result("a", [0, 20, 0, 300]).ranks
    a = [RunResult("a", seed, {"hr@10": 0.0}, list(USERS), a_ranks) for seed in (0, 1)]
    b = [
        RunResult("b", seed, {"hr@10": 0.0}, list(USERS), _result("b", greater).ranks)
        for seed, greater in ((0, [0, 0, 50, 300]), (1, [0, 0, 0, 0]), (2, [0, 0, 0, 0]))
    ]
    lines = seed_markdown(grid, {"a": a, "b": b}).strip().splitlines()
    assert lines[0] == "## By seed: does the difference replicate?"
    assert lines[-3] == (
        "| run | baseline | seed 0 Δhr@10 [95% CI] | seed 0 Δhr@200 [95% CI] "
        "| seed 1 Δhr@10 [95% CI] | seed 1 Δhr@200 [95% CI] |"
    )  # seed 2 is b's alone: no column
    cells = [c.strip() for c in lines[-1].strip("|").split("|")]
    assert cells[:2] == ["b", "a"]
    assert cells[2].startswith("+0.0000 [") and not cells[2].endswith("*")
    assert cells[3] == "+0.0000 [+0.0000, +0.0000]"
    assert cells[4].startswith("+0.5000 [+")  # no user loses: the CI's low end is >= 0
    assert cells[5].startswith("+0.2500 [")
    assert not any(line.startswith("| a |") for line in lines)  # not vs itself
    assert seed_markdown(grid, {"a": a[:1], "b": b[:1]}) == ""  # one shared seed: nothing new
    assert "## By seed" in results_markdown(grid, a + b)
