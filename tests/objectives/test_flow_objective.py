"""L_flow (rectified flow) and its MSE comparison, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from karma.objectives.flow import (
    FeatureReconstructionObjective,
    RegressionHead,
    VelocityHead,
    interpolate,
    sinusoidal_time_embedding,
)

F_TRUE = torch.tensor([[1.0, 2.0], [0.0, -4.0]])
NOISE = torch.tensor([[3.0, 0.0], [2.0, 2.0]])
T = torch.tensor([0.25, 0.5])


def test_interpolation_by_hand() -> None:
    # row 0: 0.25*[1,2] + 0.75*[3,0] = [2.5, 0.5]; row 1: 0.5*[0,-4] + 0.5*[2,2] = [1, -1]
    assert interpolate(F_TRUE, NOISE, T).tolist() == [[2.5, 0.5], [1.0, -1.0]]


class _RecordingVelocity(nn.Module):
    """Returns a fixed velocity and records what it was called with."""

    def __init__(self, velocity: torch.Tensor) -> None:
        super().__init__()
        self.velocity = velocity
        self.seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        self.seen.append((z_t, t, condition))
        return self.velocity


def test_flow_loss_regresses_velocity_onto_f_minus_noise() -> None:
    objective = FeatureReconstructionObjective(feature_dim=2, embed_dim=3)
    head = _RecordingVelocity(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    objective.head = head
    interest = torch.randn(2, 3)
    out = objective(interest, F_TRUE, noise=NOISE, t=T)
    # target velocity f - ε = [[-2, 2], [-2, -6]]; errors [[2,-2],[3,7]] -> (4+4+9+49)/4 = 16.5
    assert float(out.loss) == pytest.approx(16.5)
    z_t, t, condition = head.seen[0]
    assert z_t.tolist() == [[2.5, 0.5], [1.0, -1.0]]
    assert t.tolist() == T.tolist() and condition is interest


def test_mse_head_loss_by_hand() -> None:
    objective = FeatureReconstructionObjective(feature_dim=2, embed_dim=3, head="mse")
    objective.head = nn.Identity()  # prediction = the "interest embedding" itself
    prediction = torch.tensor([[1.0, 0.0], [1.0, -2.0]])
    # errors [[0,-2],[1,2]] -> (0+4+1+4)/4 = 2.25
    assert float(objective(prediction, F_TRUE).loss) == pytest.approx(2.25)


@pytest.mark.parametrize("head", ["flow", "mse"])
def test_gradient_reaches_the_interest_embedding(head: str) -> None:
    objective = FeatureReconstructionObjective(feature_dim=4, embed_dim=3, hidden=16, head=head)  # type: ignore[arg-type]
    interest = torch.randn(5, 3, requires_grad=True)
    objective(interest, torch.randn(5, 4)).loss.backward()
    assert interest.grad is not None and interest.grad.abs().sum() > 0
    assert all(p.grad is not None for p in objective.parameters())
    expected = VelocityHead if head == "flow" else RegressionHead
    assert isinstance(objective.head, expected)


def test_sinusoidal_time_embedding_values() -> None:
    emb = sinusoidal_time_embedding(torch.tensor([0.0, 0.001]), 4)
    assert emb[0].tolist() == [1.0, 1.0, 0.0, 0.0]  # cos 0, cos 0, sin 0, sin 0
    # t=0.001 -> angle 1·freq; freqs = [1, 10000^(-1/2) = 0.01]
    expected = [math.cos(1.0), math.cos(0.01), math.sin(1.0), math.sin(0.01)]
    assert emb[1].tolist() == pytest.approx(expected, rel=1e-5)


def test_bad_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="head"):
        FeatureReconstructionObjective(2, 3, head="diffusion")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="time_dim"):
        FeatureReconstructionObjective(2, 3, time_dim=5)
