"""The one contract every objective follows: tensors in, `LossOutput` out."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LossOutput:
    """A scalar loss to backpropagate and the float parts to log (already detached)."""

    loss: torch.Tensor
    parts: dict[str, float] = field(default_factory=dict)
