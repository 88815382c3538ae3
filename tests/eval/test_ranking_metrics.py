"""Metric maths: hand-worked values, ties, and a naive random-tie-breaking reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from karma.eval.metrics import (
    TargetRanks,
    hit_rate,
    ndcg,
    ranking_metrics,
    ranks_from_scores,
    reciprocal_rank,
)


def ranks(greater: list[int], ties: list[int]) -> TargetRanks:
    return TargetRanks(np.array(greater, dtype=np.int64), np.array(ties, dtype=np.int64))


def test_no_ties_hand_values() -> None:
    r = ranks([0, 2, 10], [0, 0, 0])  # 1-based ranks 1, 3, 11
    assert hit_rate(r, 1).tolist() == [1.0, 0.0, 0.0]
    assert hit_rate(r, 10).tolist() == [1.0, 1.0, 0.0]
    np.testing.assert_allclose(ndcg(r, 10), [1.0, 1.0 / math.log2(4), 0.0])
    np.testing.assert_allclose(reciprocal_rank(r), [1.0, 1.0 / 3, 1.0 / 11])
    np.testing.assert_allclose(reciprocal_rank(r, 5), [1.0, 1.0 / 3, 0.0])


def test_ties_are_expected_values() -> None:
    # Target tied with 3 others, 1 item above: rank uniform on {2, 3, 4, 5} (1-based).
    r = ranks([1], [3])
    assert hit_rate(r, 1)[0] == 0.0
    assert hit_rate(r, 3)[0] == pytest.approx(2 / 4)
    assert hit_rate(r, 10)[0] == 1.0
    expected_ndcg3 = (1 / math.log2(3) + 1 / math.log2(4)) / 4
    assert ndcg(r, 3)[0] == pytest.approx(expected_ndcg3)
    assert reciprocal_rank(r)[0] == pytest.approx((1 / 2 + 1 / 3 + 1 / 4 + 1 / 5) / 4)


def test_constant_scores_give_chance_level() -> None:
    num_items = 1000
    scores = np.zeros((7, num_items), dtype=np.float32)
    r = ranks_from_scores(scores, np.arange(7))
    assert hit_rate(r, 10) == pytest.approx(np.full(7, 10 / num_items))
    assert reciprocal_rank(r).mean() == pytest.approx(np.mean(1 / np.arange(1, num_items + 1)))


def test_k_larger_than_catalog_is_a_hit() -> None:
    scores = np.array([[0.3, 0.2, 0.1]])
    r = ranks_from_scores(scores, np.array([2]))
    assert hit_rate(r, 200)[0] == 1.0
    assert ndcg(r, 200)[0] == pytest.approx(0.5)  # rank 3: 1 / log2(4)


def test_bad_k_rejected() -> None:
    with pytest.raises(ValueError, match="k must be"):
        hit_rate(ranks([0], [0]), 0)


def naive_expected(scores: np.ndarray, target: int, k: int) -> tuple[float, float, float]:
    """Average HR@k, NDCG@k, RR over every tie order of the target (slow reference)."""
    t = scores[target]
    above = sum(1 for j, s in enumerate(scores) if j != target and s > t)
    tied = sum(1 for j, s in enumerate(scores) if j != target and s == t)
    hr = nd = rr = 0.0
    for rank0 in range(above, above + tied + 1):
        hr += 1.0 if rank0 < k else 0.0
        nd += 1.0 / math.log2(rank0 + 2) if rank0 < k else 0.0
        rr += 1.0 / (rank0 + 1)
    n = tied + 1
    return hr / n, nd / n, rr / n


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(1, 30),
    st.integers(1, 12),
    st.integers(0, 2**31 - 1),
)
def test_matches_naive_reference(users: int, items: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, size=(users, items)).astype(np.float32)  # many ties
    targets = rng.integers(0, items, size=users)
    r = ranks_from_scores(scores, targets)
    metrics = ranking_metrics(r, ks=(k,))
    naive = np.array([naive_expected(scores[u], targets[u], k) for u in range(users)])
    assert metrics[f"hr@{k}"] == pytest.approx(naive[:, 0].mean())
    assert metrics[f"ndcg@{k}"] == pytest.approx(naive[:, 1].mean())
    assert metrics["mrr"] == pytest.approx(naive[:, 2].mean())
