"""karma.eval: metrics, chunked full ranking, the evaluation harness, paired differences.

Names are imported lazily so `karma --help` does not pay for torch.
"""

from __future__ import annotations

from karma.lazy import lazy_exports

_EXPORTS = {
    "Retriever": "karma.eval.retriever",
    "TargetRanks": "karma.eval.metrics",
    "DEFAULT_KS": "karma.eval.metrics",
    "hit_rate": "karma.eval.metrics",
    "ndcg": "karma.eval.metrics",
    "reciprocal_rank": "karma.eval.metrics",
    "ranking_metrics": "karma.eval.metrics",
    "per_user_metrics": "karma.eval.metrics",
    "ranks_from_scores": "karma.eval.metrics",
    "rank_targets": "karma.eval.ranking",
    "top_k_items": "karma.eval.ranking",
    "EvalResult": "karma.eval.evaluate",
    "evaluate": "karma.eval.evaluate",
    "bootstrap_ci": "karma.eval.evaluate",
    "sampled_auc": "karma.eval.evaluate",
    "paired_difference": "karma.eval.experiment",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
