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
    euler_sample,
    feature_cosine,
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
    assert objective.sample(prediction, 2).tolist() == prediction.tolist()


@pytest.mark.parametrize("head", ["flow", "mse"])
def test_gradient_reaches_the_interest_embedding(head: str) -> None:
    objective = FeatureReconstructionObjective(feature_dim=4, embed_dim=3, hidden=16, head=head)  # type: ignore[arg-type]
    interest = torch.randn(5, 3, requires_grad=True)
    objective(interest, torch.randn(5, 4)).loss.backward()
    assert interest.grad is not None and interest.grad.abs().sum() > 0
    assert all(p.grad is not None for p in objective.parameters())
    expected = VelocityHead if head == "flow" else RegressionHead
    assert isinstance(objective.head, expected)


@pytest.mark.parametrize("steps", [1, 3, 8])
def test_euler_sampler_with_the_perfect_velocity_field_recovers_f(steps: int) -> None:
    # Along z_t = t·f + (1-t)·ε the exact velocity is (f - z_t) / (1 - t) for any ε.
    def perfect(z: torch.Tensor, t: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return (condition - z) / (1.0 - t).unsqueeze(1)

    noise = torch.randn(6, 5)
    features = torch.randn(6, 5)
    sample = euler_sample(perfect, noise, features, steps)
    torch.testing.assert_close(sample, features)
    assert float(feature_cosine(sample, features)) == pytest.approx(1.0)


def test_sample_uses_the_head_from_noise() -> None:
    objective = FeatureReconstructionObjective(feature_dim=2, embed_dim=3, sample_steps=4)
    objective.head = _RecordingVelocity(torch.tensor([[1.0, -1.0]]))
    sample = objective.sample(torch.zeros(1, 3), 2, generator=torch.Generator().manual_seed(0))
    noise = torch.randn((1, 2), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(sample, noise + torch.tensor([[1.0, -1.0]]))  # 4 steps of 1/4
    assert [float(t) for _, t, _ in objective.head.seen] == [0.0, 0.25, 0.5, 0.75]


def test_sinusoidal_time_embedding_values() -> None:
    emb = sinusoidal_time_embedding(torch.tensor([0.0, 0.001]), 4)
    assert emb[0].tolist() == [1.0, 1.0, 0.0, 0.0]  # cos 0, cos 0, sin 0, sin 0
    # t=0.001 -> angle 1·freq; freqs = [1, 10000^(-1/2) = 0.01]
    expected = [math.cos(1.0), math.cos(0.01), math.sin(1.0), math.sin(0.01)]
    assert emb[1].tolist() == pytest.approx(expected, rel=1e-5)


def test_bad_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="head"):
        FeatureReconstructionObjective(2, 3, head="diffusion")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sample_steps"):
        FeatureReconstructionObjective(2, 3, sample_steps=0)
    with pytest.raises(ValueError, match="time_dim"):
        FeatureReconstructionObjective(2, 3, time_dim=5)


def test_trained_flow_head_reconstructs_features_better_than_chance() -> None:
    """A hundred-odd steps on 4 (e_u, f) pairs: sampled features point at the right f."""
    torch.manual_seed(0)
    interest = torch.eye(4)
    features = torch.nn.functional.normalize(torch.randn(4, 6), dim=1) * 3
    objective = FeatureReconstructionObjective(6, 4, hidden=32, sample_steps=8)
    optimizer = torch.optim.Adam(objective.parameters(), lr=1e-2)
    for _ in range(120):
        optimizer.zero_grad()
        objective(interest.repeat(4, 1), features.repeat(4, 1)).loss.backward()
        optimizer.step()
    sample = objective.sample(interest, 6, generator=torch.Generator().manual_seed(1))
    assert float(feature_cosine(sample, features)) > 0.8
