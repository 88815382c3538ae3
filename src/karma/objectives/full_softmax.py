"""Full-catalog softmax cross-entropy, fused with its logits matmul and computed in row chunks.

    L = mean_m [ logsumexp_j (h_m · e_j) - h_m · e_{y_m} ]
    dL/dh_m = (softmax_m - onehot(y_m)) @ E / M,    dL/dE = sum_m (softmax_m - onehot(y_m))^T h_m / M

`F.cross_entropy(hidden @ items.T, targets)` writes the (M, N) logits to memory and then reads and
writes tensors of that size about six more times (log-softmax, its saved output, the zero-filled
gradient, the log-softmax backward): at SASRec+'s M ≈ 14,000 target positions × N = 3,706 items
that is 200 MiB a pass, and on a CPU those passes cost more than the three matmuls themselves.
Here the logits are made `chunk_rows` rows at a time, small enough to stay in cache; each chunk's
softmax becomes its gradient in place and both gradients are accumulated in the forward pass, so
the backward only scales them by the incoming gradient. Same three matmuls (forward, dL/dh,
dL/dE), same result as the unfused expression up to float rounding (`tests/objectives/
test_full_softmax.py`).

The gradients are computed eagerly, so the fused loss suits a plain `loss.backward()` (no
double backward). It runs in float32 (or float64 inputs' float64) even under autocast: the logits of
a full catalog are where bf16 loses most. `matmul_dtype=torch.bfloat16` is the mixed-precision
option: the three matmuls read bf16 copies of the hidden states, the items and the softmax gradient
(each product accumulated in fp32 by the kernel, its result rounded to bf16), while the softmax, the
loss and the gradients summed over chunks stay in float32. On a CPU with AVX512-BF16 or AMX, or a
GPU, those matmuls run several times faster (`benchmarks/sasrec_epoch.py`).
"""

from __future__ import annotations

from typing import Any

import torch

DEFAULT_CHUNK_ROWS = 128  # 128 × 3,706 fp32 logits = 1.8 MiB; the fastest of 64-512 on ml-1m


def full_softmax_cross_entropy(
    hidden: torch.Tensor,
    items: torch.Tensor,
    targets: torch.Tensor,
    excluded: torch.Tensor | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    matmul_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of `targets` (M,) against softmax over all of `items` (N, D).

    hidden (M, D) query vectors, items (N, D) item vectors (score = dot product), targets (M,)
    row indices into items, excluded (N,) bool: items given logit -inf (never a negative; no
    target may be excluded). Equals `F.cross_entropy((hidden @ items.T).masked_fill(excluded,
    -inf), targets)`. matmul_dtype: operand dtype of the three matmuls (None = the float32
    compute dtype; torch.bfloat16 = mixed precision, softmax and sums still in float32).
    """
    if hidden.ndim != 2 or items.ndim != 2 or hidden.shape[1] != items.shape[1]:
        raise ValueError(
            f"hidden (M, D) and items (N, D) expected, got {hidden.shape}, {items.shape}"
        )
    if targets.shape != (hidden.shape[0],):
        raise ValueError(f"targets must be ({hidden.shape[0]},), got {tuple(targets.shape)}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    if matmul_dtype is not None and not matmul_dtype.is_floating_point:
        raise ValueError(f"matmul_dtype must be a floating dtype, got {matmul_dtype}")
    return _FullSoftmaxCrossEntropy.apply(
        hidden, items, targets, excluded, chunk_rows, matmul_dtype
    )


class _FullSoftmaxCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,
        items: torch.Tensor,
        targets: torch.Tensor,
        excluded: torch.Tensor | None,
        chunk_rows: int,
        matmul_dtype: torch.dtype | None,
    ) -> torch.Tensor:
        with torch.autocast(hidden.device.type, enabled=False):
            dtype = torch.promote_types(
                torch.promote_types(hidden.dtype, items.dtype), torch.float32
            )
            low = matmul_dtype is not None and matmul_dtype != dtype  # mixed-precision matmuls
            h_all = hidden.detach().to(matmul_dtype if low else dtype)  # (M, D) matmul operand
            e = items.detach().to(dtype)  # (N, D)
            e_mm = e.to(matmul_dtype) if low else e  # (N, D) matmul operand
            need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
            grad_hidden = (  # (M, D)
                torch.empty(hidden.shape, dtype=dtype, device=hidden.device) if need_grad else None
            )
            grad_items = torch.zeros_like(e) if need_grad else None  # (N, D)
            total = torch.zeros((), dtype=torch.float64, device=h_all.device)
            rows = h_all.shape[0]
            for start in range(0, rows, chunk_rows):
                h = h_all[start : start + chunk_rows]  # (C, D)
                y = targets[start : start + chunk_rows]  # (C,)
                logits = h @ e_mm.T  # (C, N): bf16 from a mixed-precision matmul, else float32
                if excluded is not None:
                    logits.masked_fill_(excluded, float("-inf"))
                target_logit = logits.gather(1, y[:, None]).to(dtype)  # (C, 1)
                peak = logits.amax(dim=1, keepdim=True).to(dtype)  # (C, 1)
                # unnormalised softmax in float32 (in place, or widened from bf16 in the same pass)
                logits = (logits.sub_(peak) if not low else torch.sub(logits, peak)).exp_()
                norm = logits.sum(dim=1, keepdim=True)  # (C, 1)
                total += (norm.log() + peak - target_logit).sum(dtype=torch.float64)
                if grad_hidden is None or grad_items is None:
                    continue
                # softmax - onehot, averaged over all M rows: the gradient wrt the logits, as
                # (exp - norm·onehot) · 1/(norm·M) in place (a multiply is cheaper than a divide)
                logits.scatter_add_(1, y[:, None], -norm)
                logits.mul_(1.0 / (norm * rows))
                if low:  # bf16 operands, the products added into the float32 gradients
                    g = logits.to(matmul_dtype)  # (C, N)
                    grad_hidden[start : start + chunk_rows] = g @ e_mm  # (C, D)
                    grad_items += g.T @ h  # (N, D)
                    continue
                torch.mm(logits, e, out=grad_hidden[start : start + chunk_rows])  # (C, D)
                torch.addmm(grad_items, logits.T, h, out=grad_items)  # (N, D); FLOP counters see it
        if grad_hidden is not None and grad_items is not None:
            ctx.save_for_backward(grad_hidden.to(hidden.dtype), grad_items.to(items.dtype))
        return (total / max(rows, 1)).to(hidden.dtype)

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        grad_hidden, grad_items = ctx.saved_tensors
        return grad_hidden * grad_loss, grad_items * grad_loss, None, None, None, None
