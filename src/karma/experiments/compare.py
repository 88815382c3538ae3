"""`compare_runs`: one table over several run directories, paired differences against the first."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from karma.data.dataset import PreparedDataset, Split
from karma.errors import ConfigError
from karma.eval.evaluate import EvalResult, evaluate
from karma.eval.experiment import can_pair, paired_difference
from karma.runs import load_retriever


def compare_runs(
    run_dirs: Sequence[str | Path],
    dataset: PreparedDataset,
    split: Split = "test",
    metrics: Sequence[str] = ("hr@10", "ndcg@10"),
    bootstrap: int = 1000,
    seed: int = 0,
) -> str:
    """A markdown table: each run's metrics and its paired difference against the first run.

    Every run is evaluated on the same split of `dataset` (history masked, no bootstrap of the
    marginal metrics); Δ is `paired_difference` of the run against the first one where both hold
    the metric per user (ranking metrics, `tail_share@10`, `gauc`), else the plain difference of
    two catalog-level figures (`coverage@10`, `auc`), marked as such.
    """

    def evaluated(run_dir: str | Path) -> EvalResult:
        retriever = load_retriever(run_dir, dataset.root)
        return evaluate(retriever, dataset, split, bootstrap=0, segments=False)

    results = [evaluated(run_dirs[0])]
    unknown = [m for m in metrics if m not in results[0].metrics]
    if unknown:  # said before the other runs are evaluated
        known = ", ".join(sorted(results[0].metrics))
        raise ConfigError(f"unknown metric {', '.join(unknown)}; the evaluation reports {known}")
    results += [evaluated(d) for d in run_dirs[1:]]
    labels = run_labels(run_dirs)
    header = ["run", *metrics, *(f"Δ{m} vs {labels[0]} [95% CI]" for m in metrics)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, result in zip(labels, results):
        cells = [label, *(f"{result.metrics[m]:.4f}" for m in metrics)]
        for m in metrics:
            if result is results[0]:
                cells.append("")
                continue
            if can_pair(results[0], result, m):
                d = paired_difference(results[0], result, m, bootstrap, seed)
                cells.append(f"{d.difference:+.4f} [{d.ci[0]:+.4f}, {d.ci[1]:+.4f}]")
            else:
                cells.append(f"{result.metrics[m] - results[0].metrics[m]:+.4f} (not per user)")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_labels(run_dirs: Sequence[str | Path]) -> list[str]:
    """The shortest path tails that tell the runs apart: `a`, `b` for runs/a and runs/b;
    `a/seed0`, `b/seed0` for a grid's cells runs/a/seed0 and runs/b/seed0."""
    parts = [Path(d).parts for d in run_dirs]
    for k in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-k:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [str(d) for d in run_dirs]  # the same directory named twice
