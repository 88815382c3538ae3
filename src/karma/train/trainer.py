"""The generic trainer: one explicit loop over stages, epochs and batches that drives a `TrainTask`.

Reads top to bottom as `fit -> _setup -> _train_stage -> _train_epoch -> _loss_step /
_optimizer_step -> _after_step (log, evaluate, save_checkpoint)`. The trainer knows nothing about
the model: the task builds batches and computes the loss; the trainer owns the optimizer (AdamW),
the lr schedule (linear warm-up + cosine, per stage), gradient accumulation and clipping, bf16
autocast, checkpoints, early stopping and logs.

Optional task hooks (see karma.train.task): `start_step(StepInfo)` before each optimizer step and
`backward(output, scale)` in place of the plain backward (KARMA's gradient control uses it).

Stages: with `semantic_warmup_steps > 0` the stage "warmup" runs that many optimizer steps with its own
AdamW state and schedule, then "joint" runs `max_steps`; the task's `loss_step` gets the stage name.
Validation, the best model and early stopping belong to the joint stage.

Multi-process (`distributed: ddp`, started with `accelerate launch`): each process takes every
world-th batch and gradients are averaged by an all-reduce before each optimizer step, so the task
may keep calling its own (unwrapped) model and submodules. `fsdp` shards the model with accelerate's
FSDP plugin; then the task must call its model's root forward, and resuming is not supported yet.

Pausing (`pause_at`, a `time.time()` deadline, and/or `pause_after_steps` of this `fit` call): after
the optimizer step that crosses it, unless the run ends with that step anyway, the trainer writes a
checkpoint of that step and returns with `paused: True`; `Trainer(..., resume=True).fit()` then
continues exactly as if never stopped. Unlike `train.time_budget_minutes` (which ends the run:
validates, `stopped_early`), a pause leaves the run unfinished.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim import AdamW, Optimizer
from torch.optim.lr_scheduler import LambdaLR
from tqdm.auto import tqdm

from karma.errors import ConfigError, KarmaError
from karma.objectives.base import Stage
from karma.train.checkpoint import (
    CHECKPOINTS_DIR,
    TrainerState,
    latest_checkpoint,
    load_checkpoint,
    load_matching_weights,
    restore_rng_states,
    rng_states,
    save_best,
    save_checkpoint,
)
from karma.train.config import TrainConfig
from karma.train.run_log import COUNT_PARTS, LossMeter, RunLog
from karma.train.schedule import warmup_cosine_schedule
from karma.train.task import StepInfo, TrainTask

logger = logging.getLogger(__name__)


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Tensors inside dicts / lists / tuples / dataclasses (or anything with `.to`) onto `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {key: move_to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, list):
        return [move_to_device(value, device) for value in batch]
    if isinstance(batch, tuple) and not hasattr(batch, "_fields"):
        return tuple(move_to_device(value, device) for value in batch)
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        moved = {
            f.name: move_to_device(getattr(batch, f.name), device)
            for f in dataclasses.fields(batch)
        }
        return dataclasses.replace(batch, **moved)
    if hasattr(batch, "to"):
        return batch.to(device)
    return batch


class Trainer:
    """Trains `task.model` with `config`, writing logs and checkpoints under `run_dir`."""

    def __init__(
        self,
        config: TrainConfig,
        task: TrainTask,
        run_dir: Path,
        resume: bool = False,
        pause_at: float | None = None,
        pause_after_steps: int | None = None,
    ) -> None:
        """`pause_at` (a `time.time()` deadline) / `pause_after_steps` (optimizer steps of this
        `fit` call): pause resumably after the step that reaches either (see the module doc)."""
        if pause_after_steps is not None and pause_after_steps < 1:
            raise ConfigError(f"pause_after_steps: must be >= 1 or None, got {pause_after_steps}")
        pausing = pause_at is not None or pause_after_steps is not None
        if pausing and config.distributed == "fsdp":
            raise ConfigError("train.distributed: an fsdp run cannot pause (it cannot resume yet)")
        self.config = config
        self.task = task
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.pause_at = pause_at
        self.pause_after_steps = pause_after_steps
        self.paused = False
        self.state = TrainerState()
        self.final_metrics: dict[str, float] = {}
        self.last_checkpoint: Path | None = None
        self._resumed_training_state: dict[str, Any] | None = None
        self._last_eval_step = -1
        self._last_checkpoint_step = -1

    # ----------------------------------------------------------------------------------- setup
    def _setup(self) -> None:
        cfg = self.config
        self.accelerator: Any = None
        self.rank, self.world = 0, 1
        if cfg.distributed != "none":
            self._setup_accelerator()
        else:
            cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
            if cfg.device == "cuda" and not torch.cuda.is_available():
                raise ConfigError("train.device: cuda requested but no CUDA device is available")
            self.device = torch.device("cuda" if cuda else "cpu")
            self.task.model.to(self.device)
        self.is_main = self.rank == 0
        # Processes on one machine share its cores rather than each claiming all of them.
        torch.set_num_threads(cfg.num_threads or max(1, (os.cpu_count() or 1) // self.world))
        self.amp_dtype = self._resolve_precision()
        self.log = RunLog(self.run_dir, tensorboard=cfg.tensorboard, enabled=self.is_main)

        checkpoint = latest_checkpoint(self.run_dir)
        if checkpoint is not None and not self.resume:
            raise KarmaError(
                f"{self.run_dir} already holds checkpoints; resume it (--resume) or use a new run dir"
            )
        if checkpoint is None:
            self._drop_log_after(0)
            if self.resume:
                logger.info("no checkpoint in %s; starting from scratch", self.run_dir)
            random.seed(cfg.seed + self.rank)
            np.random.seed(cfg.seed + self.rank)
            torch.manual_seed(cfg.seed + self.rank)
            if cfg.init_from is not None:
                self._warm_start(Path(cfg.init_from))
            return
        if cfg.distributed == "fsdp":
            raise ConfigError("train.distributed: resuming an fsdp run is not supported yet")
        self.state, model_state, self._resumed_training_state = load_checkpoint(checkpoint)
        self._drop_log_after(self.state.step)
        self.task.model.load_state_dict(model_state)
        self.last_checkpoint = checkpoint
        self._last_checkpoint_step = self.state.step
        # Last: nothing after this may draw random numbers the uninterrupted run did not draw.
        restore_rng_states(self._resumed_training_state["rng"])
        logger.info("resumed from %s (step %d)", checkpoint, self.state.step)

    def _drop_log_after(self, step: int) -> None:
        """Lines a stopped process logged after its last checkpoint (or before a first one) are
        trained again: drop them so that log.jsonl reads as one run."""
        dropped = self.log.drop_after(step)
        if dropped:
            logger.info(
                "log.jsonl: dropped %d lines of steps after %d (trained again)", dropped, step
            )

    def _warm_start(self, source: Path) -> None:
        if self.config.distributed == "fsdp":
            raise ConfigError("train.init_from: not supported with distributed fsdp yet")
        done = load_matching_weights(self.task.model, source)
        logger.info(
            "initialized from %s: %d tensors loaded, %d kept at their initialization%s",
            source,
            len(done.loaded),
            len(done.kept),
            f" ({', '.join(done.kept[:5])}{', ...' if len(done.kept) > 5 else ''})"
            if done.kept
            else "",
        )

    def _setup_accelerator(self) -> None:
        from accelerate import Accelerator, FullyShardedDataParallelPlugin

        cfg = self.config
        plugin = FullyShardedDataParallelPlugin() if cfg.distributed == "fsdp" else None
        self.accelerator = Accelerator(cpu=cfg.device == "cpu", fsdp_plugin=plugin)
        self.rank = self.accelerator.process_index
        self.world = self.accelerator.num_processes
        self.device = self.accelerator.device
        if cfg.distributed == "fsdp":
            self.task.model = self.accelerator.prepare_model(self.task.model)
        else:
            self.task.model.to(self.device)

    def _resolve_precision(self) -> torch.dtype | None:
        """bf16 autocast dtype, or None for plain fp32."""
        if self.config.precision == "fp32":
            return None
        if self.config.precision == "bf16":
            return torch.bfloat16
        if self.device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None

    def _autocast(self) -> AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _make_optimizer(self, total_steps: int) -> tuple[Optimizer, LambdaLR]:
        """A fresh AdamW + warm-up/cosine schedule for one stage."""
        cfg = self.config
        make_groups = getattr(self.task, "optimizer_groups", None)
        if make_groups is not None:
            groups = [dict(group) for group in make_groups(cfg.lr)]
            for group in groups:
                group.setdefault("weight_decay", cfg.weight_decay)
        else:
            # Decay matrices only: decaying biases and norm gains towards 0 hurts and buys nothing.
            trainable = [p for p in self.task.model.parameters() if p.requires_grad]
            groups = [
                {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": cfg.weight_decay},
                {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
            ]
        groups = [group for group in groups if len(group["params"]) > 0]
        if not groups:
            raise KarmaError("the task's model has no trainable parameters")
        optimizer = AdamW(
            groups, lr=cfg.lr, betas=cfg.betas, fused=self.device.type == "cuda" or None
        )
        return optimizer, warmup_cosine_schedule(
            optimizer, cfg.lr_warmup_steps, total_steps, cfg.min_lr_ratio
        )

    def _stage_steps(self) -> dict[str, int]:
        """Optimizer steps done per stage, in stage order ({"warmup": 50, "joint": 450}): the
        warm-up always precedes the joint stage, so its steps are the ones before this stage's."""
        state = self.state
        earlier = state.step - state.stage_step
        steps = {"warmup": earlier} if state.stage == "joint" and earlier > 0 else {}
        return steps | {state.stage: state.stage_step}

    # ----------------------------------------------------------------------------------- train
    def fit(self) -> dict[str, Any]:
        """Train every stage to its end (early stop, or pause); return steps (all stages, and
        `stage_steps` per stage), final and best metrics, `stopped_early` and `paused`."""
        self._setup()
        self._fit_start = time.monotonic()
        self._seconds_before = self.state.train_seconds  # earlier fit calls of a resumed run
        self._fit_first_step = self.state.step
        try:
            stages: list[tuple[Stage, int]] = [("joint", self.config.max_steps)]
            if self.config.semantic_warmup_steps > 0:
                stages.insert(0, ("warmup", self.config.semantic_warmup_steps))
            names = [name for name, _ in stages]
            if self.state.stage not in names:
                raise ConfigError(
                    f"train.semantic_warmup_steps: the checkpoint is in stage {self.state.stage!r}, "
                    "which this config no longer has"
                )
            for index, (stage, steps) in enumerate(stages):
                if names.index(self.state.stage) > index and self.state.step > 0:
                    continue  # finished before the checkpoint we resumed from
                self._train_stage(stage, steps)
                if self.state.stopped_early or self.paused:
                    break
            self.state.train_seconds = self._train_seconds()
        finally:
            self.log.close()
        best_dir = self.run_dir / "best"
        return {
            "steps": self.state.step,
            "stage_steps": self._stage_steps(),
            "epochs_started": self.state.epoch + 1,
            "stopped_early": self.state.stopped_early,
            "paused": self.paused,
            "final_metrics": self.final_metrics,
            "metric": self.config.early_stopping_metric,
            "best_metric": self.state.best_metric,
            "best_step": self.state.best_step,
            "best_model_dir": str(best_dir) if best_dir.is_dir() else None,
            "train_seconds": self.state.train_seconds,
            "last_checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
        }

    def _train_stage(self, stage: Stage, steps: int) -> None:
        state = self.state
        resuming = state.stage == stage and self._resumed_training_state is not None
        if not resuming:
            if state.batch_index > 0:  # the previous stage stopped mid-epoch: start a fresh one
                state.epoch += 1
            state.stage, state.stage_step, state.batch_index = stage, 0, 0
            state.stage_first_epoch = state.epoch
        total_steps = self._stage_length(steps)
        optimizer, scheduler = self._make_optimizer(total_steps)
        if resuming:
            assert self._resumed_training_state is not None
            optimizer.load_state_dict(self._resumed_training_state["optimizer"])
            scheduler.load_state_dict(self._resumed_training_state["scheduler"])
        self._resumed_training_state = None
        self.task.model.train()
        bar = tqdm(
            total=total_steps,
            initial=state.stage_step,
            desc=stage,
            unit="step",
            dynamic_ncols=True,
            disable=not (self.config.progress_bar and self.is_main),
        )
        self._meter = LossMeter()
        while state.stage_step < total_steps and not (state.stopped_early or self.paused):
            self._train_epoch(stage, total_steps, optimizer, scheduler, bar)
        bar.close()
        if self.paused:
            return  # its checkpoint is written; validation and the stage end come after resuming
        if stage == "joint" and self._last_eval_step != state.step:
            self.evaluate()
        if self._last_checkpoint_step != state.step:
            self.save_checkpoint(optimizer, scheduler)

    def _stage_length(self, steps: int) -> int:
        """Optimizer steps the stage will take: `steps`, or fewer if max_epochs ends it first."""
        if self.config.max_epochs is None:
            return steps
        first = self.state.stage_first_epoch
        total = 0
        for epoch in range(first, first + self.config.max_epochs):
            total += math.ceil(self._local_num_batches(epoch) / self.config.grad_accum)
            if total >= steps:
                return steps
        return total

    def _local_num_batches(self, epoch: int) -> int:
        """Batches this process sees in `epoch`: the same count on every process (a remainder of
        fewer than `world` batches is dropped), so all processes take the same optimizer steps."""
        return self.task.num_batches(epoch) // self.world

    def _local_batches(self, epoch: int) -> Iterator[Any]:
        """Every world-th batch of the epoch, starting at this process's rank."""
        end = self._local_num_batches(epoch) * self.world
        return islice(self.task.batches(epoch), self.rank, end, self.world)

    def _train_epoch(
        self,
        stage: Stage,
        total_steps: int,
        optimizer: Optimizer,
        scheduler: LambdaLR,
        bar: tqdm,
    ) -> None:
        state, cfg = self.state, self.config
        if cfg.max_epochs is not None and state.epoch - state.stage_first_epoch >= cfg.max_epochs:
            state.stage_step = total_steps  # defensive: _stage_length already accounts for this
            return
        num_batches = self._local_num_batches(state.epoch)
        if num_batches == 0:  # would loop over empty epochs for ever
            raise KarmaError(
                f"no training batches in epoch {state.epoch} "
                f"({self.task.num_batches(state.epoch)} batches for {self.world} processes)"
            )
        step_parts: dict[str, float] = {}
        in_group = 0
        for batch in islice(self._local_batches(state.epoch), state.batch_index, None):
            group_start = state.batch_index - in_group
            group_size = min(cfg.grad_accum, num_batches - group_start)
            if in_group == 0:
                self._start_step(stage, total_steps)
            parts = self._loss_step(batch, stage, scale=1.0 / group_size)
            for name, value in parts.items():
                weight = 1.0 if name in COUNT_PARTS else 1.0 / group_size
                step_parts[name] = step_parts.get(name, 0.0) + weight * value
            in_group += 1
            state.batch_index += 1
            if in_group < group_size:
                continue
            step_parts["lr"] = optimizer.param_groups[0]["lr"]
            grad_norm = self._optimizer_step(optimizer, scheduler)
            if grad_norm is not None:
                step_parts["grad_norm"] = grad_norm
            self._after_step(stage, step_parts, optimizer, scheduler, bar)
            self._maybe_pause(stage, total_steps, optimizer, scheduler)
            step_parts, in_group = {}, 0
            if state.stage_step >= total_steps or state.stopped_early or self.paused:
                return
        if in_group > 0:  # the task yielded fewer batches than num_batches() promised
            self._optimizer_step(optimizer, scheduler)
            self._after_step(stage, step_parts, optimizer, scheduler, bar)
            self._maybe_pause(stage, total_steps, optimizer, scheduler)
            if self.paused:
                return  # resuming finishes this epoch's bookkeeping (no batches left in it)
        state.epoch += 1
        state.batch_index = 0

    def _start_step(self, stage: Stage, total_steps: int) -> None:
        """Tell a task that wants to know (`start_step`) which optimizer step comes next."""
        start_step = getattr(self.task, "start_step", None)
        if start_step is None:
            return
        step = self.state.stage_step
        start_step(StepInfo(stage, step, total_steps, (step + 1) % self.config.log_every == 0))

    def _loss_step(self, batch: Any, stage: Stage, scale: float) -> dict[str, float]:
        """Forward + backward of one batch; `scale` = 1 / batches in this optimizer step."""
        if self.device.type != "cpu":  # CPU batches are already where they belong
            batch = move_to_device(batch, self.device)
        with self._autocast():
            output = self.task.loss_step(batch, stage)
        backward = getattr(self.task, "backward", None)
        extra: dict[str, float] = {}
        if backward is None:
            (output.loss * scale).backward()
        else:  # the task backpropagates itself (e.g. balancing its terms' gradients)
            extra = backward(output, scale)
        return {"loss": float(output.loss.detach()), **output.parts, **extra}

    def _optimizer_step(self, optimizer: Optimizer, scheduler: LambdaLR) -> float | None:
        """Average gradients over processes, clip, step, advance the schedule.

        Returns the gradient norm before clipping (None when clipping is off).
        """
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if self.config.distributed == "ddp" and self.world > 1:
            self._all_reduce_gradients(params)
        grad_norm = None
        if self.config.clip_norm is not None:
            if self.config.distributed == "fsdp":
                norm = self.accelerator.clip_grad_norm_(
                    self.task.model.parameters(), self.config.clip_norm
                )
            else:
                norm = nn.utils.clip_grad_norm_(params, self.config.clip_norm)
            grad_norm = float(norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        self.state.stage_step += 1
        self.state.step += 1
        return grad_norm

    def _all_reduce_gradients(self, params: list[nn.Parameter]) -> None:
        """Mean gradient over processes. A parameter without a gradient on some process counts as a
        zero gradient there (only if some process has one), so all processes call the same
        collectives and AdamW still skips parameters that no process touched (stage warm-up)."""
        import torch.distributed as dist

        has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.float32)
        has_grad = has_grad.to(self.device)
        dist.all_reduce(has_grad)
        for param, present in zip(params, has_grad.tolist()):
            if present == 0:
                continue
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            dist.all_reduce(param.grad)
            param.grad /= self.world

    def _after_step(
        self,
        stage: Stage,
        step_parts: dict[str, float],
        optimizer: Optimizer,
        scheduler: LambdaLR,
        bar: tqdm,
    ) -> None:
        """Progress bar, log line, evaluation and checkpoint due after an optimizer step."""
        state, cfg = self.state, self.config
        self._meter.add_step(step_parts)
        bar.update(1)
        shown = {k: f"{v:.4g}" for k, v in step_parts.items() if k not in COUNT_PARTS}
        bar.set_postfix(shown, refresh=False)
        if state.stage_step % cfg.log_every == 0:
            record = {"kind": "train", "step": state.step, "stage": stage}
            record |= {"stage_step": state.stage_step, "epoch": state.epoch}
            self.log.write(record | self._meter.summary())
            self._meter.reset()
        if stage == "joint" and cfg.eval_every and state.stage_step % cfg.eval_every == 0:
            self.evaluate()
        budget = cfg.time_budget_minutes
        if stage == "joint" and budget and time.monotonic() - self._fit_start > 60 * budget:
            logger.info("time budget of %.1f min used at step %d: stopping", budget, state.step)
            state.stopped_early = True
        if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0:
            self.save_checkpoint(optimizer, scheduler)

    def _maybe_pause(
        self, stage: Stage, total_steps: int, optimizer: Optimizer, scheduler: LambdaLR
    ) -> None:
        """Pause (checkpoint this step, stop) once `pause_at` / `pause_after_steps` is reached,
        unless the run ends with this step anyway (then it finishes as usual)."""
        if self.pause_at is None and self.pause_after_steps is None:
            return
        state = self.state
        if state.stopped_early or (stage == "joint" and state.stage_step >= total_steps):
            return
        due = self.pause_after_steps is not None and (
            state.step - self._fit_first_step >= self.pause_after_steps
        )
        due = due or (self.pause_at is not None and time.time() >= self.pause_at)
        if self.accelerator is not None:  # clocks differ: every process follows the main one
            from accelerate.utils import broadcast_object_list

            due = bool(broadcast_object_list([due])[0])
        if not due:
            return
        if self._last_checkpoint_step != state.step:
            self.save_checkpoint(optimizer, scheduler)
        self.paused = True
        logger.info("paused at step %d (checkpoint %s)", state.step, self.last_checkpoint)

    # -------------------------------------------------------------------------------- evaluate
    def evaluate(self) -> dict[str, float]:
        """Run the task's validation; update the best model and the early-stopping counter."""
        state, cfg = self.state, self.config
        self.task.model.eval()
        with torch.no_grad(), self._autocast():
            metrics = {name: float(value) for name, value in self.task.validate().items()}
        self.task.model.train()
        if self.accelerator is not None:
            from accelerate.utils import broadcast_object_list

            metrics = broadcast_object_list([metrics])[0]  # every process decides alike
        self._last_eval_step = state.step
        self.final_metrics = metrics
        self.log.write({"kind": "eval", "step": state.step, "stage": state.stage} | metrics)
        if cfg.early_stopping_metric not in metrics:
            raise ConfigError(
                f"train.early_stopping_metric: {cfg.early_stopping_metric!r} is not among the "
                f"validation metrics {sorted(metrics)}"
            )
        value = metrics[cfg.early_stopping_metric]
        best = state.best_metric
        improved = best is None or (
            value > best if cfg.early_stopping_mode == "max" else value < best
        )
        if improved:
            state.best_metric, state.best_step = value, state.step
            state.evals_without_improvement = 0
            model_state = self._model_state()
            if self.is_main:
                save_best(self.run_dir, model_state, state.step, metrics)
        else:
            state.evals_without_improvement += 1
            patience = cfg.early_stopping_patience
            if patience and state.evals_without_improvement >= patience:
                state.stopped_early = True
                logger.info(
                    "early stop at step %d: no %s gain in %d evaluations",
                    state.step,
                    cfg.early_stopping_metric,
                    patience,
                )
        return metrics

    # ------------------------------------------------------------------------- save_checkpoint
    def _model_state(self) -> dict[str, torch.Tensor]:
        if self.config.distributed == "fsdp":
            return self.accelerator.get_state_dict(self.task.model)
        return self.task.model.state_dict()

    def _train_seconds(self) -> float | None:
        """Seconds spent in `fit` so far, this call and the earlier ones of a resumed run (None
        when a checkpoint from before karma counted them left the earlier ones unknown)."""
        if self._seconds_before is None:
            return None
        return self._seconds_before + time.monotonic() - self._fit_start

    def save_checkpoint(self, optimizer: Optimizer, scheduler: LambdaLR) -> Path:
        """Write a resumable checkpoint of the current step (main process; others wait)."""
        self.state.train_seconds = self._train_seconds()
        model_state = self._model_state()
        path = self.run_dir / CHECKPOINTS_DIR
        if self.is_main:
            training_state = {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng_states(),
            }
            path = save_checkpoint(
                self.run_dir, self.state, model_state, training_state, self.config.keep_checkpoints
            )
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()
        self.last_checkpoint = path
        self._last_checkpoint_step = self.state.step
        return path
