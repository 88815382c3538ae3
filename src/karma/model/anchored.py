"""A semantic-anchored item tower: a frozen meaning plus a small, bounded per-item residual.

Trained per-item vectors drift away from what the items mean, and an ID embedding has nothing to
give an item it never saw. Following "Let It Go? Not Quite" (RecSys 2025), an item's vector here is
its semantic anchor `a_i` -- computed from frozen content (the LLM's own read of the item text,
MiniLM features) through a map shared by every item -- plus a learned residual whose norm is at most
a fixed fraction `rho` of the anchor's:

    x_i = a_i + r_i,    r_i = m_i * R_i * min(1, rho * ||a_i|| / ||R_i||)          (d,)

`R` is a free (N, d) table, started at zero; `m_i` is 1 for items seen in training and 0 for the
rest, so an item never trained (a new item, a cold item, one added at serving time) is exactly its
anchor. The bound holds for any value of `R`, hence after any optimizer update: it is a
reparametrisation, not a penalty. The anchor norm inside the bound carries no gradient (the bound
is a constraint, not something to optimise by inflating the anchor).

Residual dropout (`dropout` = p, training only, after DropoutNet, Volkovs et al., NeurIPS 2017):
in each forward pass every item's residual is zeroed with probability p (one draw per item, shared
by all its occurrences in the pass), so the model also learns to rank items shown as their anchor
alone -- which is how it meets every new item at serving time. Evaluation never drops.
"""

from __future__ import annotations

import torch
from torch import nn

EPS = 1e-12


def bounded_residual(anchors: torch.Tensor, residual: torch.Tensor, ratio: float) -> torch.Tensor:
    """(K, d) anchors and raw residual rows -> (K, d) residual scaled to norm <= ratio * ||a||."""
    limit = ratio * anchors.detach().norm(dim=-1, keepdim=True)  # (K, 1)
    norm = residual.norm(dim=-1, keepdim=True).clamp(min=EPS)  # (K, 1)
    return residual * torch.clamp(limit / norm, max=1.0)


class BoundedResidual(nn.Module):
    """The per-item residual table of the anchored tower (see the module docstring)."""

    def __init__(
        self,
        num_items: int,
        dim: int,
        ratio: float,
        trained: torch.Tensor | None = None,
        dropout: float = 0.0,
    ):
        """`trained` (N,) bool: items that may carry a residual (None = every item); `dropout`:
        the probability of showing an item as its anchor alone in a training pass."""
        super().__init__()
        if ratio <= 0:
            raise ValueError(f"ratio: must be > 0, got {ratio}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: must be in [0, 1), got {dropout}")
        self.ratio = ratio
        self.dropout = dropout
        self.table = nn.Embedding(num_items, dim)
        nn.init.zeros_(self.table.weight)  # every item starts at its anchor
        mask = torch.ones(num_items, dtype=torch.bool) if trained is None else trained.bool()
        if mask.shape != (num_items,):
            raise ValueError(f"trained: expected shape ({num_items},), got {tuple(mask.shape)}")
        # Persistent: the mask travels with the weights, so a served model knows its trained items.
        self.register_buffer("trained", mask.clone())

    def forward(self, anchors: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """(K, d) anchors of items `item_idx` (K,) -> (K, d) anchored vectors a + r."""
        mask = self.trained
        if self.training and self.dropout > 0:
            mask = mask & (torch.rand(mask.shape, device=mask.device) >= self.dropout)  # (N,)
        raw = self.table(item_idx) * mask[item_idx][:, None].to(anchors.dtype)  # (K, d)
        return anchors + bounded_residual(anchors, raw, self.ratio)

    def append(self, count: int) -> None:
        """Room for `count` new items: zero residual rows, never trained (their anchor alone)."""
        weight = self.table.weight
        rows = torch.zeros(count, weight.shape[1], dtype=weight.dtype, device=weight.device)
        table = nn.Embedding(weight.shape[0] + count, weight.shape[1]).to(weight.device)
        with torch.no_grad():
            table.weight.copy_(torch.cat([weight.detach(), rows]))
        table.weight.requires_grad_(weight.requires_grad)
        self.table = table
        new = torch.zeros(count, dtype=torch.bool, device=self.trained.device)
        self.trained = torch.cat([self.trained, new])
