"""The fused, chunked full-softmax cross-entropy equals `F.cross_entropy` over the full logits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from karma.objectives.full_softmax import full_softmax_cross_entropy

pytestmark = pytest.mark.usefixtures("one_thread")


def test_hand_checked_values() -> None:
    # Two items, one query: logits (2, 0) for target 0 -> -log(e^2 / (e^2 + 1)).
    hidden = torch.tensor([[1.0, 0.0]], requires_grad=True)
    items = torch.tensor([[2.0, 0.0], [0.0, 5.0]], requires_grad=True)
    loss = full_softmax_cross_entropy(hidden, items, torch.tensor([0]))
    assert loss.item() == pytest.approx(math.log1p(math.exp(-2.0)), rel=1e-6)
    loss.backward()
    # dL/dh = (softmax - onehot) @ E = (p0 - 1) * e0 + p1 * e1, p1 = 1 / (1 + e^2).
    p1 = 1.0 / (1.0 + math.exp(2.0))
    expected = torch.tensor([[-p1 * 2.0, p1 * 5.0]])
    torch.testing.assert_close(hidden.grad, expected)
    # dL/dE = (softmax - onehot)^T h: only the first coordinate of h is non-zero.
    torch.testing.assert_close(items.grad, torch.tensor([[-p1, 0.0], [p1, 0.0]]))


def test_excluded_items_are_never_candidates() -> None:
    hidden = torch.tensor([[1.0, 0.0]], requires_grad=True)
    items = torch.tensor([[2.0, 0.0], [0.0, 5.0], [9.0, 9.0]], requires_grad=True)
    excluded = torch.tensor([False, False, True])
    loss = full_softmax_cross_entropy(hidden, items, torch.tensor([0]), excluded)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-2.0)), rel=1e-6)
    loss.backward()
    assert torch.equal(items.grad[2], torch.zeros(2))  # an excluded item gets no gradient


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 40),
    num_items=st.integers(2, 30),
    dim=st.integers(1, 8),
    chunk_rows=st.integers(1, 50),
    exclude=st.booleans(),
    scale=st.floats(0.1, 10.0),
    seed=st.integers(0, 2**16),
)
def test_matches_unfused_cross_entropy(
    rows: int,
    num_items: int,
    dim: int,
    chunk_rows: int,
    exclude: bool,
    scale: float,
    seed: int,
) -> None:
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, dim, generator=generator, dtype=torch.float64) * scale
    items = torch.randn(num_items, dim, generator=generator, dtype=torch.float64)
    excluded = None
    allowed = torch.arange(num_items)
    if exclude:
        excluded = torch.rand(num_items, generator=generator) < 0.3
        excluded[0] = False  # at least one candidate
        allowed = torch.nonzero(~excluded).squeeze(1)
    targets = allowed[torch.randint(len(allowed), (rows,), generator=generator)]
    weight = torch.randn((), dtype=torch.float64, generator=generator)  # upstream gradient

    h1, e1 = hidden.clone().requires_grad_(), items.clone().requires_grad_()
    logits = h1 @ e1.T
    if excluded is not None:
        logits = logits.masked_fill(excluded, float("-inf"))
    expected = F.cross_entropy(logits, targets)
    (expected * weight).backward()

    h2, e2 = hidden.clone().requires_grad_(), items.clone().requires_grad_()
    loss = full_softmax_cross_entropy(h2, e2, targets, excluded, chunk_rows=chunk_rows)
    (loss * weight).backward()

    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(h2.grad, h1.grad)
    torch.testing.assert_close(e2.grad, e1.grad)


def test_shape_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="targets"):
        full_softmax_cross_entropy(torch.zeros(3, 2), torch.zeros(4, 2), torch.zeros(2).long())
    with pytest.raises(ValueError, match="chunk_rows"):
        full_softmax_cross_entropy(
            torch.zeros(3, 2), torch.zeros(4, 2), torch.zeros(3).long(), chunk_rows=0
        )
    with pytest.raises(ValueError, match="matmul_dtype"):
        full_softmax_cross_entropy(
            torch.zeros(3, 2), torch.zeros(4, 2), torch.zeros(3).long(), matmul_dtype=torch.int32
        )


def test_bf16_matmuls_are_exact_on_bf16_representable_inputs() -> None:
    # Halves and small integers are exact in bf16 and so are their dot products here: the
    # mixed-precision logits equal the fp32 ones, hence the loss; only the softmax gradient is
    # rounded to bf16 before its two matmuls (relative error <= 2^-8 per entry).
    hidden = torch.tensor([[1.0, -0.5], [0.0, 2.0], [1.5, 1.0]])
    items = torch.tensor([[2.0, 0.0], [0.0, 5.0], [-1.0, 0.5], [0.5, 0.5]])
    targets = torch.tensor([0, 1, 3])
    grads = {}
    for dtype in (None, torch.bfloat16):
        h, e = hidden.clone().requires_grad_(), items.clone().requires_grad_()
        loss = full_softmax_cross_entropy(h, e, targets, chunk_rows=2, matmul_dtype=dtype)
        loss.backward()
        grads[dtype] = (loss.detach(), h.grad, e.grad)
    expected = F.cross_entropy(hidden @ items.T, targets)
    assert grads[None][0].item() == pytest.approx(expected.item(), rel=1e-6)
    assert grads[torch.bfloat16][0].item() == pytest.approx(expected.item(), rel=1e-6)
    # Rounding G = (softmax - onehot) / M and each product to bf16 (2^-8 relative each) moves a
    # gradient entry by at most 2 * 2^-8 * (|G| @ |E|) (dL/dh), 2 * 2^-8 * (|G|^T @ |H|) (dL/dE).
    probs = torch.softmax(hidden @ items.T, dim=1)
    g = (probs - F.one_hot(targets, 4)) / len(targets)  # (M, N)
    bounds = (2 * 2**-8 * g.abs() @ items.abs(), 2 * 2**-8 * g.abs().T @ hidden.abs())
    for fp32, bf16, bound in zip(grads[None][1:], grads[torch.bfloat16][1:], bounds):
        assert bf16.dtype == torch.float32  # gradients come back in the inputs' dtype
        assert torch.all((bf16 - fp32).abs() <= bound + 1e-7)
        assert not torch.equal(bf16, fp32)  # the gradient matmuls did run in bf16


def test_bf16_matmuls_stay_close_on_a_realistic_batch() -> None:
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(300, 16, generator=generator)
    items = torch.randn(500, 16, generator=generator) * 0.5
    targets = torch.randint(500, (300,), generator=generator)
    out = {}
    for dtype in (None, torch.bfloat16):
        h, e = hidden.clone().requires_grad_(), items.clone().requires_grad_()
        loss = full_softmax_cross_entropy(h, e, targets, matmul_dtype=dtype)
        loss.backward()
        out[dtype] = (loss.detach(), h.grad, e.grad)
    fp32, bf16 = out[None], out[torch.bfloat16]
    assert bf16[0].item() == pytest.approx(fp32[0].item(), rel=1e-3)
    for a, b in zip(fp32[1:], bf16[1:]):
        assert ((a - b).norm() / a.norm()).item() < 1e-2
