"""SASRec+ trained by the project's generic `Trainer` into a run directory `karma evaluate` reads.

`SASRecConfig` keeps the baseline's own knobs; `trainer_config` maps them onto a `TrainConfig`
(constant learning rate, one validation per epoch, early stopping on valid NDCG@10), so the run
gets the Trainer's checkpoints, resume, logs and `best/` weights like a KARMA run.
"""

from __future__ import annotations

from pathlib import Path

import torch

from karma.baselines.sasrec import SASRecConfig, SASRecRetriever, SASRecTask
from karma.data.dataset import PreparedDataset
from karma.eval.registry import write_run_info
from karma.train.config import TrainConfig


def trainer_config(
    config: SASRecConfig, batches_per_epoch: int, progress: bool = True
) -> TrainConfig:
    """The `TrainConfig` that trains SASRec+ as `fit_sasrec` does (AdamW, betas 0.9/0.98)."""
    return TrainConfig(
        lr=config.lr,
        weight_decay=config.weight_decay,
        betas=(0.9, 0.98),
        warmup_steps=0,
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
        num_threads=torch.get_num_threads(),  # keep the caller's choice (Trainer default: all)
    )


def train_sasrec(
    dataset: PreparedDataset,
    config: SASRecConfig,
    run_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
) -> SASRecRetriever:
    """Train with the `Trainer` into `run_dir`, keep the best validation weights, write run.json."""
    from karma.train.lock import RunDirLock

    with RunDirLock(run_dir):  # one training process per run directory
        return _train_sasrec(dataset, config, Path(run_dir), resume, progress)


def _train_sasrec(
    dataset: PreparedDataset, config: SASRecConfig, run_dir: Path, resume: bool, progress: bool
) -> SASRecRetriever:
    from karma.train.checkpoint import load_model_weights
    from karma.train.trainer import Trainer

    task = SASRecTask(dataset, config)
    summary = Trainer(
        trainer_config(config, task.num_batches(0), progress), task, run_dir, resume=resume
    ).fit()
    if summary.get("best_model_dir"):
        load_model_weights(task.model, Path(summary["best_model_dir"]))
    task.model.eval()
    retriever = SASRecRetriever(task.model)
    retriever.save(run_dir)
    write_run_info(
        run_dir,
        "sasrec",
        dataset.root,
        num_items=dataset.num_items,
        best_step=summary.get("best_step"),
        best_valid=summary.get("best_metric"),
    )
    return retriever
