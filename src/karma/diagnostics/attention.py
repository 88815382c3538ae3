"""Collect the attention rows read at the readout position, per layer and head.

The readout position is where the encoder reads the interest embedding: `[INTEREST]` in search
mode, the last history item in recommendation mode (which has no `[INTEREST]` token).

Flash/SDPA kernels never materialize attention weights, so this module switches the backbone to
the eager implementation for the duration of one diagnostic call (`eager_attention`) and restores
the previous implementation afterwards, even on error. Training never goes through here.

The encoder that builds the inputs (continuous item tokens, prompt template, readout position) is the
model package's business; `collect_readout_attention` is the single adapter between the two: it
takes a `KarmaEncoder` (its `layout` + `inputs_embeds`) or any `ReadoutInputsBuilder`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from karma.data.dataset import Examples
from karma.model.backbone import unwrap_causal_lm


@dataclass(frozen=True)
class ReadoutInputs:
    """What the backbone reads for a batch of users, with the positions diagnostics look at."""

    inputs_embeds: torch.Tensor
    """(B, L, d) the embedded prompt, history tokens and readout token."""
    attention_mask: torch.Tensor
    """(B, L) 1 for real positions, 0 for padding."""
    readout_positions: torch.Tensor
    """(B,) int index of the readout position in each row (`[INTEREST]` or the last item)."""
    history_mask: torch.Tensor
    """(B, L) bool, True at the positions of history items."""


@dataclass(frozen=True)
class ReadoutAttention:
    """Attention from the readout position for U users, padded to a common length L."""

    weights: torch.Tensor
    """(layers, U, heads, L) float32; zero at padding and at positions after the readout."""
    attention_mask: torch.Tensor
    """(U, L) bool, True at real positions."""
    history_mask: torch.Tensor
    """(U, L) bool, True at history-item positions."""

    @property
    def num_layers(self) -> int:
        return self.weights.shape[0]

    @property
    def num_users(self) -> int:
        return self.weights.shape[1]

    @property
    def num_heads(self) -> int:
        return self.weights.shape[2]

    def save(self, path: str) -> None:
        torch.save(
            {
                "weights": self.weights,
                "attention_mask": self.attention_mask,
                "history_mask": self.history_mask,
            },
            path,
        )

    @classmethod
    def load(cls, path: str) -> ReadoutAttention:
        state = torch.load(path, map_location="cpu", weights_only=True)
        return cls(state["weights"], state["attention_mask"], state["history_mask"])


class ReadoutInputsBuilder(Protocol):
    """What `collect_readout_attention` needs from the encoder: the backbone and its inputs."""

    backbone: nn.Module

    def readout_inputs(self, examples: Examples) -> ReadoutInputs:
        """Inputs for these users' histories (+ queries), exactly as the encoder feeds them."""
        ...


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[nn.Module]:
    """Switch the HF model to eager attention (to get weights) and restore it on exit."""
    base = unwrap_causal_lm(model)
    config: Any = base.config
    previous = config._attn_implementation
    if previous == "eager":
        yield base
        return
    if hasattr(base, "set_attn_implementation"):
        base.set_attn_implementation("eager")
    else:  # older transformers: the implementation is read from the config at every forward
        config._attn_implementation = "eager"
    try:
        yield base
    finally:
        if hasattr(base, "set_attn_implementation"):
            base.set_attn_implementation(previous)
        else:
            config._attn_implementation = previous


@torch.no_grad()
def readout_attention(
    model: nn.Module,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    readout_positions: torch.Tensor,
) -> torch.Tensor:
    """Attention rows at `readout_positions` for every layer and head: (layers, B, heads, L).

    `inputs_embeds` (B, L, d), `attention_mask` (B, L), `readout_positions` (B,). Runs the
    decoder stack only (no LM head: its (B, L, vocab) logits would dominate the cost).
    """
    with eager_attention(model) as base:
        decoder = base.get_decoder() if hasattr(base, "get_decoder") else base
        was_training = decoder.training
        decoder.eval()
        try:
            out = decoder(
                inputs_embeds=inputs_embeds,
                attention_mask=attention_mask,
                output_attentions=True,
                use_cache=False,
            )
        finally:
            decoder.train(was_training)
    attentions = out.attentions  # layers x (B, heads, L, L)
    if attentions is None or any(a is None for a in attentions):
        raise RuntimeError(f"{type(base).__name__} returned no attention weights in eager mode")
    rows = torch.arange(inputs_embeds.shape[0], device=inputs_embeds.device)
    readout = readout_positions.to(inputs_embeds.device)
    per_layer = [a[rows, :, readout, :] for a in attentions]  # each (B, heads, L)
    return torch.stack(per_layer).float().cpu()  # (layers, B, heads, L)


