"""The one contract every objective follows: tensors in, `LossOutput` out."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LossOutput:
    """A scalar loss to backpropagate and the float parts to log (already detached).

    `terms` optionally names the loss's additive terms (weighted, `loss == sum(terms.values())`),
    for a task that balances their gradients (karma.train.gradient_balance); empty = not exposed.
    """

    loss: torch.Tensor
    parts: dict[str, float] = field(default_factory=dict)
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
