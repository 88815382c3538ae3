"""Teacher-forced text loss of a Hugging Face causal LM, with the LM head only where it is needed.

Every knowledge objective (generation, reconstruction, semantic warm-up) asks the same question:
"given these prefix embeddings, how likely is this target text?". The answer is the mean token
negative log-likelihood of the target tokens. With a 49k vocabulary the LM head is the expensive
part of a small decoder (a full `(B, L, V)` logits tensor for a 60-position sequence is ~12 MB per
row), so `target_token_nll` runs the decoder *trunk* once on `[prefix; embed(target)]` and applies
the head only to the hidden states that predict a target token. `full_logits_target_token_nll`
is the slow reference (full logits, `-100`-masked cross-entropy) the tests compare it against.

Padding: the prefix and the target may each be padded anywhere (left or right). Both paths first
*compact* every row to `[real prefix; real target; pads]` (a stable sort on the mask), so the real
tokens sit at positions `0..n-1` of their row, RoPE positions need no `position_ids`, and no query
row is fully masked (left padding makes the first query attend to nothing, NaN in some kernels).

Cheaper variant (not implemented, on purpose): in all-prefix training the encoder's main pass has
already computed keys/values for every history position, so the generation loss at readout `r`
could reuse that pass's KV cache cropped at `r` and recompute only the `Y` target tokens. We do
not, because (1) one cache is shared by the whole sequence, so each sampled readout needs its own
cropped copy (`DynamicCache.crop` is in place), i.e. `positions_per_sequence` copies of every
layer's cache per sequence; (2) the cache must keep its autograd graph for L_gen to train the
prefix, which `use_cache=True` training paths and gradient checkpointing do not promise; (3) the
saving is at most `P / (P + Y)` of the trunk cost of the sampled positions, and sampling already
bounds that cost. Revisit if profiling shows the generation trunk dominating a step.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from karma.errors import ConfigError
from karma.model.backbone import unwrap_causal_lm

IGNORE_INDEX = -100
"""Label value that marks a position with no target token (the Hugging Face convention)."""


def decoder_parts(model: nn.Module) -> tuple[nn.Module, nn.Module, nn.Module]:
    """`(trunk, lm_head, input_embeddings)` of a Hugging Face causal LM (or a PeftModel around one).

    `trunk` maps `inputs_embeds` to the last hidden states (final norm included); `lm_head` maps
    hidden states to vocabulary logits; `input_embeddings` maps token ids to input embeddings
    (any embedding scale, e.g. Gemma's sqrt(d), is inside that module).
    """
    causal_lm = unwrap_causal_lm(model)
    trunk = getattr(causal_lm, "base_model", None)
    lm_head = (
        causal_lm.get_output_embeddings() if hasattr(causal_lm, "get_output_embeddings") else None
    )
    if trunk is None or trunk is causal_lm or lm_head is None:
        raise TypeError(
            f"{type(causal_lm).__name__} is not a Hugging Face causal LM with an LM head"
        )
    return trunk, lm_head, causal_lm.get_input_embeddings()


def _logits(lm_head: nn.Module, hidden: torch.Tensor, config: Any) -> torch.Tensor:
    """LM head plus the final-logit soft-capping some families (Gemma 2) apply in `forward`."""
    logits = lm_head(hidden)
    cap = getattr(config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def compact_prefix_and_target(
    prefix_embeds: torch.Tensor,
    prefix_mask: torch.Tensor,
    target_embeds: torch.Tensor,
    target_ids: torch.Tensor,
    target_mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows `[real prefix; real target; pads]`: (embeds (B, L, d), mask (B, L), labels (B, L)).

    L = the longest row's real length (at most P + Y).

    `labels[b, j]` is the target token at position `j` (IGNORE_INDEX on prefix and pads), so the
    hidden state at `j - 1` predicts it.
    """
    embeds = torch.cat([prefix_embeds, target_embeds.to(prefix_embeds.dtype)], dim=1)  # (B, P+Y, d)
    mask = torch.cat([prefix_mask.bool(), target_mask.bool()], dim=1)  # (B, P+Y)
    prefix_labels = torch.full_like(prefix_mask, IGNORE_INDEX, dtype=torch.long)
    target_labels = target_ids.long().masked_fill(~target_mask.bool(), IGNORE_INDEX)
    labels = torch.cat([prefix_labels, target_labels], dim=1)  # (B, P+Y)
    # Stable sort on "is padding": real tokens first, in their original order.
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # (B, P+Y)
    embeds = embeds.gather(1, order.unsqueeze(-1).expand_as(embeds))
    mask, labels = mask.gather(1, order), labels.gather(1, order)
    # Columns past the longest row are padding everywhere: drop them (prefixes cut out of an
    # all-prefix batch are masked, not cut, so this often removes most of the history width).
    length = max(int(mask.sum(1).max()), 1)
    return embeds[:, :length], mask[:, :length], labels[:, :length]


def target_token_nll(
    model: nn.Module,
    prefix_embeds: torch.Tensor,
    prefix_mask: torch.Tensor,
    target_ids: torch.Tensor,
    target_mask: torch.Tensor,
) -> tuple[torch.Tensor, int]:
    """Mean NLL of the target tokens given the prefix, teacher-forced: `(loss, num_target_tokens)`.

    `loss = -1/N Σ_{b,t: target_mask} log p(y_{b,t} | prefix_b, y_{b,<t})`. Runs the trunk once on
    `[prefix; embed(target[:-1])]` and the LM head on the N labelled positions only.
    prefix_embeds (B, P, d), prefix_mask (B, P), target_ids (B, Y), target_mask (B, Y).
    """
    trunk, lm_head, input_embeddings = decoder_parts(model)
    target_embeds = input_embeddings(target_ids)  # (B, Y, d)
    embeds, mask, labels = compact_prefix_and_target(
        prefix_embeds, prefix_mask, target_embeds, target_ids, target_mask
    )
    # The last position only ever predicts past the end of the row; drop it from the trunk input.
    hidden = trunk(
        inputs_embeds=embeds[:, :-1], attention_mask=mask[:, :-1].long(), use_cache=False
    ).last_hidden_state  # (B, L-1, d)
    next_labels = labels[:, 1:]  # (B, L-1): the token that hidden[:, j] predicts
    predicting = next_labels != IGNORE_INDEX
    num_tokens = int(predicting.sum())
    if num_tokens == 0:
        return hidden.sum() * 0.0, 0
    logits = _logits(lm_head, hidden[predicting], unwrap_causal_lm(model).config)  # (N, V)
    loss = F.cross_entropy(logits.float(), next_labels[predicting])
    return loss, num_tokens


def full_logits_target_token_nll(
    model: nn.Module,
    prefix_embeds: torch.Tensor,
    prefix_mask: torch.Tensor,
    target_ids: torch.Tensor,
    target_mask: torch.Tensor,
) -> torch.Tensor:
    """Slow reference for `target_token_nll`: the model's full forward, full-sequence logits."""
    _, _, input_embeddings = decoder_parts(model)
    embeds, mask, labels = compact_prefix_and_target(
        prefix_embeds, prefix_mask, input_embeddings(target_ids), target_ids, target_mask
    )
    logits = model(inputs_embeds=embeds, attention_mask=mask.long(), use_cache=False).logits
    vocab = logits.shape[-1]  # logits: (B, L, V)
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, vocab).float(),
        labels[:, 1:].reshape(-1),
        ignore_index=IGNORE_INDEX,
    )


