"""The frozen-embedding recipe: no training; the run records which feature matrix it pools."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from karma.baselines.frozen_llm import FrozenConfig, FrozenEmbeddingRetriever
from karma.data.dataset import PreparedDataset
from karma.errors import ConfigError, KarmaError
from karma.runs.base import Task, TrainedEncoder, open_training_data
from karma.runs.layout import Run, finish_run, start_run
from karma.train.lock import RunDirLock

KIND = "frozen"


class FrozenRecipe:
    kind = KIND
    config_type = FrozenConfig

    def train(
        self,
        config: FrozenConfig,
        run_dir: Path | None = None,
        data: Path | None = None,
        resume: bool | None = None,
        progress: bool = True,
    ) -> dict[str, Any]:
        dataset = open_training_data(KIND, run_dir, data)
        try:
            retriever = FrozenEmbeddingRetriever.from_features(
                dataset, config.feature, decay=config.decay, max_history=config.max_history
            )
        except ValueError as exc:
            raise ConfigError(f"frozen baseline: {exc}") from None
        feature = retriever.name.removeprefix("frozen-")
        options = {"feature": feature, "decay": config.decay, "max_history": config.max_history}
        with RunDirLock(run_dir):
            finish_run(start_run(run_dir, KIND, dataset.root, config, options))
        return {"feature": feature}

    def load_retriever(
        self, run: Run, data: Path | None = None, progress: bool | None = None
    ) -> FrozenEmbeddingRetriever:
        """The item matrix is re-read from the dataset (`data`, else the run's)."""
        options = run.options
        return FrozenEmbeddingRetriever.from_features(
            PreparedDataset(data if data is not None else run.data),
            options.get("feature"),
            decay=float(options.get("decay", 1.0)),
            max_history=int(options.get("max_history", 50)),
        )

    def load_encoder(self, run: Run, data: Path | None = None) -> TrainedEncoder:
        raise KarmaError(f"{run.path}: a frozen run has no trained encoder (features only)")

    def run_overrides(
        self, seed: int, progress: bool, threads: int | None, time_budget_minutes: float | None
    ) -> list[str]:
        return []

    def task(self, config: FrozenConfig) -> Task:
        return "rec"
