"""What the generic `Trainer` drives: a task owns the model, its batches and its loss step."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from torch import nn

from karma.objectives.base import LossOutput, Stage


@dataclass(frozen=True)
class StepInfo:
    """Where the optimizer step about to be computed sits (given to a task's `start_step`)."""

    stage: Stage
    """"warmup" or "joint"."""
    stage_step: int
    """0-based index of this optimizer step within its stage."""
    stage_steps: int
    """Optimizer steps the stage will take (max_steps, or fewer when max_epochs ends it first)."""
    log: bool
    """Whether this step's parts are written to the log (costly diagnostics run only then)."""


class TrainTask(Protocol):
    """A trainable task (KARMA's encoder, SASRec, ...).

    `batches(epoch)` must be deterministic given the epoch (the task seeds its own generator with
    `seed + epoch`), so that resuming can skip to the exact data position.
    """

    model: nn.Module

    def batches(self, epoch: int) -> Iterator[Any]: ...

    def num_batches(self, epoch: int) -> int: ...

    def loss_step(self, batch: Any, stage: Stage) -> LossOutput:
        """Forward + loss for one batch in the named stage ("warmup" or "joint")."""
        ...

    def validate(self) -> dict[str, float]:
        """Validation metrics (full-ranking NDCG@10 etc. on the validation split)."""
        ...

    # Optional (the Trainer uses it when the task defines it, so it is not part of the Protocol):
    #     def optimizer_groups(self, base_lr: float) -> list[dict[str, Any]]
    # AdamW param groups, e.g. [{"params": lora_params, "lr": base_lr},
    # {"params": head_params, "lr": 10 * base_lr, "weight_decay": 0.0}]. A group without
    # "weight_decay" gets TrainConfig.weight_decay; without "lr" it gets base_lr. Without the method,
    # the Trainer puts all trainable parameters in two groups (matrices decayed, 1-D tensors not).
    #
    #     def start_step(self, info: StepInfo) -> None
    # Called before the first micro-batch of every optimizer step: a task whose loss depends on
    # the step (KARMA's knowledge-weight schedules) or that measures only on log steps reads it.
    #
    #     def backward(self, output: LossOutput, scale: float) -> dict[str, float]
    # Backpropagate `scale * output.loss` into the parameters' `.grad` (adding to what earlier
    # micro-batches of the step left there) and return extra float parts to log. Without it the
    # Trainer calls `(output.loss * scale).backward()`. KARMA uses it to balance the gradients of
    # its loss terms on the parameters they share (karma.train.gradient_balance); it runs outside
    # autocast, like the Trainer's own backward.
