"""Comparing runs honestly: one table over several run directories, paired bootstrap differences.

Two models evaluated on the same users are compared per user (paired): the CI of the mean
difference is far tighter than two overlapping marginal CIs suggest, and is the right test of
"does B beat A". `compare_runs` evaluates every run directory on the same split and reports each
one's metrics and its paired difference against the first (the baseline).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from karma.data.dataset import PreparedDataset, Split
from karma.eval.evaluate import EvalResult, bootstrap_ci, evaluate
from karma.eval.metrics import per_user_metrics


@dataclass(frozen=True)
class PairedDifference:
    """Mean of metric(B) - metric(A) over the users both were evaluated on, with a 95% CI."""

    metric: str
    difference: float
    ci: tuple[float, float]
    users: int


def paired_difference(
    baseline: EvalResult, candidate: EvalResult, metric: str, resamples: int = 1000, seed: int = 0
) -> PairedDifference:
    """Paired bootstrap of `candidate - baseline` on `metric` (users matched by id)."""
    if baseline.ranks is None or candidate.ranks is None:
        raise ValueError("both results need per-user ranks (EvalResult.ranks)")
    position = {user: i for i, user in enumerate(baseline.user_ids)}
    common = [(position[u], j) for j, u in enumerate(candidate.user_ids) if u in position]
    if not common:
        raise ValueError("the two results share no users")
    a_index = np.array([i for i, _ in common])
    b_index = np.array([j for _, j in common])
    ks = sorted({int(metric.split("@")[1])} if "@" in metric else {10})
    a_values = per_user_metrics(baseline.ranks.subset(a_index), ks)[metric]
    b_values = per_user_metrics(candidate.ranks.subset(b_index), ks)[metric]
    diff = b_values - a_values
    ci = bootstrap_ci({metric: diff}, resamples, seed)[metric]
    return PairedDifference(metric, float(diff.mean()), ci, len(diff))


def compare_runs(
    run_dirs: Sequence[str | Path],
    dataset: PreparedDataset,
    split: Split = "test",
    metrics: Sequence[str] = ("hr@10", "ndcg@10"),
    bootstrap: int = 1000,
    seed: int = 0,
) -> str:
    """A markdown table: each run's metrics and its paired difference against the first run."""
    from karma.eval.registry import load_retriever

    results = [
        evaluate(load_retriever(d, dataset.root), dataset, split, bootstrap=0, segments=False)
        for d in run_dirs
    ]
    header = ["run", *metrics, *(f"Δ{m} vs {Path(run_dirs[0]).name} [95% CI]" for m in metrics)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run_dir, result in zip(run_dirs, results):
        cells = [Path(run_dir).name, *(f"{result.metrics[m]:.4f}" for m in metrics)]
        for m in metrics:
            if result is results[0]:
                cells.append("")
                continue
            d = paired_difference(results[0], result, m, bootstrap, seed)
            cells.append(f"{d.difference:+.4f} [{d.ci[0]:+.4f}, {d.ci[1]:+.4f}]")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
