"""L_gen: history-conditioned semantic generation (KARMA objective 2, train only).

    L_gen = -1/N Σ_t log p_LLM( y_t | instruction, q, x_{i_1..i_n}, y_<t ),   y = text of i+

The prefix is exactly what the encoder fed the LLM up to a readout position (instruction tokens,
query tokens, one continuous token per history item); the LLM then continues with the target
item's text (title and category words), teacher-forced. It anchors training to the LLM's native
next-token distribution, so the history tokens stay meaningful to the LLM.

The objective also tokenizes the catalog's texts once (`tokenize_item_texts`) and cuts per-readout
prefixes out of an all-prefix batch (`prefixes_at`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from karma.objectives.base import LossOutput
from karma.objectives.lm_head import target_token_nll


def tokenize_item_texts(
    tokenizer: Any, texts: Sequence[str], max_tokens: int, add_eos: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token table of the catalog's texts: (ids (N, Y), mask (N, Y)), right-padded, Y <= max_tokens.

    Ends each text with EOS when there is room, so the decoder also learns where an item's text
    stops. Built once per dataset; a batch indexes it with its target item ids.
    """
    eos = getattr(tokenizer, "eos_token_id", None) if add_eos else None
    rows: list[list[int]] = []
    for text in texts:
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        if eos is not None:
            ids = [*ids[: max_tokens - 1], int(eos)]
        rows.append(ids[:max_tokens])
    width = max(1, max((len(r) for r in rows), default=1))
    token_ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for row, ids in enumerate(rows):
        token_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[row, : len(ids)] = True
    return token_ids, mask


def prefixes_at(
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    sequence_index: torch.Tensor,
    readout_position: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The prefixes `sequence[:readout + 1]` of an all-prefix batch: (embeds (M, T, d), mask (M, T)).

    inputs_embeds (B, T, d) and attention_mask (B, T) are the encoder's LLM input; sample m takes
    row `sequence_index[m]` up to and including column `readout_position[m]` (both (M,) long).
    Positions after the readout are masked, not cut, so the tensor stays rectangular.
    """
    columns = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device)  # (T,)
    keep = columns.unsqueeze(0) <= readout_position.unsqueeze(1)  # (M, T)
    mask = attention_mask[sequence_index].bool() & keep
    return inputs_embeds[sequence_index], mask


class GenerationObjective(nn.Module):
    """L_gen on plain tensors; the decoder (the encoder's own LLM) is passed to each call.

    The decoder is not a submodule: it belongs to the encoder, and registering it twice would
    duplicate the backbone in every checkpoint. This module has no parameters.
    """

    def forward(
        self,
        decoder: nn.Module,
        prefix_embeds: torch.Tensor,
        prefix_mask: torch.Tensor,
        target_ids: torch.Tensor,
        target_mask: torch.Tensor,
    ) -> LossOutput:
        """prefix_embeds (B, P, d), prefix_mask (B, P), target_ids (B, Y), target_mask (B, Y)."""
        loss, num_tokens = target_token_nll(
            decoder, prefix_embeds, prefix_mask, target_ids, target_mask
        )
        return LossOutput(loss, {"gen_nll": float(loss.detach()), "gen_tokens": float(num_tokens)})
