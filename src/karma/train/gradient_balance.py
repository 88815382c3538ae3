"""Per-objective gradients on shared parameters: measure them, and keep knowledge from outvoting action.

KARMA's loss is L = L_act + Σ_k λ_k L_k. Its terms meet on the *shared* parameters: those that
receive gradient from the action term and from at least one knowledge term in the same micro-batch
(the LLM's trainable weights, P_item, the item-ID table, [INTEREST], W_u; never W_v, the action's
temperature or a knowledge head). On them, with g_a = ∇L_act and g_k = ∇(λ_k L_k) restricted to the
shared parameters, viewed as one flat vector:

    clip_ratio:  g_k <- g_k · min(1, ρ ||g_a|| / ||g_k||)       so ||g_k|| <= ρ ||g_a||
    pcgrad:      g_k <- g_k - min(0, <g_k, g_a>) / ||g_a||² · g_a   (the conflicting component out)

Protected parameters (`protected`, e.g. the item tokens under `knowledge.protect_item_tokens`)
get no knowledge gradient at all: only the action term trains them while the action term runs;
the control above then acts on the other shared parameters. Non-shared parameters keep every
term's own gradient. The control runs per micro-batch (each
micro-batch's knowledge gradients are measured against that micro-batch's action gradient) and the
controlled sum, times `scale`, is added to `.grad`, so gradient accumulation works as with a plain
backward. PCGrad here projects each knowledge gradient against the action gradient only (not
against each other): the action objective is the one a regularizer must not fight.

Cost: one `torch.autograd.grad` call per term (a backward pass each, the graph retained in between)
instead of one backward. A term's pass covers only the graph it reads: under control the KARMA
task gives L_rec and L_flow e_u from a forward over their few sampled sequences
(`karma.train.knowledge_inputs.interest_at`), so their passes do not re-traverse the whole batch's
LLM graph. Measuring without control adds those calls to the ordinary backward, which still
computes the gradient, so measuring leaves training bit-identical.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

GradControl = Literal["none", "clip_ratio", "pcgrad"]
REFERENCE = "action"  # the term the others are measured and controlled against

Grads = list[torch.Tensor | None]  # one entry per parameter; None = the term does not reach it


def flat_norm(grads: Grads, mask: list[bool]) -> torch.Tensor:
    """||g|| over the masked parameters (float32 scalar; 0 when none)."""
    squares = [g.float().pow(2).sum() for g, m in zip(grads, mask) if m and g is not None]
    return torch.stack(squares).sum().sqrt() if squares else torch.zeros(())


def flat_dot(a: Grads, b: Grads, mask: list[bool]) -> torch.Tensor:
    """<a, b> over the masked parameters (float32 scalar)."""
    dots = [
        (x.float() * y.float()).sum()
        for x, y, m in zip(a, b, mask)
        if m and x is not None and y is not None
    ]
    return torch.stack(dots).sum() if dots else torch.zeros(())


def clip_to_ratio(
    grads: Grads, reference_norm: torch.Tensor, ratio: float, mask: list[bool]
) -> Grads:
    """Scale the masked part of `grads` so its norm is at most `ratio * reference_norm`."""
    norm = flat_norm(grads, mask)
    if float(norm) == 0.0:
        return grads
    factor = torch.clamp(ratio * reference_norm / norm, max=1.0)
    return [g * factor if m and g is not None else g for g, m in zip(grads, mask)]


def project_conflict(grads: Grads, reference: Grads, mask: list[bool]) -> Grads:
    """PCGrad: remove from the masked part of `grads` its component along `reference` when the two
    point against each other (negative dot product); unchanged otherwise."""
    dot = flat_dot(grads, reference, mask)
    ref_sq = flat_norm(reference, mask).pow(2)
    if float(dot) >= 0.0 or float(ref_sq) == 0.0:
        return grads
    coefficient = dot / ref_sq
    out: Grads = []
    for g, r, m in zip(grads, reference, mask):
        if not m or r is None:
            out.append(g)
        else:
            out.append((g if g is not None else torch.zeros_like(r)) - coefficient * r)
    return out


class GradientBalancer:
    """Backpropagates a loss given as named terms, measuring and controlling them on shared parameters.

    `params`: every trainable parameter (all get their gradient). `candidates`: the subset that
    can be shared; a candidate is shared in a micro-batch when the reference term and some other
    term both reach it (the rest only ever carry one kind of gradient).
    """

    def __init__(
        self,
        params: list[nn.Parameter],
        candidates: list[nn.Parameter],
        control: GradControl = "none",
        ratio: float = 1.0,
        protected: list[nn.Parameter] | None = None,
    ) -> None:
        if control not in ("none", "clip_ratio", "pcgrad"):
            raise ValueError(f"control: must be none, clip_ratio or pcgrad, got {control!r}")
        if not ratio > 0:
            raise ValueError(f"ratio: must be > 0, got {ratio}")
        self.params = params
        ids = {id(p) for p in candidates}
        self.candidate = [id(p) in ids for p in params]
        kept = {id(p) for p in protected or []}
        self.protected = [id(p) in kept for p in params]
        self.control = control
        self.ratio = ratio

    def backward(
        self, loss: torch.Tensor, terms: dict[str, torch.Tensor], scale: float, measure: bool
    ) -> dict[str, float]:
        """Add `scale * ∇loss` (terms controlled) to `.grad`; return the measured norms if asked.

        `loss` must equal `sum(terms.values())`. Without the reference term (the warm-up stage), or
        with nothing to control or measure, this is a plain `(loss * scale).backward()`.
        Parts (per micro-batch, unscaled): gradnorm_<term> (||g|| on the shared parameters,
        before control), gradcos_<term> (cosine with g_action) and, under control or
        protection, gradnorm_<term>_controlled (on the shared parameters, after both).
        """
        controlled = (self.control != "none" or any(self.protected)) and len(terms) > 1
        if REFERENCE not in terms or not (controlled or measure):
            (loss * scale).backward()
            return {}
        names = list(terms)
        grads: dict[str, Grads] = {}
        for i, name in enumerate(names):
            keep = i < len(names) - 1 or not controlled  # a plain backward follows
            grads[name] = list(
                torch.autograd.grad(terms[name], self.params, retain_graph=keep, allow_unused=True)
            )
        shared = self._shared(grads)
        parts = self._measure(grads, shared) if measure else {}
        if not controlled:
            (loss * scale).backward()  # the very gradient a run without measuring gets
            return parts
        reference = grads[REFERENCE]
        balanced = [s and not p for s, p in zip(shared, self.protected)]
        reference_norm = flat_norm(reference, balanced)
        for name in names:
            if name == REFERENCE:
                continue
            grads[name] = [None if p else g for g, p in zip(grads[name], self.protected)]
            if self.control == "clip_ratio":
                grads[name] = clip_to_ratio(grads[name], reference_norm, self.ratio, balanced)
            elif self.control == "pcgrad":
                grads[name] = project_conflict(grads[name], reference, balanced)
            if measure:
                parts[f"gradnorm_{name}_controlled"] = float(flat_norm(grads[name], shared))
        self._accumulate(list(grads.values()), scale)
        return parts

    def _shared(self, grads: dict[str, Grads]) -> list[bool]:
        """Candidates the reference term reaches and some other term reaches too (with the
        reference alone, as in an action-only run: every candidate it reaches)."""
        others = [g for name, g in grads.items() if name != REFERENCE]
        shared = []
        for j, candidate in enumerate(self.candidate):
            by_other = not others or any(g[j] is not None for g in others)
            shared.append(candidate and grads[REFERENCE][j] is not None and by_other)
        return shared

    def _measure(self, grads: dict[str, Grads], shared: list[bool]) -> dict[str, float]:
        norms = {name: flat_norm(g, shared) for name, g in grads.items()}
        parts = {f"gradnorm_{name}": float(norm) for name, norm in norms.items()}
        for name, g in grads.items():
            if name == REFERENCE:
                continue
            product = float(norms[name] * norms[REFERENCE])
            dot = float(flat_dot(g, grads[REFERENCE], shared))
            parts[f"gradcos_{name}"] = dot / product if product > 0 else 0.0
        return parts

    def _accumulate(self, term_grads: list[Grads], scale: float) -> None:
        """`.grad += scale * Σ_terms g` for every parameter some term reaches."""
        for j, param in enumerate(self.params):
            total: torch.Tensor | None = None
            for grads in term_grads:
                g = grads[j]
                if g is not None:
                    total = g.clone() if total is None else total + g
            if total is None:
                continue
            total = total * scale
            param.grad = total.to(param.dtype) if param.grad is None else param.grad + total
