"""The evaluation harness: any `Retriever` on a prepared dataset's valid or test split.

What is reported (`EvalResult`):

- full-ranking HR/NDCG/MRR@K over the whole catalog (ties: expected value under random
  tie-breaking, see `karma.eval.metrics`), history items masked unless `mask_history=False`;
- 95% bootstrap confidence intervals over users (percentile method, `bootstrap` resamples);
- segments: `cold` targets (no training click), `long_tail` targets (outside the most popular
  `1 - long_tail_fraction` of items by training clicks, i.e. the bottom 80% of items by default;
  ties in popularity are broken by item index so the head has exactly that many items), and
  `short_history` users (at most `short_history` history items);
- ranking-stage `auc` (pooled over all users' positive/negative pairs) and `gauc` (mean of each
  user's AUC) of the target against `num_negatives` uniformly sampled non-history items per user.
- `tail_share@10` (with a CI) and `coverage@10` (`karma.eval.exposure`): how much of each top 10
  is long-tail, and how much of the catalog any top 10 shows;
- where the examples have queries, `query_adherence@10` (`karma.eval.adherence`): the share of
  each user's top 10 whose categories contain a query word, for any retriever, so a model that
  reads the query and a query-blind one are measured alike.
- on a new-item split (`dataset.cold_items` not empty): cold-target and warm-target segments over
  the full catalog, and cold-target users ranked among the cold items alone, with CIs
  (`karma.eval.cold`).

Recommendation and personalised search differ only in whether `Examples.queries` are set; the
retriever decides what to do with a query.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from karma.data.dataset import Examples, PreparedDataset, Split
from karma.eval.adherence import ADHERENCE_K, query_adherence
from karma.eval.bootstrap import bootstrap_ci
from karma.eval.cold import cold_item_segments, cold_segments_markdown
from karma.eval.exposure import EXPOSURE_K, coverage, tail_share_per_user
from karma.eval.metrics import DEFAULT_KS, TargetRanks, per_user_metrics
from karma.eval.ranking import rank_targets, top_k_items
from karma.eval.retriever import Retriever

HEADLINE_METRICS = ("hr@10", "ndcg@10", "hr@50", "mrr")
LONG_TAIL_FRACTION = 0.8
"""Default share of items (the least clicked in training) that make the long tail."""
SHORT_HISTORY = 5
"""A `short_history` user has at most this many history items."""


@dataclass
class EvalResult:
    """Metrics of one retriever on one split, with per-user ranks for later analysis."""

    retriever: str
    split: str
    num_users: int
    num_items: int
    metrics: dict[str, float]
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    segments: dict[str, dict[str, float]] = field(default_factory=dict)
    user_ids: list[str] = field(default_factory=list)
    ranks: TargetRanks | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    cold_items: dict[str, dict[str, Any]] = field(default_factory=dict)
    """New-item segments (`karma.eval.cold`), empty when the dataset has no cold items."""
    cold_only_user_ids: list[str] = field(default_factory=list)
    cold_only_ranks: TargetRanks | None = None
    """Ranks of the cold-target users among the cold items alone (None without cold items)."""
    per_user_values: dict[str, np.ndarray] = field(default_factory=dict)
    """Per-user values, in `user_ids` order, of the metrics not computed from ranks
    (`tail_share@10`, `gauc` when every user has one): what pairs them between two results."""

    def to_dict(self, with_ranks: bool = False) -> dict[str, Any]:
        """Plain JSON-able data; per-user ranks only when asked (they are large)."""
        out: dict[str, Any] = {
            "retriever": self.retriever,
            "split": self.split,
            "num_users": self.num_users,
            "num_items": self.num_items,
            "metrics": self.metrics,
            "ci95": {k: list(v) for k, v in self.ci.items()},
            "segments": self.segments,
            "settings": self.settings,
        }
        if self.cold_items:
            out["cold_items"] = self.cold_items
        if with_ranks and self.ranks is not None:
            out["per_user"] = {
                "user_id": self.user_ids,
                "greater": self.ranks.greater.tolist(),
                "ties": self.ranks.ties.tolist(),
            }
        if with_ranks and self.cold_only_ranks is not None:
            out["cold_only_per_user"] = {
                "user_id": self.cold_only_user_ids,
                "greater": self.cold_only_ranks.greater.tolist(),
                "ties": self.cold_only_ranks.ties.tolist(),
            }
        return out

    def to_json(self, with_ranks: bool = False) -> str:
        """Strict JSON: NaN (an empty segment, no negatives) is written as null."""
        return json.dumps(_nan_to_none(self.to_dict(with_ranks)), indent=2, allow_nan=False)

    def to_markdown(self, metrics: Sequence[str] | None = None) -> str:
        """A table: one row per metric (value and CI), then one row per segment."""
        names = list(metrics) if metrics else [m for m in self.metrics if m in _table_metrics()]
        lines = [
            f"**{self.retriever}** on `{self.split}` ({self.num_users} users, "
            f"{self.num_items} items)",
            "",
            "| metric | value | 95% CI |",
            "|---|---|---|",
        ]
        for name in names:
            lo, hi = self.ci.get(name, (float("nan"), float("nan")))
            ci = f"[{lo:.4f}, {hi:.4f}]" if not np.isnan(lo) else ""
            lines.append(f"| {name} | {self.metrics[name]:.4f} | {ci} |")
        if self.segments:
            seg_names = [m for m in ("hr@10", "ndcg@10", "mrr") if m in names or not metrics]
            lines += ["", "| segment | users | " + " | ".join(seg_names) + " |"]
            lines.append("|---|---|" + "---|" * len(seg_names))
            for seg, values in self.segments.items():
                cells = " | ".join(  # an empty segment (no user in it) has no value: "–"
                    f"{values[m]:.4f}" if values["users"] and m in values else "–"
                    for m in seg_names
                )
                lines.append(f"| {seg} | {int(values['users'])} | {cells} |")
        if self.cold_items:
            lines += ["", cold_segments_markdown(self.cold_items).rstrip("\n")]
        return "\n".join(lines) + "\n"


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value


def _table_metrics() -> set[str]:
    names = {f"{m}@{k}" for m in ("hr", "ndcg") for k in DEFAULT_KS} | {"mrr", "auc", "gauc"}
    names |= {f"tail_share@{EXPOSURE_K}", f"coverage@{EXPOSURE_K}"}
    return names | {f"query_adherence@{ADHERENCE_K}"}  # present only where there are queries


def sample_negatives(
    examples: Examples, num_items: int, count: int, seed: int, mask_history: bool
) -> np.ndarray:
    """(U, count) uniform negatives per user: never the target, nor a history item if masked.

    Drawn with replacement; a user whose history covers the catalog gets -1 entries.
    """
    rng = np.random.default_rng(seed)
    num_users = len(examples)
    negatives = rng.integers(0, num_items, size=(num_users, count))
    # Forbidden (user, item) pairs as keys user * num_items + item, checked with one np.isin.
    forbidden_keys = [examples.targets.astype(np.int64) + np.arange(num_users) * num_items]
    if mask_history:
        forbidden_keys += [
            np.asarray(h, dtype=np.int64) + u * num_items for u, h in enumerate(examples.histories)
        ]
    forbidden = np.unique(np.concatenate(forbidden_keys))
    rows = np.arange(num_users)[:, None]
    for _ in range(100):
        bad = np.isin(negatives + rows * num_items, forbidden)
        if not bad.any():
            return negatives
        negatives[bad] = rng.integers(0, num_items, size=int(bad.sum()))
    negatives[np.isin(negatives + rows * num_items, forbidden)] = -1
    return negatives


def sampled_auc(
    user_vectors: np.ndarray, item_vectors: np.ndarray, targets: np.ndarray, negatives: np.ndarray
) -> tuple[float, np.ndarray]:
    """Pooled AUC and per-user AUC of the target's score against each user's negatives.

    AUC = P(score(pos) > score(neg)) + 0.5 P(equal). Pooled compares every positive with every
    negative of every user (how well one global threshold separates them, the ranking stage's
    view); per-user compares a user's target only with that user's negatives. -1 negatives are
    ignored. Returns (pooled auc, (U,) per-user auc, NaN for a user with no negatives).
    """
    users = np.asarray(user_vectors, dtype=np.float64)
    items = np.asarray(item_vectors, dtype=np.float64)
    pos = np.einsum("ue,ue->u", users, items[targets])  # (U,)
    valid = negatives >= 0
    neg = np.einsum("ue,une->un", users, items[np.where(valid, negatives, 0)])  # (U, n)
    wins = ((pos[:, None] > neg) + 0.5 * (pos[:, None] == neg)) * valid
    with np.errstate(invalid="ignore", divide="ignore"):
        per_user = wins.sum(axis=1) / valid.sum(axis=1)
    neg_flat = neg[valid]
    if len(pos) == 0 or len(neg_flat) == 0:
        return float("nan"), per_user
    # Mann-Whitney U from average ranks (ties count one half).
    ranks = average_ranks(np.concatenate([pos, neg_flat]))
    n_pos, n_neg = len(pos), len(neg_flat)
    u_stat = ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u_stat / (n_pos * n_neg)), per_user


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of a 1-D array, tied values sharing the mean of their ranks.

    Same semantics as `scipy.stats.rankdata(values)` (method 'average'): [10, 20, 20, 5] ->
    [2, 3.5, 3.5, 1]. A NaN anywhere makes every rank NaN (rankdata's default 'propagate').
    """
    values = np.asarray(values).ravel()
    n = len(values)
    if n and np.isnan(values).any():
        return np.full(n, np.nan)
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts_group = np.r_[True, ordered[1:] != ordered[:-1]] if n else np.zeros(0, dtype=bool)
    group = np.cumsum(starts_group) - 1  # tie group of each sorted position
    first = np.flatnonzero(starts_group)  # 0-based first sorted position of each group
    end = np.r_[first[1:], n]  # one past its last position
    # A group holds the 1-based ranks first+1 .. end, whose mean is (first + 1 + end) / 2.
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = ((first + 1 + end) / 2.0)[group]
    return ranks


