"""What the generic `Trainer` drives: a task owns the model, its batches and its loss step."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from torch import nn

from karma.objectives.base import LossOutput, Stage


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
