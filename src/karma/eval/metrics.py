"""Ranking metrics from target ranks, with ties that never favour the target.

A target's position among the candidates is summarised by two counts (`TargetRanks`):
`greater` = candidates scored strictly above the target, `ties` = other candidates scored exactly
the same. We report the *expected* metric under uniformly random tie-breaking: the target's
0-based rank r is uniform on {greater, ..., greater + ties}, so

    E[HR@K]   = P(r < K)                         = clip(K - greater, 0, ties + 1) / (ties + 1)
    E[NDCG@K] = mean_{r} [r < K] / log2(r + 2)   (one relevant item, so IDCG = 1)
    E[RR@K]   = mean_{r} [r < K] / (r + 1)

A model that scores every item the same therefore gets HR@10 = 10/N, not 1 (optimistic ties) and
not 0 (pessimistic ties). Without ties the three formulas are the usual ones.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_KS: tuple[int, ...] = (1, 5, 10, 20, 50, 200)


@dataclass(frozen=True)
class TargetRanks:
    """Where each user's target landed among its candidates (all arrays (U,) int64)."""

    greater: np.ndarray
    """Candidates scored strictly above the target."""
    ties: np.ndarray
    """Other candidates scored exactly like the target."""

    def __post_init__(self) -> None:
        if self.greater.shape != self.ties.shape:
            raise ValueError("greater and ties must have the same shape")

    def __len__(self) -> int:
        return len(self.greater)

    @property
    def expected_rank(self) -> np.ndarray:
        """(U,) float64 expected 1-based rank under random tie-breaking."""
        return self.greater + self.ties / 2.0 + 1.0

    def subset(self, index: np.ndarray) -> TargetRanks:
        return TargetRanks(self.greater[index], self.ties[index])

    @staticmethod
    def concat(parts: Sequence[TargetRanks]) -> TargetRanks:
        if not parts:
            empty = np.zeros(0, dtype=np.int64)
            return TargetRanks(empty, empty.copy())
        return TargetRanks(
            np.concatenate([p.greater for p in parts]), np.concatenate([p.ties for p in parts])
        )


def ranks_from_scores(scores: np.ndarray, targets: np.ndarray) -> TargetRanks:
    """Target ranks from a dense (U, N) score matrix (small inputs and reference tests)."""
    scores = np.asarray(scores)
    target_scores = scores[np.arange(len(targets)), targets][:, None]
    greater = (scores > target_scores).sum(axis=1)
    ties = (scores == target_scores).sum(axis=1) - 1
    return TargetRanks(greater.astype(np.int64), ties.astype(np.int64))


def _mean_over_tie_window(ranks: TargetRanks, k: int | None, gain: np.ndarray) -> np.ndarray:
    """Mean of `gain[r]` over r in {greater, ..., greater + ties}, with gain 0 for r >= k.

    `gain` is indexed by 0-based rank; the sum over the window uses a cumulative sum so the cost
    is O(U) whatever the number of ties.
    """
    lo = ranks.greater
    hi = ranks.greater + ranks.ties + 1  # exclusive
    if k is not None:
        lo = np.minimum(lo, k)
        hi = np.minimum(hi, k)
    cumulative = np.concatenate([[0.0], np.cumsum(gain)])
    total = cumulative[hi] - cumulative[lo]
    return total / (ranks.ties + 1)


def _gain_table(ranks: TargetRanks, k: int | None, kind: str) -> np.ndarray:
    """gain[r] for r = 0 .. max rank needed (capped at k)."""
    if len(ranks) == 0:
        return np.zeros(1)
    size = int((ranks.greater + ranks.ties).max()) + 1
    if k is not None:
        size = min(size, k)
    r = np.arange(max(size, 1), dtype=np.float64)
    if kind == "ndcg":
        return 1.0 / np.log2(r + 2.0)
    return 1.0 / (r + 1.0)


def hit_rate(ranks: TargetRanks, k: int) -> np.ndarray:
    """(U,) expected HR@k = P(rank < k) per user."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    inside = np.clip(k - ranks.greater, 0, ranks.ties + 1)
    return inside / (ranks.ties + 1.0)


def ndcg(ranks: TargetRanks, k: int) -> np.ndarray:
    """(U,) expected NDCG@k per user (one relevant item: 1 / log2(rank + 2) inside the top k)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return _mean_over_tie_window(ranks, k, _gain_table(ranks, k, "ndcg"))


def reciprocal_rank(ranks: TargetRanks, k: int | None = None) -> np.ndarray:
    """(U,) expected reciprocal rank per user; with `k`, 0 outside the top k (MRR@k)."""
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return _mean_over_tie_window(ranks, k, _gain_table(ranks, k, "rr"))


def per_user_metrics(ranks: TargetRanks, ks: Sequence[int] = DEFAULT_KS) -> dict[str, np.ndarray]:
    """Every metric per user: `hr@k`, `ndcg@k`, `mrr@k` for each k, and full `mrr`."""
    out: dict[str, np.ndarray] = {}
    for k in ks:
        out[f"hr@{k}"] = hit_rate(ranks, k)
        out[f"ndcg@{k}"] = ndcg(ranks, k)
    for k in ks:
        out[f"mrr@{k}"] = reciprocal_rank(ranks, k)
    out["mrr"] = reciprocal_rank(ranks)
    return out


def is_ranking_metric(name: str) -> bool:
    """Whether `name` is one of `per_user_metrics`' (computed from ranks alone)."""
    return re.fullmatch(r"(hr|ndcg|mrr)@[1-9][0-9]*|mrr", name) is not None


def ranking_metrics(ranks: TargetRanks, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Mean over users of every metric in `per_user_metrics` (NaN when there are no users)."""
    per_user = per_user_metrics(ranks, ks)
    return {
        name: float(values.mean()) if len(values) else float("nan")
        for name, values in per_user.items()
    }
