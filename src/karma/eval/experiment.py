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
from karma.eval.metrics import TargetRanks, is_ranking_metric, per_user_metrics


@dataclass(frozen=True)
class PairedDifference:
    """Mean of metric(B) - metric(A) over the users both were evaluated on, with a 95% CI."""

    metric: str
    difference: float
    ci: tuple[float, float]
    users: int


def matched_users(
    baseline_users: Sequence[str], candidate_users: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(baseline positions, candidate positions) of the users both name, in candidate order."""
    position = {user: i for i, user in enumerate(baseline_users)}
    common = [(position[u], j) for j, u in enumerate(candidate_users) if u in position]
    a_index = np.array([i for i, _ in common], dtype=np.int64)
    b_index = np.array([j for _, j in common], dtype=np.int64)
    return a_index, b_index


def per_user_differences(
    baseline_users: Sequence[str],
    baseline_ranks: TargetRanks,
    candidate_users: Sequence[str],
    candidate_ranks: TargetRanks,
    metric: str,
) -> np.ndarray:
    """metric(candidate) - metric(baseline) per user both were evaluated on (matched by id)."""
    a_index, b_index = matched_users(baseline_users, candidate_users)
    ks = sorted({int(metric.split("@")[1])} if "@" in metric else {10})
    a_values = per_user_metrics(baseline_ranks.subset(a_index), ks)[metric]
    b_values = per_user_metrics(candidate_ranks.subset(b_index), ks)[metric]
    return b_values - a_values


def can_pair(baseline: EvalResult, candidate: EvalResult, metric: str) -> bool:
    """Whether both results hold `metric` per user: a ranking metric (from their ranks) or one of
    their `per_user_values` (`tail_share@10`, `gauc`). Catalog-level figures (`coverage@10`,
    `auc`, `query_adherence@10`) have one value per run and no paired test."""
    if is_ranking_metric(metric):
        return baseline.ranks is not None and candidate.ranks is not None
    return metric in baseline.per_user_values and metric in candidate.per_user_values


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
    """Paired bootstrap of `candidate - baseline` on `metric` (users matched by id): a ranking
    metric from the per-user ranks, or one the results hold per user (`can_pair`)."""
    if is_ranking_metric(metric):
        if baseline.ranks is None or candidate.ranks is None:
            raise ValueError("both results need per-user ranks (EvalResult.ranks)")
        diff = per_user_differences(
            baseline.user_ids, baseline.ranks, candidate.user_ids, candidate.ranks, metric
        )
    elif can_pair(baseline, candidate, metric):
        a_index, b_index = matched_users(baseline.user_ids, candidate.user_ids)
        diff = (
            candidate.per_user_values[metric][b_index] - baseline.per_user_values[metric][a_index]
        )
    else:
        raise ValueError(f"{metric}: not held per user by both results, so it cannot be paired")
    if len(diff) == 0:
        raise ValueError("the two results share no users")
    return paired_bootstrap(diff, metric, resamples, seed)
