"""The KARMA recipe: train a `RunConfig` with the Trainer; load its encoder without training code.

Loading for inference (evaluation, diagnostics, export) builds the encoder alone
(`karma.train.karma_task.build_encoder`): no action loss, knowledge heads, knowledge catalog or
scan of the users' training windows. The checkpoint holds the whole `KarmaModel`; only its
`encoder.` keys are read, strictly, and the train-only heads are skipped by prefix, so a
checkpoint written with different training heads still loads (`load_encoder_weights`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from karma.config import to_dict
from karma.data import schema
from karma.data.dataset import PreparedDataset
from karma.data.tables import sha256_of
from karma.runs.base import Task, TrainedEncoder
from karma.runs.layout import Run, finish_run, start_run
from karma.train.checkpoint import latest_checkpoint, load_encoder_weights
from karma.train.karma_task import KarmaModel, KarmaRetriever, build_encoder
from karma.train.lock import RunDirLock
from karma.train.run_config import RunConfig, build_task
from karma.train.trainer import Trainer

KIND = "karma"


class KarmaRecipe:
    kind = KIND
    config_type = RunConfig

    def train(
        self,
        config: RunConfig,
        run_dir: Path | None = None,
        data: Path | None = None,
        resume: bool | None = None,
        progress: bool = True,
        pause_at: float | None = None,
        pause_after_steps: int | None = None,
    ) -> dict[str, Any]:
        """Train `config` (into `run_dir` / on `data` when given, else the config's own).

        `pause_at` / `pause_after_steps`: pause resumably (see `Trainer`); a paused run keeps
        `status: training` in run.json and its summary has `paused: True`.
        """
        if run_dir is not None:
            config.output_dir = Path(run_dir)
        if data is not None:
            config.data.path = Path(data)
        if not progress:
            config.train.progress_bar = False
        run_dir = Path(config.output_dir)
        # Held for the whole training, and taken before the slow model build: a second process
        # on this directory is refused with one line naming our pid (karma.train.lock).
        with RunDirLock(run_dir):
            if resume is None:
                resume = latest_checkpoint(run_dir) is not None
            if config.train.num_threads is not None:
                torch.set_num_threads(config.train.num_threads)  # before the backbone is built
            task = build_task(config)
            run = start_run(run_dir, KIND, task.dataset.root, config)
            trainer = Trainer(
                config.train,
                task,
                run_dir,
                resume=resume,
                pause_at=pause_at,
                pause_after_steps=pause_after_steps,
            )
            summary = trainer.fit()
            if not summary["paused"]:  # a paused run is not finished: it resumes later
                finish_run(
                    run,
                    summary.get("best_step"),
                    summary.get("best_metric"),
                    summary.get("train_seconds"),
                    summary.get("stage_steps"),
                )
        return summary

    def load_encoder(self, run: Run, data: Path | None = None) -> TrainedEncoder:
        config = run.read_config(RunConfig)
        dataset = PreparedDataset(data if data is not None else config.data.path)
        weights = run.best_weights()
        encoder = build_encoder(config.data, config.model, dataset, config.seed)
        load_encoder_weights(
            encoder, weights, KarmaModel.ENCODER_PREFIX, KarmaModel.TRAIN_ONLY_PREFIXES
        )
        encoder.refresh_item_cache()
        encoder.eval()
        texts = encoder.item_texts
        provenance = {
            "backbone": config.model.backbone.name,
            "data_hash": sha256_of(
                dataset.root / schema.ITEMS_FILE, dataset.root / schema.INTERACTIONS_FILE
            ),
            "config_hash": run.config_hash(),
            "run_dir": str(run.path),
            "weights": str(weights),
            "dataset": dataset.name,
            "knowledge": to_dict(config.knowledge),
            "tuning": config.model.backbone.tuning,
        }
        return TrainedEncoder(encoder, dataset, texts, provenance)

    def load_retriever(
        self, run: Run, data: Path | None = None, progress: bool | None = None
    ) -> KarmaRetriever:
        """The trained encoder as a dot-product `Retriever` (named after the run); by default a
        bar while users are encoded (a minute or more for a deep stack on CPU), on a terminal."""
        encoder = self.load_encoder(run, data).module
        return KarmaRetriever(encoder, name=run.name, progress=progress)  # type: ignore[arg-type]

    def run_overrides(
        self, seed: int, progress: bool, threads: int | None, time_budget_minutes: float | None
    ) -> list[str]:
        overrides = [f"seed={seed}", f"train.seed={seed}"]
        overrides.append(f"train.progress_bar={str(progress).lower()}")
        if time_budget_minutes is not None:
            overrides.append(f"train.time_budget_minutes={time_budget_minutes}")
        if threads is not None:
            overrides.append(f"train.num_threads={threads}")
        return overrides

    def task(self, config: RunConfig) -> Task:
        return config.data.mode
