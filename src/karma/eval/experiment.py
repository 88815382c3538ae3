"""Comparing two models honestly: paired per-user differences with a bootstrap CI.

Two models evaluated on the same users are compared per user (paired): the CI of the mean
difference is far tighter than two overlapping marginal CIs suggest, and is the right test of
"does B beat A". `karma.experiments.compare.compare_runs` (run directories) and the grid report
(`karma.experiments.report`) both use `per_user_differences` + `paired_bootstrap`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from karma.eval.bootstrap import bootstrap_ci
from karma.eval.evaluate import EvalResult
from karma.eval.metrics import TargetRanks, per_user_metrics


@dataclass(frozen=True)
class PairedDifference:
    """Mean of metric(B) - metric(A) over the users both were evaluated on, with a 95% CI."""

    metric: str
    difference: float
    ci: tuple[float, float]
    users: int


def per_user_differences(
    baseline_users: Sequence[str],
    baseline_ranks: TargetRanks,
    candidate_users: Sequence[str],
    candidate_ranks: TargetRanks,
    metric: str,
) -> np.ndarray:
    """metric(candidate) - metric(baseline) per user both were evaluated on (matched by id)."""
    position = {user: i for i, user in enumerate(baseline_users)}
    common = [(position[u], j) for j, u in enumerate(candidate_users) if u in position]
    a_index = np.array([i for i, _ in common], dtype=np.int64)
    b_index = np.array([j for _, j in common], dtype=np.int64)
    ks = sorted({int(metric.split("@")[1])} if "@" in metric else {10})
    a_values = per_user_metrics(baseline_ranks.subset(a_index), ks)[metric]
    b_values = per_user_metrics(candidate_ranks.subset(b_index), ks)[metric]
    return b_values - a_values


def paired_bootstrap(
    differences: np.ndarray, metric: str, resamples: int = 1000, seed: int = 0
) -> PairedDifference:
    """Mean of per-user `differences` with its bootstrap 95% CI (the one paired test in karma)."""
    if len(differences) == 0:
        raise ValueError("no paired users to compare")
    ci = bootstrap_ci({metric: differences}, resamples, seed)[metric]
    return PairedDifference(metric, float(differences.mean()), ci, len(differences))


def paired_difference(
    baseline: EvalResult, candidate: EvalResult, metric: str, resamples: int = 1000, seed: int = 0
) -> PairedDifference:
    """Paired bootstrap of `candidate - baseline` on `metric` (users matched by id)."""
    if baseline.ranks is None or candidate.ranks is None:
        raise ValueError("both results need per-user ranks (EvalResult.ranks)")
    diff = per_user_differences(
        baseline.user_ids, baseline.ranks, candidate.user_ids, candidate.ranks, metric
    )
    if len(diff) == 0:
        raise ValueError("the two results share no users")
    return paired_bootstrap(diff, metric, resamples, seed)
