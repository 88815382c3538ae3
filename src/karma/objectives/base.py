"""The one contract every objective follows: tensors in, `LossOutput` out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

Stage = Literal["warmup", "joint"]
"""A training stage: "warmup" (semantic warm-up, knowledge objectives only, no action loss;
`train.semantic_warmup_steps` long) then "joint" (action + knowledge; `train.max_steps` long)."""
STAGES: tuple[Stage, ...] = ("warmup", "joint")


@dataclass
class LossOutput:
    """A scalar loss to backpropagate and the float parts to log (already detached).

    `terms` optionally names the loss's additive terms (weighted, `loss == sum(terms.values())`),
    for a task that balances their gradients (karma.train.gradient_balance); empty = not exposed.
    """

    loss: torch.Tensor
    parts: dict[str, float] = field(default_factory=dict)
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
