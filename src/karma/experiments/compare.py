"""`compare_runs`: one table over several run directories, paired differences against the first."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from karma.data.dataset import PreparedDataset, Split
from karma.eval.evaluate import evaluate
from karma.eval.experiment import paired_difference
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
    marginal metrics); Δ is `paired_difference` of the run against the first one.
    """
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