def long_tail_items(train_counts: np.ndarray, fraction: float) -> np.ndarray:
    """(N,) bool: items outside the `1 - fraction` most clicked (ties broken by item index)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"long_tail_fraction must be in (0, 1], got {fraction}")
    num_items = len(train_counts)
    head_size = num_items - round(fraction * num_items)
    order = np.lexsort((np.arange(num_items), -train_counts))  # most clicked first
    tail = np.ones(num_items, dtype=bool)
    tail[order[:head_size]] = False
    return tail


def _segment_masks(
    examples: Examples, train_counts: np.ndarray, long_tail_fraction: float, short_history: int
) -> dict[str, np.ndarray]:
    tail = long_tail_items(train_counts, long_tail_fraction)
    lengths = np.array([len(h) for h in examples.histories])
    return {
        "cold": train_counts[examples.targets] == 0,
        "long_tail": tail[examples.targets],
        "short_history": lengths <= short_history,
    }


def evaluate(
    retriever: Retriever,
    dataset: PreparedDataset,
    split: Split = "test",
    ks: Sequence[int] = DEFAULT_KS,
    mask_history: bool = True,
    segments: bool = True,
    bootstrap: int = 1000,
    seed: int = 0,
    num_negatives: int = 100,
    long_tail_fraction: float = LONG_TAIL_FRACTION,
    short_history: int = SHORT_HISTORY,
    examples: Examples | None = None,
) -> EvalResult:
    """Full-ranking evaluation of `retriever` on `dataset.examples(split)` (or `examples`)."""
    if split not in ("valid", "test"):
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
    if examples is None:
        examples = dataset.examples(split)
    items = np.asarray(retriever.item_vectors(), dtype=np.float32)  # (N, e)
    if items.shape[0] != dataset.num_items:
        raise ValueError(
            f"{retriever.name} has {items.shape[0]} item vectors, dataset has {dataset.num_items}"
        )
    users = np.asarray(retriever.user_vectors(examples), dtype=np.float32)  # (U, e)
    ranks = rank_targets(
        users, items, examples.targets, examples.histories if mask_history else None
    )
    per_user = per_user_metrics(ranks, ks)
    metrics = {name: float(v.mean()) if len(v) else float("nan") for name, v in per_user.items()}
    negatives = sample_negatives(examples, dataset.num_items, num_negatives, seed, mask_history)
    auc, user_auc = sampled_auc(users, items, examples.targets, negatives)
    metrics["auc"] = auc
    metrics["gauc"] = float(np.nanmean(user_auc)) if len(user_auc) else float("nan")
    counts = dataset.train_item_counts()
    exclude = examples.histories if mask_history else None
    # One top-K pass serves the exposure metrics and query adherence.
    top_k = min(max(EXPOSURE_K, ADHERENCE_K), len(items))
    top, _ = top_k_items(users, items, k=top_k, exclude=exclude)  # (U, K) best first
    shown = top[:, :EXPOSURE_K]
    tail_share = tail_share_per_user(shown, long_tail_items(counts, long_tail_fraction))
    metrics[f"tail_share@{EXPOSURE_K}"] = (
        float(tail_share.mean()) if len(tail_share) else float("nan")
    )
    metrics[f"coverage@{EXPOSURE_K}"] = coverage(shown, len(items))
    if any(examples.queries):
        adherence = query_adherence(top[:, :ADHERENCE_K], examples.queries, dataset.categories)
        metrics[f"query_adherence@{ADHERENCE_K}"] = adherence
    ci_inputs = {n: per_user[n] for n in per_user if n in _table_metrics()}
    ci_inputs[f"tail_share@{EXPOSURE_K}"] = tail_share
    if len(user_auc) and not np.isnan(user_auc).any():
        ci_inputs["gauc"] = user_auc
    ci = bootstrap_ci(ci_inputs, bootstrap, seed)
    segment_metrics: dict[str, dict[str, float]] = {}
    if segments:
        masks = _segment_masks(examples, counts, long_tail_fraction, short_history)
        for seg, mask in masks.items():
            segment_metrics[seg] = {"users": float(mask.sum())}
            for name in ("hr@10", "ndcg@10", "mrr"):
                if name in per_user:
                    values = per_user[name][mask]
                    segment_metrics[seg][name] = (
                        float(values.mean()) if len(values) else float("nan")
                    )
    cold = None
    if segments and len(dataset.cold_items):
        cold = cold_item_segments(
            per_user, users, items, examples, dataset.cold_items, ks, mask_history, bootstrap, seed
        )
    return EvalResult(
        retriever=retriever.name,
        split=split,
        num_users=len(examples),
        num_items=dataset.num_items,
        metrics=metrics,
        ci=ci,
        segments=segment_metrics,
        user_ids=list(examples.user_ids),
        ranks=ranks,
        settings={
            "mask_history": mask_history,
            "ks": list(ks),
            "bootstrap": bootstrap,
            "seed": seed,
            "num_negatives": num_negatives,
            "long_tail_fraction": long_tail_fraction,
            "short_history": short_history,
            "ties": "expected value under uniformly random tie-breaking",
        },
        cold_items=cold.segments if cold else {},
        cold_only_user_ids=cold.cold_only_user_ids if cold else [],
        per_user_values={k: v for k, v in ci_inputs.items() if k not in per_user},
        cold_only_ranks=cold.cold_only_ranks if cold else None,
    )
