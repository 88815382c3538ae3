"""karma: knowledge-action regularized LLM retrieval for personalized search and recommendation.

The public API, imported lazily (so `karma --help` does not pay for torch):

    from karma import PreparedDataset, RunConfig, build_task, Trainer, evaluate
"""

from __future__ import annotations

__version__ = "0.1.0"

from karma.errors import ConfigError, DataError, KarmaError
from karma.lazy import lazy_exports

_EXPORTS = {
    "load_config": "karma.config",
    "PreparedDataset": "karma.data.dataset",
    "Examples": "karma.data.dataset",
    "prepare_dataset": "karma.data.prepare",
    "add_features": "karma.data.features",
    "load_backbone": "karma.model.backbone",
    "KarmaEncoder": "karma.model.encoder",
    "ActionLoss": "karma.objectives.action",
    "KnowledgeConfig": "karma.objectives.knowledge",
    "RunConfig": "karma.train.run_config",
    "build_task": "karma.train.run_config",
    "TrainConfig": "karma.train.config",
    "Trainer": "karma.train.trainer",
    "train_run": "karma.runs",
    "load_encoder": "karma.runs",
    "open_run": "karma.runs",
    "evaluate": "karma.eval.evaluate",
    "load_retriever": "karma.runs",
    "GridConfig": "karma.experiments.grid",
    "run_grid": "karma.experiments.runner",
    "load_artifact": "karma.serve.artifact",
}

__all__ = ["ConfigError", "DataError", "KarmaError", "__version__", *sorted(_EXPORTS)]
__getattr__ = lazy_exports(__name__, _EXPORTS)
