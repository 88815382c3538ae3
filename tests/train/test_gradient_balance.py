"""GradientBalancer on a hand-built model whose gradients are known in closed form.

Parameters: w (2,) shared, u action-only, h knowledge-only, at w = (1, 2), u = 1, h = 1.
    L_act = 3 w0 + 4 w1 + 2 u            g_a = (3, 4) on w (norm 5), 2 on u
    L_k   = h (a w0 + b w1)              g_k = h (a, b) on w, a w0 + b w1 on h
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from karma.train.gradient_balance import GradientBalancer, clip_to_ratio, project_conflict


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, 2.0]))
        self.u = nn.Parameter(torch.tensor(1.0))
        self.h = nn.Parameter(torch.tensor(1.0))

    def terms(self, a: float, b: float) -> dict[str, torch.Tensor]:
        action = 3 * self.w[0] + 4 * self.w[1] + 2 * self.u
        knowledge = self.h * (a * self.w[0] + b * self.w[1])
        return {"action": action, "generation": knowledge}


def run(control: str, a: float, b: float, ratio: float = 1.0, scale: float = 1.0, measure=True):
    model = Toy()
    terms = model.terms(a, b)
    balancer = GradientBalancer(list(model.parameters()), [model.w], control, ratio)  # type: ignore[arg-type]
    parts = balancer.backward(sum(terms.values()), terms, scale, measure)
    return model, parts


def test_clip_ratio_rescales_the_knowledge_gradient_to_ratio_times_the_action_norm() -> None:
    # g_k = (-6, 8): norm 10 > 0.5 * 5 = 2.5, so it is scaled by 0.25 to (-1.5, 2).
    model, parts = run("clip_ratio", -6.0, 8.0, ratio=0.5)
    assert model.w.grad.tolist() == pytest.approx([3 - 1.5, 4 + 2.0])
    assert model.u.grad.item() == pytest.approx(2.0)  # action-only parameter untouched
    assert model.h.grad.item() == pytest.approx(-6 + 16)  # knowledge head keeps its own gradient
    assert parts["gradnorm_action"] == pytest.approx(5.0)
    assert parts["gradnorm_generation"] == pytest.approx(10.0)
    assert parts["gradnorm_generation_controlled"] == pytest.approx(2.5)
    assert parts["gradcos_generation"] == pytest.approx((-18 + 32) / 50)


def test_clip_ratio_leaves_a_small_knowledge_gradient_alone() -> None:
    model, parts = run("clip_ratio", 0.6, 0.8, ratio=0.5)  # norm 1 <= 2.5
    assert model.w.grad.tolist() == pytest.approx([3.6, 4.8])
    assert parts["gradnorm_generation_controlled"] == pytest.approx(1.0)


def test_pcgrad_projects_out_the_conflicting_component() -> None:
    # g_k = (-6, 2): <g_k, g_a> = -10, ||g_a||^2 = 25 -> g_k + 0.4 g_a = (-4.8, 3.6), orthogonal.
    model, parts = run("pcgrad", -6.0, 2.0)
    assert model.w.grad.tolist() == pytest.approx([3 - 4.8, 4 + 3.6])
    assert model.h.grad.item() == pytest.approx(-6 + 4)
    assert parts["gradnorm_generation_controlled"] == pytest.approx(6.0)  # ||(-4.8, 3.6)||
    assert parts["gradcos_generation"] == pytest.approx(-10 / (5 * math.sqrt(40)))
    # No conflict (positive dot product): unchanged.
    model, _ = run("pcgrad", -6.0, 8.0)
    assert model.w.grad.tolist() == pytest.approx([-3.0, 12.0])


def test_projection_and_clip_on_plain_vectors() -> None:
    mask = [True]
    reference = [torch.tensor([1.0, 0.0])]
    assert project_conflict([torch.tensor([-2.0, 3.0])], reference, mask)[0].tolist() == [0.0, 3.0]
    assert project_conflict([torch.tensor([2.0, 3.0])], reference, mask)[0].tolist() == [2.0, 3.0]
    clipped = clip_to_ratio([torch.tensor([3.0, 4.0])], torch.tensor(2.0), 0.5, mask)[0]
    assert clipped.tolist() == pytest.approx([0.6, 0.8])  # norm 5 -> 0.5 * 2 = 1


def test_scale_and_accumulation_match_one_full_step() -> None:
    once, _ = run("clip_ratio", -6.0, 8.0, ratio=0.5, scale=1.0)
    model = Toy()
    balancer = GradientBalancer(list(model.parameters()), [model.w], "clip_ratio", 0.5)
    for _ in range(2):  # two micro-batches of scale 1/2 accumulate into one step's gradient
        terms = model.terms(-6.0, 8.0)
        balancer.backward(sum(terms.values()), terms, 0.5, measure=False)
    for mine, ref in zip(model.parameters(), once.parameters()):
        assert torch.allclose(mine.grad, ref.grad)


@pytest.mark.parametrize("measure", [False, True])
def test_control_off_is_a_plain_backward_bit_for_bit(measure: bool) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    x = torch.randn(4, 5)

    def terms() -> dict[str, torch.Tensor]:
        out = net(x)
        return {"action": out.pow(2).mean(), "flow": 0.3 * out.sin().sum()}

    t = terms()
    (sum(t.values()) * 0.5).backward()
    plain = [p.grad.clone() for p in net.parameters()]
    net.zero_grad(set_to_none=True)
    t = terms()
    parts = GradientBalancer(list(net.parameters()), list(net.parameters())).backward(
        sum(t.values()), t, 0.5, measure
    )
    assert all(torch.equal(p.grad, g) for p, g in zip(net.parameters(), plain))
    assert ("gradnorm_action" in parts) == measure


def test_without_an_action_term_it_is_a_plain_backward() -> None:
    model = Toy()
    terms = {"item_text": model.h * model.w.sum()}  # the warm-up stage has no action term
    parts = GradientBalancer(list(model.parameters()), [model.w], "clip_ratio", 0.1).backward(
        terms["item_text"], terms, 1.0, measure=True
    )
    assert parts == {} and model.w.grad.tolist() == [1.0, 1.0]


def test_invalid_control_is_rejected() -> None:
    with pytest.raises(ValueError, match="control"):
        GradientBalancer([], [], "mgda")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ratio"):
        GradientBalancer([], [], "clip_ratio", 0.0)


class ToyWithItemTokens(Toy):
    """Toy plus p, shared and protected: L_act gains 5 p, L_k gains h c p (p = 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(1.0))

    def terms(self, a: float, b: float, c: float = 100.0) -> dict[str, torch.Tensor]:  # type: ignore[override]
        terms = super().terms(a, b)
        return {
            "action": terms["action"] + 5 * self.p,
            "generation": terms["generation"] + self.h * c * self.p,
        }


