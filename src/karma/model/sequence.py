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
from itertools import pairwise

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


def length_groups(lengths: np.ndarray, max_groups: int) -> list[np.ndarray]:
    """Split a batch's rows into at most `max_groups` groups of similar length, in length order.

    A padded pass costs rows x its longest row; this picks the contiguous cut of the rows sorted
    by length that minimises Σ_g |g| · max(g) (dynamic programming over the B sorted rows), so
    one long history no longer makes every short one pay for its length. Returns each group's
    row indices into `lengths`; every row is in exactly one group.
    """
    if max_groups < 1:
        raise ValueError(f"max_groups must be >= 1, got {max_groups}")
    order = np.argsort(np.asarray(lengths), kind="stable")
    sorted_lengths = np.asarray(lengths)[order].astype(np.int64)
    n = len(order)
    groups = min(max_groups, n)
    if groups <= 1:
        return [order]
    # cost[g][j]: the cheapest cut of the first j sorted rows into g groups; a group of rows
    # i..j-1 costs (j - i) * sorted_lengths[j - 1] (its longest row is its last).
    inf = np.iinfo(np.int64).max // 4
    cost = np.full((groups + 1, n + 1), inf, dtype=np.int64)
    cut = np.zeros((groups + 1, n + 1), dtype=np.int64)
    cost[0, 0] = 0
    for g in range(1, groups + 1):
        for j in range(1, n + 1):
            starts = np.arange(j)  # the group is rows starts..j-1
            options = cost[g - 1, :j] + (j - starts) * sorted_lengths[j - 1]
            best = int(np.argmin(options))
            cost[g, j], cut[g, j] = options[best], best
    g = int(np.argmin(cost[1:, n])) + 1  # fewer groups when more would not save anything
    bounds = [n]
    for level in range(g, 0, -1):
        bounds.append(int(cut[level, bounds[-1]]))
    bounds.reverse()
    return [order[a:b] for a, b in pairwise(bounds) if b > a]
