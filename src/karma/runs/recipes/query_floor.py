"""The query-floor recipe: the query-only ranking of personalized search (nothing to train)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from karma.baselines.query_floor import FLOOR_FILE, QueryFloorRetriever
from karma.errors import KarmaError
from karma.runs.base import Task, TrainedEncoder, open_training_data
from karma.runs.layout import Run, finish_run, start_run
from karma.train.lock import RunDirLock

KIND = "query-floor"


@dataclass
class QueryFloorConfig:
    """The query-only floor has no settings."""


class QueryFloorRecipe:
    kind = KIND
    config_type = QueryFloorConfig

    def train(
        self,
        config: QueryFloorConfig,
        run_dir: Path | None = None,
        data: Path | None = None,
        resume: bool | None = None,
        progress: bool = True,
    ) -> dict[str, Any]:
        dataset = open_training_data(KIND, run_dir, data)
        with RunDirLock(run_dir):
            run = start_run(run_dir, KIND, dataset.root)
            QueryFloorRetriever.from_dataset(dataset).save(run.path)
            finish_run(run)
        return {"floor": str(run.file(FLOOR_FILE))}

    def load_retriever(
        self, run: Run, data: Path | None = None, progress: bool | None = None
    ) -> QueryFloorRetriever:
        return QueryFloorRetriever.load(run.path)

    def load_encoder(self, run: Run, data: Path | None = None) -> TrainedEncoder:
        raise KarmaError(f"{run.path}: a query-floor run has no encoder (it ranks by the query)")

    def run_overrides(
        self, seed: int, progress: bool, threads: int | None, time_budget_minutes: float | None
    ) -> list[str]:
        return []

    def task(self, config: QueryFloorConfig) -> Task:
        return "search"
