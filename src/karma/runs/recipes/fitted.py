"""Recipes of baselines fitted from the training data in one pass: no training loop, no encoder.

A subclass names its kind, its (empty) config type, its retriever class (with `from_dataset`,
`save` and `load`), the file the retriever saves, the task it serves and what it ranks by.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from karma.errors import KarmaError
from karma.runs.base import Task, TrainedEncoder, open_training_data
from karma.runs.layout import Run, finish_run, start_run
from karma.train.lock import RunDirLock


class FittedRecipe:
    kind: ClassVar[str]
    config_type: ClassVar[type]
    retriever_type: ClassVar[Any]
    saved_file: ClassVar[str]
    summary_key: ClassVar[str]
    """Key of the saved file's path in `train`'s summary."""
    ranks_by: ClassVar[str]
    """What the baseline ranks by (named when an encoder is asked for)."""
    serves: ClassVar[Task]

    def train(
        self,
        config: Any,
        run_dir: Path | None = None,
        data: Path | None = None,
        resume: bool | None = None,
        progress: bool = True,
    ) -> dict[str, Any]:
        dataset = open_training_data(self.kind, run_dir, data)
        with RunDirLock(run_dir):
            run = start_run(run_dir, self.kind, dataset.root)
            self.retriever_type.from_dataset(dataset).save(run.path)
            finish_run(run)
        return {self.summary_key: str(run.file(self.saved_file))}

    def load_retriever(
        self, run: Run, data: Path | None = None, progress: bool | None = None
    ) -> Any:
        return self.retriever_type.load(run.path)

    def load_encoder(self, run: Run, data: Path | None = None) -> TrainedEncoder:
        raise KarmaError(
            f"{run.path}: a {self.kind} run has no encoder (it ranks by {self.ranks_by})"
        )

    def run_overrides(
        self, seed: int, progress: bool, threads: int | None, time_budget_minutes: float | None
    ) -> list[str]:
        return []

    def task(self, config: Any) -> Task:
        return self.serves
