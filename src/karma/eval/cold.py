"""Cold-target and warm-target segments of a new-item (cold start) split.

On a dataset prepared with `karma data prepare --cold-items` (`PreparedDataset.cold_items`) the
evaluation reports three segments, each with the usual metrics and bootstrap CIs:

- `cold_target/full_catalog`: users whose target is a cold item, ranked over the whole catalog;
- `warm_target/full_catalog`: the other users, ranked over the whole catalog;
- `cold_target/cold_only`: the cold-target users again, ranked among the cold items alone (how
  well a model tells new items apart, whatever it thinks of them against the warm ones). A model
  that scores all cold items alike gets HR@K = K / num_cold here.

Ranks come from the same `rank_targets` as the headline metrics (ties: expected value under
random tie-breaking; history items masked when asked).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from karma.data.dataset import Examples
from karma.eval.bootstrap import bootstrap_ci
from karma.eval.metrics import TargetRanks, per_user_metrics
from karma.eval.ranking import rank_targets

SEGMENT_METRICS = ("hr@10", "hr@50", "hr@200", "ndcg@10", "mrr")
"""Metrics (when their K was evaluated) shown in the markdown table; the JSON has every metric."""


def _summary(
    per_user: dict[str, np.ndarray],
    candidates: int,
    bootstrap: int,
    seed: int,
) -> dict[str, Any]:
    names = list(per_user)
    users = len(next(iter(per_user.values()))) if per_user else 0
    metrics = {m: float(per_user[m].mean()) if users else float("nan") for m in names}
    ci = bootstrap_ci({m: per_user[m] for m in names}, bootstrap, seed) if users else {}
    return {
        "users": users,
        "candidates": candidates,
        "metrics": metrics,
        "ci95": {m: list(v) for m, v in ci.items()},
    }


def cold_only_ranks(
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    examples: Examples,
    cold_items: np.ndarray,
    mask_history: bool,
) -> TargetRanks:
    """Ranks of `examples`' targets (all cold) among `cold_items` only."""
    cold_items = np.asarray(cold_items, dtype=np.int64)
    position = np.full(len(item_vectors), -1, dtype=np.int64)
    position[cold_items] = np.arange(len(cold_items))
    targets = position[examples.targets]
    if (targets < 0).any():
        raise ValueError("cold_only_ranks: every target must be a cold item")
    exclude = None
    if mask_history:  # histories hold no cold item after stripping; kept general
        exclude = [position[h][position[h] >= 0] for h in examples.histories]
    return rank_targets(user_vectors, item_vectors[cold_items], targets, exclude)


@dataclass
class ColdSegments:
    """The segments (JSON-able summaries) and the cold-only per-user ranks (for paired tests)."""

    segments: dict[str, dict[str, Any]]
    cold_only_user_ids: list[str]
    cold_only_ranks: TargetRanks


def cold_item_segments(
    per_user_full: dict[str, np.ndarray],
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    examples: Examples,
    cold_items: np.ndarray,
    ks: Sequence[int],
    mask_history: bool = True,
    bootstrap: int = 1000,
    seed: int = 0,
) -> ColdSegments:
    """The three segments above; `per_user_full` are the full-catalog per-user metrics."""
    num_items = len(item_vectors)
    is_cold = np.zeros(num_items, dtype=bool)
    is_cold[np.asarray(cold_items, dtype=np.int64)] = True
    cold_target = is_cold[examples.targets]
    out: dict[str, dict[str, Any]] = {}
    for name, mask in (("cold_target", cold_target), ("warm_target", ~cold_target)):
        out[f"{name}/full_catalog"] = _summary(
            {m: v[mask] for m, v in per_user_full.items()}, num_items, bootstrap, seed
        )
    chosen = np.flatnonzero(cold_target)
    cold_examples = examples.subset(chosen)
    ranks = cold_only_ranks(
        user_vectors[chosen], item_vectors, cold_examples, cold_items, mask_history
    )
    out["cold_target/cold_only"] = _summary(
        per_user_metrics(ranks, ks), int(is_cold.sum()), bootstrap, seed
    )
    return ColdSegments(out, list(cold_examples.user_ids), ranks)


def cold_segments_markdown(segments: dict[str, dict[str, Any]]) -> str:
    """A table: one row per segment, each metric with its CI where one was computed."""
    names = [m for m in SEGMENT_METRICS if any(m in s["metrics"] for s in segments.values())]
    lines = [
        "| new-item segment | candidates | users | " + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for seg, values in segments.items():
        cells = []
        for m in names:
            value = values["metrics"].get(m, float("nan"))
            lo_hi = values["ci95"].get(m)
            cells.append(
                f"{value:.4f} [{lo_hi[0]:.4f}, {lo_hi[1]:.4f}]" if lo_hi else f"{value:.4f}"
            )
        lines.append(
            f"| {seg} | {values['candidates']} | {values['users']} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def flat_cold_metrics(
    segments: dict[str, dict[str, Any]], names: Sequence[str] = ("hr@10", "hr@200", "ndcg@10")
) -> dict[str, float]:
    """`{"cold_target/cold_only/hr@10": value, ...}`: the segments as flat columns (grid CSVs)."""
    return {
        f"{segment}/{name}": float(values["metrics"][name])
        for segment, values in segments.items()
        for name in names
        if name in values["metrics"]
    }