@pytest.mark.parametrize("control", ["none", "clip_ratio"])
def test_protected_parameters_get_the_action_gradient_alone(control: str) -> None:
    model = ToyWithItemTokens()
    terms = model.terms(-6.0, 8.0)
    params = list(model.parameters())
    balancer = GradientBalancer(params, [model.w, model.p], control, 0.5, protected=[model.p])  # type: ignore[arg-type]
    parts = balancer.backward(sum(terms.values()), terms, 1.0, measure=True)
    assert model.p.grad.item() == pytest.approx(5.0)  # the knowledge's 100 never arrives
    assert model.h.grad.item() == pytest.approx(-6 + 16 + 100)  # its own head keeps all of it
    assert model.u.grad.item() == pytest.approx(2.0)
    # Measured before control on every shared parameter: ||(-6, 8, 100)||.
    assert parts["gradnorm_generation"] == pytest.approx(math.sqrt(36 + 64 + 10000))
    if control == "none":  # w gets both terms whole
        assert model.w.grad.tolist() == pytest.approx([3 - 6, 4 + 8])
        assert parts["gradnorm_generation_controlled"] == pytest.approx(10.0)
    else:  # clipped against ||g_a|| on w alone (5): (-6, 8) * 2.5 / 10
        assert model.w.grad.tolist() == pytest.approx([3 - 1.5, 4 + 2.0])
        assert parts["gradnorm_generation_controlled"] == pytest.approx(2.5)


def test_protection_is_a_no_op_without_the_action_term() -> None:
    model = ToyWithItemTokens()
    terms = {"generation": model.terms(-6.0, 8.0)["generation"]}  # the warm-up stage
    params = list(model.parameters())
    balancer = GradientBalancer(params, [model.w, model.p], "none", protected=[model.p])  # type: ignore[arg-type]
    balancer.backward(terms["generation"], terms, 1.0, measure=False)
    assert model.p.grad.item() == pytest.approx(100.0)  # the warm-up still shapes the item tokens
