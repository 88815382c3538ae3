"""Cold-target / warm-target segments of `evaluate` on a retriever with known scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from karma.baselines.popularity import PopularityRetriever
from karma.data.dataset import Examples, PreparedDataset
from karma.eval.cold import flat_cold_metrics
from karma.eval.evaluate import evaluate
from karma.testing.datasets import write_leave_one_out

# Every user gets the same scores: items 0..5 score 5, 4, 3, 2, 1.5, 1.8; items 4 and 5 are cold.
SCORES = np.array([5.0, 4.0, 3.0, 2.0, 1.5, 1.8], dtype=np.float32)
# (train | valid | test): u0 0 | 1 | 4, u1 2 | 3 | 5, u2 3 | 0 | 1.
SEQUENCES = [[0, 1, 4], [2, 3, 5], [3, 0, 1]]


class FixedScores:
    name = "fixed"

    def item_vectors(self) -> np.ndarray:
        return SCORES[:, None]  # (N, 1)

    def user_vectors(self, examples: Examples) -> np.ndarray:
        return np.ones((len(examples), 1), dtype=np.float32)


@pytest.fixture
def cold_dataset(tmp_path: Path) -> PreparedDataset:
    return PreparedDataset(write_leave_one_out(tmp_path / "ds", SEQUENCES, 6, cold_items=[4, 5]))


def test_segments_by_hand(cold_dataset: PreparedDataset) -> None:
    result = evaluate(FixedScores(), cold_dataset, "test", ks=(1, 3), bootstrap=50)
    # Test histories (history masked): u0 {0, 1}, u1 {2, 3}, u2 {3, 0}.
    # Full catalog: u0's target 4 (1.5) is below 2, 3 and 5 -> rank 3; u1's 5 (1.8) below 0, 1
    # -> rank 2; u2's 1 (4.0) is first. Cold only ({4, 5}): u0 rank 1, u1 rank 0.
    cold = result.cold_items["cold_target/full_catalog"]
    warm = result.cold_items["warm_target/full_catalog"]
    only = result.cold_items["cold_target/cold_only"]
    assert (cold["users"], cold["candidates"]) == (2, 6)
    assert (warm["users"], warm["candidates"]) == (1, 6)
    assert (only["users"], only["candidates"]) == (2, 2)
    assert cold["metrics"]["hr@1"] == 0.0
    assert cold["metrics"]["hr@3"] == pytest.approx(0.5)
    assert cold["metrics"]["mrr"] == pytest.approx((1 / 4 + 1 / 3) / 2)
    assert warm["metrics"]["hr@1"] == 1.0
    assert only["metrics"]["hr@1"] == pytest.approx(0.5)
    assert only["metrics"]["hr@3"] == 1.0
    assert only["metrics"]["mrr"] == pytest.approx((1 / 2 + 1) / 2)
    low, high = only["ci95"]["hr@1"]
    assert 0.0 <= low <= 0.5 <= high <= 1.0
    data = json.loads(result.to_json())
    assert data["cold_items"]["cold_target/cold_only"]["metrics"]["hr@1"] == pytest.approx(0.5)
    assert "| cold_target/cold_only | 2 | 2 |" in result.to_markdown()
    per_user = result.to_dict(with_ranks=True)["cold_only_per_user"]
    assert per_user == {"user_id": ["u000000", "u000001"], "greater": [1, 0], "ties": [0, 0]}


def test_popularity_ties_the_cold_items(cold_dataset: PreparedDataset) -> None:
    # Cold items have no training click: popularity scores them all 0, so among the 2 cold items
    # HR@1 is 1/2 for every cold-target user (random tie-breaking).
    popularity = PopularityRetriever.from_dataset(cold_dataset)
    assert popularity.train_counts[[4, 5]].tolist() == [0, 0]
    result = evaluate(popularity, cold_dataset, "test", ks=(1,), bootstrap=0)
    assert result.cold_items["cold_target/cold_only"]["metrics"]["hr@1"] == pytest.approx(0.5)


def test_no_cold_items_no_segments(tmp_path: Path) -> None:
    ds = PreparedDataset(write_leave_one_out(tmp_path / "ds", SEQUENCES, 6))
    result = evaluate(FixedScores(), ds, "test", ks=(1,), bootstrap=0)
    assert result.cold_items == {}
    assert "cold_items" not in result.to_dict()


def test_flat_cold_metrics_for_grid_tables(cold_dataset: PreparedDataset) -> None:
    result = evaluate(FixedScores(), cold_dataset, "test", ks=(1, 10), bootstrap=0)
    flat = flat_cold_metrics(result.cold_items, ("hr@1",))
    assert flat == {
        "cold_target/full_catalog/hr@1": 0.0,
        "warm_target/full_catalog/hr@1": 1.0,
        "cold_target/cold_only/hr@1": 0.5,
    }