def _tuner_layers(model: nn.Module) -> list[nn.Module]:
    """The peft adapter layers (LoRA etc.) inside `model`, however they were added."""
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:  # peft not installed: no adapters
        return []
    return [module for module in model.modules() if isinstance(module, BaseTunerLayer)]


def has_lora_adapters(model: nn.Module) -> bool:
    """Whether `model` carries peft adapters that can be switched off."""
    return bool(_tuner_layers(model))


@contextmanager
def adapters_disabled(
    model: nn.Module, field_name: str = "reconstruction_decoder"
) -> Iterator[None]:
    """Run the base model with its LoRA adapters off (the frozen pretrained decoder).

    Works for a `peft.PeftModel`, for `inject_adapter_in_model` (karma's backbone loader) and for
    `model.add_adapter`: every peft adapter layer is switched off and restored on exit. A backbone
    with no trainable weight already is the frozen base and runs as it is. A fully fine-tuned model
    has no frozen base (keeping a second copy would double the backbone's memory), so it is
    rejected with a `ConfigError` naming `field_name`.
    """
    layers = _tuner_layers(model)
    if layers:
        was_disabled = [bool(layer.disable_adapters) for layer in layers]
        # peft's enable_adapters also flips the adapters' requires_grad; put the flags back as found.
        trainable = {param: param.requires_grad for layer in layers for param in layer.parameters()}
        for layer in layers:
            layer.enable_adapters(False)
        try:
            yield
        finally:
            for layer, disabled in zip(layers, was_disabled):
                layer.enable_adapters(not disabled)
            for param, requires_grad in trainable.items():
                param.requires_grad_(requires_grad)
        return
    if not any(p.requires_grad for p in model.parameters()):
        yield  # an untuned (frozen) backbone already is the frozen base
        return
    raise ConfigError(
        f"knowledge.{field_name}: 'frozen_base' needs a LoRA backbone (the frozen base is the "
        "model with its adapters off); with full fine-tuning use 'shared'"
    )
