"""Laying out a batch of users as LLM input sequences (index tensors only; no embeddings yet).

Every row is `[instruction tokens] [query tokens] x_1 … x_n [INTEREST]`, right-padded (with
`query_last`: `[instruction tokens] x_1 … x_n [query tokens] [INTEREST]`):

- recommendation mode (`with_interest=False`): no `[INTEREST]`; the hidden state at item position
  t predicts item t+1, so one causal pass trains every prefix (as SASRec and HLLM do). Inference
  reads out at the last item position, which is exactly the training readout of the full prefix.
- search mode (`with_interest=True`): the query describes one target, so the row ends in a learned
  `[INTEREST]` token and is read out there (one target per sequence, in training and inference).

Right padding keeps every real token at positions 0..len-1; with causal attention no real token
sees the padding, so a user's embedding does not depend on who else is in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

NO_INDEX = -1


@dataclass
class SequenceLayout:
    """Index tensors describing a batch of B rows of length T (padding = NO_INDEX / False)."""

    token_ids: torch.Tensor  # (B, T) int64 text token id, NO_INDEX elsewhere
    item_ids: torch.Tensor  # (B, T) int64 item index at item positions, NO_INDEX elsewhere
    interest: torch.Tensor  # (B, T) bool, True at the [INTEREST] position
    attention_mask: torch.Tensor  # (B, T) int64, 1 = real position
    item_positions: torch.Tensor  # (B, n_max) int64 position of history item k, NO_INDEX = padding
    readout_positions: torch.Tensor  # (B,) int64 last real position (last item or [INTEREST])

    @property
    def item_mask(self) -> torch.Tensor:
        """(B, n_max) bool, True where the row has a k-th history item."""
        return self.item_positions >= 0

    def to(self, device: torch.device | str) -> SequenceLayout:
        return SequenceLayout(**{k: v.to(device) for k, v in self.__dict__.items()})


def layout_batch(
    instruction_ids: list[int],
    query_ids: list[list[int]] | None,
    histories: list[np.ndarray],
    with_interest: bool,
    query_last: bool = False,
) -> SequenceLayout:
    """Index layout for B users: shared instruction, per-user query tokens and item histories."""
    batch = len(histories)
    queries = query_ids if query_ids is not None else [[] for _ in range(batch)]
    lengths = [
        len(instruction_ids) + len(q) + len(h) + int(with_interest)
        for q, h in zip(queries, histories)
    ]
    if min(lengths, default=1) == 0:
        raise ValueError("a sequence has no positions: give an instruction, a query or a history")
    width = max(lengths)
    n_max = max((len(h) for h in histories), default=0)
    token_ids = np.full((batch, width), NO_INDEX, dtype=np.int64)
    item_ids = np.full((batch, width), NO_INDEX, dtype=np.int64)
    interest = np.zeros((batch, width), dtype=bool)
    item_positions = np.full((batch, n_max), NO_INDEX, dtype=np.int64)
    num_instruction = len(instruction_ids)
    token_ids[:, :num_instruction] = instruction_ids
    for row, (query, history) in enumerate(zip(queries, histories)):
        start = num_instruction + (0 if query_last else len(query))  # first history position
        end = start + len(history)
        query_start = end if query_last else num_instruction
        token_ids[row, query_start : query_start + len(query)] = query
        item_ids[row, start:end] = history
        item_positions[row, : len(history)] = np.arange(start, end)
        if with_interest:
            interest[row, lengths[row] - 1] = True
    lengths_arr = np.asarray(lengths, dtype=np.int64)
    attention_mask = (np.arange(width)[None, :] < lengths_arr[:, None]).astype(np.int64)
    return SequenceLayout(
        token_ids=torch.from_numpy(token_ids),
        item_ids=torch.from_numpy(item_ids),
        interest=torch.from_numpy(interest),
        attention_mask=torch.from_numpy(attention_mask),
        item_positions=torch.from_numpy(item_positions),
        readout_positions=torch.from_numpy(lengths_arr - 1),
    )
