"""L_flow: multimodal reconstruction of frozen item features from e_u (KARMA objective 4, train only).

Conditional rectified flow (flow matching with straight paths):

    z_t = t·f + (1-t)·ε,   ε ~ N(0, I),  t ~ U(0, 1)
    L_flow = E_{t,ε} mean_D( v_θ(z_t, t, e_u) - (f - ε) )²

`f` = frozen content features of the target item (e.g. a text-encoder embedding), `e_u` = interest
embedding. The head is a regularizer that keeps `e_u` predictive of the target's content; it never
produces the retrieval vector (generation is mode-seeking, retrieval mean-seeking). The squared
error is averaged over feature dimensions (not summed) so its scale does not grow with D and the
MSE comparison head (`head="mse"`: L = mean_D (r(e_u) - f)²) is on the same scale.

Training only needs the velocity regression; no karma run samples from the head, so there is no
sampler here (the semantic-fidelity probes in `karma.diagnostics.probes` measure what e_u keeps).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from karma.objectives.base import LossOutput

FlowHead = Literal["flow", "mse"]


def sinusoidal_time_embedding(
    t: torch.Tensor, dim: int, max_period: float = 10_000.0
) -> torch.Tensor:
    """Transformer-style embedding of flow time t in [0, 1]: (M,) -> (M, dim).

    `t` is scaled by 1000 first so the lowest frequencies still vary across [0, 1] (as DDPM's
    integer timesteps do); `dim` must be even.
    """
    half = dim // 2
    frequencies = torch.exp(
        -math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half
    )  # (half,)
    angles = 1000.0 * t.float().unsqueeze(1) * frequencies.unsqueeze(0)  # (M, half)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)  # (M, dim)


def interpolate(features: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """z_t = t·f + (1-t)·ε; features, noise (M, D), t (M,) -> (M, D)."""
    t = t.unsqueeze(1).to(features.dtype)
    return t * features + (1.0 - t) * noise


class VelocityHead(nn.Module):
    """v_θ(z_t, t, e_u): an MLP over [z_t; time embedding; e_u] -> velocity (M, D)."""

    def __init__(
        self, feature_dim: int, condition_dim: int, hidden: int, time_dim: int = 64
    ) -> None:
        super().__init__()
        self.time_dim = time_dim
        self.mlp = nn.Sequential(
            nn.Linear(feature_dim + time_dim + condition_dim, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, feature_dim),
        )

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """z_t (M, D), t (M,), condition (M, e) -> (M, D)."""
        time = sinusoidal_time_embedding(t, self.time_dim).to(z_t.dtype)  # (M, time_dim)
        return self.mlp(torch.cat([z_t, time, condition.to(z_t.dtype)], dim=1))


class RegressionHead(nn.Module):
    """r(e_u): the MSE comparison head, an MLP from the interest embedding to the features."""

    def __init__(self, feature_dim: int, condition_dim: int, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(condition_dim, hidden), nn.SiLU(), nn.Linear(hidden, feature_dim)
        )

    def forward(self, condition: torch.Tensor) -> torch.Tensor:
        """condition (M, e) -> (M, D)."""
        return self.mlp(condition)


class FeatureReconstructionObjective(nn.Module):
    """L_flow (head="flow") or its MSE comparison (head="mse"): frozen features f from e_u."""

    def __init__(
        self,
        feature_dim: int,
        embed_dim: int,
        hidden: int = 256,
        head: FlowHead = "flow",
        time_dim: int = 64,
    ) -> None:
        super().__init__()
        if head not in ("flow", "mse"):
            raise ValueError(f"head must be 'flow' or 'mse', got {head!r}")
        if time_dim < 2 or time_dim % 2:
            raise ValueError(f"time_dim must be a positive even number, got {time_dim}")
        self.head_kind = head
        self.head: nn.Module = (
            VelocityHead(feature_dim, embed_dim, hidden, time_dim)
            if head == "flow"
            else RegressionHead(feature_dim, embed_dim, hidden)
        )

    def forward(
        self,
        interest_embedding: torch.Tensor,
        features: torch.Tensor,
        noise: torch.Tensor | None = None,
        t: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> LossOutput:
        """interest_embedding (M, e), features (M, D); `noise` (M, D) and `t` (M,) fix ε and t."""
        features = features.to(interest_embedding.dtype)
        if self.head_kind == "mse":
            loss = (self.head(interest_embedding) - features).pow(2).mean()
            return LossOutput(loss, {"flow_mse": float(loss.detach())})
        if noise is None:
            noise = torch.randn(
                features.shape, generator=generator, device=features.device, dtype=features.dtype
            )
        if t is None:
            t = torch.rand(
                features.shape[0], generator=generator, device=features.device, dtype=features.dtype
            )
        z_t = interpolate(features, noise, t)  # (M, D)
        target_velocity = features - noise  # (M, D)
        loss = (self.head(z_t, t, interest_embedding) - target_velocity).pow(2).mean()
        return LossOutput(loss, {"flow_mse": float(loss.detach())})
