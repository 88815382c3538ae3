"""The SASRec+ recipe: `SASRecConfig` trained by the project's generic `Trainer`.

`trainer_config` maps the baseline's own knobs onto a `TrainConfig` (AdamW with betas 0.9/0.98,
constant learning rate, one validation per epoch, early stopping on valid NDCG@10), so the run gets
the Trainer's checkpoints, resume, logs and `best/` weights like a KARMA run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from karma.baselines.sasrec import SASRecConfig, SASRecRetriever, SASRecTask
from karma.data.dataset import PreparedDataset
from karma.errors import KarmaError
from karma.runs.base import Task, TrainedEncoder, open_training_data
from karma.runs.layout import Run, finish_run, start_run
from karma.train.checkpoint import latest_checkpoint, load_model_weights
from karma.train.config import TrainConfig
from karma.train.lock import RunDirLock
from karma.train.trainer import Trainer

KIND = "sasrec"


def trainer_config(
    config: SASRecConfig, batches_per_epoch: int, progress: bool = True
) -> TrainConfig:
    """The `TrainConfig` that trains SASRec+ (AdamW, betas 0.9/0.98, constant learning rate)."""
    return TrainConfig(
        lr=config.lr,
        weight_decay=config.weight_decay,
        betas=(0.9, 0.98),
        lr_warmup_steps=0,
        min_lr_ratio=1.0,  # constant learning rate, as in SASRec
        max_steps=config.epochs * batches_per_epoch,
        max_epochs=config.epochs,
        clip_norm=None,
        eval_every=batches_per_epoch,
        checkpoint_every=batches_per_epoch * 10,
        early_stopping_metric="ndcg@10",
        early_stopping_mode="max",
        early_stopping_patience=config.patience,
        log_every=max(1, batches_per_epoch // 2),
        tensorboard=False,
        progress_bar=progress,
        seed=config.seed,
        device=config.device,  # type: ignore[arg-type]
        precision=config.precision,  # type: ignore[arg-type]
        num_threads=torch.get_num_threads(),  # keep the caller's choice (Trainer default: all)
    )


class SASRecRecipe:
    kind = KIND
    config_type = SASRecConfig

    def train(
        self,
        config: SASRecConfig,
        run_dir: Path | None = None,
        data: Path | None = None,
        resume: bool | None = None,
        progress: bool = True,
    ) -> dict[str, Any]:
        """Train into `run_dir`, keep the best validation weights, save the retriever's files."""
        dataset = open_training_data(KIND, run_dir, data)
        run_dir = Path(run_dir)  # type: ignore[arg-type]  # checked above
        with RunDirLock(run_dir):  # one training process per run directory
            if resume is None:
                resume = latest_checkpoint(run_dir) is not None
            task = SASRecTask(dataset, config)
            run = start_run(run_dir, KIND, dataset.root, config, {"num_items": dataset.num_items})
            summary = Trainer(
                trainer_config(config, task.num_batches(0), progress), task, run_dir, resume=resume
            ).fit()
            if summary.get("best_model_dir"):
                load_model_weights(task.model, Path(summary["best_model_dir"]))
            task.model.eval()
            SASRecRetriever(task.model).save(run_dir)
            finish_run(
                run,
                summary.get("best_step"),
                summary.get("best_metric"),
                summary.get("train_seconds"),
                summary.get("stage_steps"),
            )
        return summary

    def load_retriever(
        self, run: Run, data: Path | None = None, progress: bool | None = None
    ) -> SASRecRetriever:
        if "num_items" not in run.options:
            raise KarmaError(f"{run.path}/run.json: a sasrec run needs num_items")
        return SASRecRetriever.load(run.path, int(run.options["num_items"]))

    def load_encoder(self, run: Run, data: Path | None = None) -> TrainedEncoder:
        model = self.load_retriever(run, data).model
        dataset = PreparedDataset(data if data is not None else run.data)
        return TrainedEncoder(model, dataset, None, {"run_dir": str(run.path), "kind": KIND})

    def run_overrides(
        self, seed: int, progress: bool, threads: int | None, time_budget_minutes: float | None
    ) -> list[str]:
        return [f"seed={seed}"]

    def task(self, config: SASRecConfig) -> Task:
        return "rec"