def collect_batched(
    model: nn.Module,
    batches: Iterable[ReadoutInputs],
    total: int | None = None,
    progress: bool = True,
) -> ReadoutAttention:
    """Run `readout_attention` over batches (built lazily) and right-pad them to a common length."""
    weights, masks, histories = [], [], []
    for batch in tqdm(batches, desc="attention", unit="batch", total=total, disable=not progress):
        weights.append(
            readout_attention(
                model, batch.inputs_embeds, batch.attention_mask, batch.readout_positions
            )
        )  # (layers, B, heads, L_b)
        masks.append(batch.attention_mask.bool().cpu())
        histories.append(batch.history_mask.bool().cpu())
    if not weights:
        raise ValueError("batches: need at least one batch of users")
    length = max(w.shape[-1] for w in weights)

    def pad(t: torch.Tensor) -> torch.Tensor:
        return nn.functional.pad(t, (0, length - t.shape[-1]))

    return ReadoutAttention(
        weights=torch.cat([pad(w) for w in weights], dim=1),  # (layers, U, heads, L)
        attention_mask=torch.cat([pad(m) for m in masks]),  # (U, L)
        history_mask=torch.cat([pad(h) for h in histories]),  # (U, L)
    )


def encoder_readout_inputs(encoder: Any, examples: Examples) -> ReadoutInputs:
    """`ReadoutInputs` from a `karma.model.encoder.KarmaEncoder`, through its own layout code.

    Uses `encoder.layout(histories, queries)` (instruction, [query], one continuous token per
    history item, [INTEREST] in search mode; right-padded) and `encoder.inputs_embeds(layout)`.
    In recommendation mode the readout is the last history item itself, so it is a history
    position too.
    """
    queries = examples.queries if getattr(encoder, "mode", "rec") == "search" else None
    layout = encoder.layout(examples.histories, queries)
    return ReadoutInputs(
        inputs_embeds=encoder.inputs_embeds(layout),  # (B, T, d)
        attention_mask=layout.attention_mask,  # (B, T)
        readout_positions=layout.readout_positions,  # (B,)
        history_mask=layout.item_ids >= 0,  # (B, T)
    )


def collect_readout_attention(
    model: ReadoutInputsBuilder | Any,
    examples: Examples,
    batch_size: int = 8,
    progress: bool = True,
) -> ReadoutAttention:
    """Readout attention for every user in `examples`, built through the encoder's own inputs.

    The adapter between diagnostics and the model package. `model` is either a `KarmaEncoder`
    (inputs built by `encoder_readout_inputs`) or any object with a `readout_inputs(examples)`
    method (`ReadoutInputsBuilder`); `model.backbone` is the (possibly peft-wrapped) causal LM.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    if hasattr(model, "readout_inputs"):
        build = model.readout_inputs
    elif hasattr(model, "layout") and hasattr(model, "inputs_embeds"):

        def build(chunk: Examples) -> ReadoutInputs:
            return encoder_readout_inputs(model, chunk)

    else:
        raise TypeError(f"{type(model).__name__} has neither readout_inputs() nor layout()")
    starts = range(0, len(examples), batch_size)

    def batches() -> Iterator[ReadoutInputs]:
        for start in starts:
            chunk = examples.subset(list(range(start, min(start + batch_size, len(examples)))))
            with torch.no_grad():
                yield build(chunk)

    return collect_batched(model.backbone, batches(), total=len(starts), progress=progress)
