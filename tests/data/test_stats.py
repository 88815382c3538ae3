"""`karma data stats`: counts, sparsity, the history-length table and the PNG."""

from __future__ import annotations

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

    plot = tmp_path / "plots" / "h.png"
    assert main(["data", "stats", str(tmp_path / "out"), "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "users" in out and "p50" in out and "sparsity" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["data", "stats", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "history_lengths.png").is_file()


def test_stats_on_a_non_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "stats", str(tmp_path)]) == 2
    assert "is not a prepared dataset" in capsys.readouterr().err
