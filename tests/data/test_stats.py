"""`karma data stats`: counts, sparsity, the history-length table and the PNG."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from karma.cli import main
from karma.data.dataset import PreparedDataset
from karma.data.prepare import prepare_dataset
from karma.data.stats import dataset_stats


def test_stats_by_hand(
    atomic_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prepare_dataset(atomic_dir, tmp_path / "out")
    stats = dataset_stats(PreparedDataset(tmp_path / "out"))
    # u1: 4 clicks (i1 twice), u2: 3 clicks; 6 distinct pairs fill all 2 x 3 cells.
    assert (stats.users, stats.items, stats.clicks, stats.pairs) == (2, 3, 7, 6)
    assert sorted(stats.history_lengths.tolist()) == [3, 4]
    assert stats.sparsity == pytest.approx(0.0)
    assert stats.split_clicks == {"train": 3, "valid": 2, "test": 2}
    # u1 clicked i3 and i2 both at t=20: its valid click (i2, file order) ties with the one before.
    assert stats.tied_held_out == {"valid": 1, "test": 0}

    plot = tmp_path / "plots" / "h.png"
    assert main(["data", "stats", str(tmp_path / "out"), "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "users" in out and "p50" in out and "sparsity" in out
    assert "valid tied" in out and "1 (50%)" in out and "row order in the input file" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["data", "stats", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "history_lengths.png").is_file()


def test_stats_on_a_non_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "stats", str(tmp_path)]) == 2
    assert "is not a prepared dataset" in capsys.readouterr().err


def test_a_closed_pipe_stops_quietly(
    atomic_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """`karma data stats DIR | head -1`: the reader went away; exit 141, no traceback."""
    prepare_dataset(atomic_dir, tmp_path / "out")

    def closed_pipe(*_: object) -> str:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("karma.data.stats.format_stats", closed_pipe)
    stdout = sys.stdout.fileno()
    saved = os.dup(stdout)
    try:
        assert main(["data", "stats", str(tmp_path / "out")]) == 141
    finally:
        os.dup2(saved, stdout)  # the handler pointed stdout at /dev/null
        os.close(saved)
    assert "Traceback" not in capfd.readouterr().err
