"""Learning-rate schedule: linear warm-up, then cosine decay (one schedule per training stage)."""

from __future__ import annotations

import math
from functools import partial

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine_factor(
    step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0
) -> float:
    """Multiplier of the peak lr for the update with 0-based index `step`.

    warm-up (step < W):  (step + 1) / W          -- the first update already moves the weights
    decay   (step >= W): r + (1 - r) * (1 + cos(pi * p)) / 2,  p = (step - W) / max(1, T - W)

    with W = warmup_steps, T = total_steps, r = min_lr_ratio; p is clamped to 1 past T.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_schedule(
    optimizer: Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0
) -> LambdaLR:
    """A `LambdaLR` applying `warmup_cosine_factor` to every param group's own lr.

    The lr warm-up never takes more than the stage itself: W = min(warmup_steps, total_steps).
    """
    factor = partial(
        warmup_cosine_factor,
        warmup_steps=min(warmup_steps, total_steps),
        total_steps=total_steps,
        min_lr_ratio=min_lr_ratio,
    )
    return LambdaLR(optimizer, lr_lambda=factor)
