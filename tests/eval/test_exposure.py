"""Long-tail share and catalog coverage of the top K (`karma.eval.exposure`), by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from karma.baselines.popularity import PopularityRetriever
from karma.data.dataset import PreparedDataset
from karma.eval.evaluate import evaluate, long_tail_items
from karma.eval.exposure import coverage, tail_share_per_user
from karma.testing.datasets import write_leave_one_out

# 6 items, items 0, 3, 4 long-tail (item 0 too: a padding slot, -1, must not read as item 0).
TAIL = np.array([True, False, False, True, True, False])


def test_tail_share_by_hand() -> None:
    top = np.array([[0, 3, 4], [1, 2, 0], [5, -1, -1]])
    # user 0: all 3 listed; user 1: item 0 only; user 2: item 5 (head) and two padding slots.
    np.testing.assert_allclose(tail_share_per_user(top, TAIL), [1.0, 1 / 3, 0.0])


def test_tail_share_with_no_slot_is_zero_and_shape_is_checked() -> None:
    assert tail_share_per_user(np.zeros((2, 0), dtype=np.int64), TAIL).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="top must be"):
        tail_share_per_user(np.array([0, 1]), TAIL)


def test_coverage_by_hand() -> None:
    top = np.array([[0, 3, 4], [0, 3, -1]])
    assert coverage(top, 6) == pytest.approx(3 / 6)  # {0, 3, 4}; padding shows nothing
    assert coverage(np.full((2, 2), -1), 6) == 0.0
    with pytest.raises(ValueError, match="num_items"):
        coverage(top, 0)


@pytest.fixture
def dataset(tmp_path: Path) -> PreparedDataset:
    # 20 items. Training clicks: item 0: 5, 1: 4, 2: 3, 3: 2, 4 and 5: 1, the rest none.
    sequences = [[0, 1, 2, 3, 4, 9], [0, 1, 2, 3, 8, 10], [0, 1, 2, 5, 11], [0, 1, 12], [0, 13]]
    return PreparedDataset(write_leave_one_out(tmp_path / "ds", sequences, 20))


def test_evaluate_reports_them_for_a_popularity_list(dataset: PreparedDataset) -> None:
    result = evaluate(PopularityRetriever.from_dataset(dataset), dataset, bootstrap=50)
    tail = long_tail_items(dataset.train_item_counts(), 0.8)
    head = set(np.flatnonzero(~tail).tolist())
    assert head == {0, 1, 2, 3}  # the 20 % most-clicked of 20 items
    # A popularity list shows the head items outside the user's history first, then fills its
    # top 10 with long-tail items (ranked or tied, every one is long-tail).
    examples = dataset.examples("test")
    expected = [1 - len(head - set(h.tolist())) / 10 for h in examples.histories]
    assert result.metrics["tail_share@10"] == pytest.approx(np.mean(expected))
    lo, hi = result.ci["tail_share@10"]
    assert lo <= result.metrics["tail_share@10"] <= hi
    assert 10 / 20 <= result.metrics["coverage@10"] <= 1.0
    table = result.to_markdown()
    assert "| tail_share@10 |" in table and "| coverage@10 |" in table
