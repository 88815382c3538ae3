"""The popularity recipe: count training clicks (no model to train, no encoder)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from karma.baselines.popularity import COUNTS_FILE, PopularityRetriever
from karma.errors import KarmaError
from karma.runs.base import Task, TrainedEncoder, open_training_data
from karma.runs.layout import Run, finish_run, start_run
from karma.train.lock import RunDirLock

KIND = "popularity"


@dataclass
class PopularityConfig:
    """The popularity baseline has no settings."""


class PopularityRecipe:
    kind = KIND
    config_type = PopularityConfig

    def train(
        self,
        config: PopularityConfig,
        run_dir: Path | None = None,
        data: Path | None = None,
        resume: bool | None = None,
        progress: bool = True,
    ) -> dict[str, Any]:
        dataset = open_training_data(KIND, run_dir, data)
        with RunDirLock(run_dir):
            run = start_run(run_dir, KIND, dataset.root)
            PopularityRetriever.from_dataset(dataset).save(run.path)
            finish_run(run)
        return {"counts": str(run.file(COUNTS_FILE))}

    def load_retriever(
        self, run: Run, data: Path | None = None, progress: bool | None = None
    ) -> PopularityRetriever:
        return PopularityRetriever.load(run.path)

    def load_encoder(self, run: Run, data: Path | None = None) -> TrainedEncoder:
        raise KarmaError(f"{run.path}: a popularity run has no encoder (it ranks by counts)")

    def run_overrides(
        self, seed: int, progress: bool, threads: int | None, time_budget_minutes: float | None
    ) -> list[str]:
        return []

    def task(self, config: PopularityConfig) -> Task:
        return "rec"
