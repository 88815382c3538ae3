"""Full-catalog ranking by dot product, in chunks of users and of items.

Scores are `user_vectors @ item_vectors.T`, computed one (user chunk x item chunk) block at a time
so no block larger than `max_block` scores is ever materialised: a 1M-item catalog is ranked with
the same memory as a 4k-item one. Per user we keep only the counts that `karma.eval.metrics` needs
(candidates above / tied with the target), or a running top-k list.

Excluded items (the user's history, by default) are removed from the candidates; the target itself
is never excluded, even when the user clicked it before (repeat consumption is still a hit).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from karma.eval.metrics import TargetRanks

DEFAULT_MAX_BLOCK = 1 << 24
"""Largest score block (users x items) held at once: 16M float32 = 64 MiB."""


def _chunk_sizes(num_users: int, num_items: int, max_block: int) -> tuple[int, int]:
    """User and item chunk sizes whose product stays within `max_block`."""
    item_chunk = min(num_items, max(1, max_block // max(1, min(num_users, 1024))))
    user_chunk = max(1, min(num_users, max_block // max(1, item_chunk)))
    return user_chunk, item_chunk


def _check_finite(name: str, matrix: np.ndarray) -> None:
    # A NaN score compares False with everything, which would silently rank the target first.
    if not np.isfinite(matrix).all():
        raise ValueError(f"{name} contain NaN or infinite values")


def _exclusion_pairs(
    exclude: Sequence[np.ndarray] | None,
    users: range,
    targets: np.ndarray | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, items) of excluded candidates for the users in `users` (rows relative to chunk)."""
    if exclude is None:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    rows, cols = [], []
    for row, u in enumerate(users):
        items = np.unique(np.asarray(exclude[u], dtype=np.int64))
        if targets is not None:
            items = items[items != targets[u]]
        rows.append(np.full(len(items), row, dtype=np.int64))
        cols.append(items)
    return (
        torch.from_numpy(np.concatenate(rows)) if rows else torch.zeros(0, dtype=torch.long),
        torch.from_numpy(np.concatenate(cols)) if cols else torch.zeros(0, dtype=torch.long),
    )


def _in_chunk(
    rows: torch.Tensor, cols: torch.Tensor, start: int, stop: int
) -> tuple[torch.Tensor, torch.Tensor]:
    keep = (cols >= start) & (cols < stop)
    return rows[keep], cols[keep] - start


def rank_targets(
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    targets: np.ndarray,
    exclude: Sequence[np.ndarray] | None = None,
    max_block: int = DEFAULT_MAX_BLOCK,
) -> TargetRanks:
    """Rank each user's target among all items (minus `exclude[u]`) by dot-product score.

    user_vectors (U, e), item_vectors (N, e), targets (U,) item indices. The target's score is
    read from the same matmul block that scores the other candidates, so identical item vectors
    always tie exactly (a separately computed dot product could differ in the last bit). Scores
    are float32 even under a caller's bf16 autocast (the Trainer validates inside it), where
    bf16 scores would tie items that float32 tells apart.
    """
    with torch.autocast("cpu", enabled=False):
        return _rank_targets(user_vectors, item_vectors, targets, exclude, max_block)


def _rank_targets(
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    targets: np.ndarray,
    exclude: Sequence[np.ndarray] | None,
    max_block: int,
) -> TargetRanks:
    user_vectors = np.ascontiguousarray(user_vectors, dtype=np.float32)
    item_vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
    targets = np.asarray(targets, dtype=np.int64)
    num_users, num_items = len(user_vectors), len(item_vectors)
    if targets.shape != (num_users,):
        raise ValueError(f"targets has shape {targets.shape}, expected ({num_users},)")
    if num_users and (targets.min() < 0 or targets.max() >= num_items):
        raise ValueError("a target index is outside the item catalog")
    _check_finite("user vectors", user_vectors)
    _check_finite("item vectors", item_vectors)
    users_t = torch.from_numpy(user_vectors)
    items_t = torch.from_numpy(item_vectors)
    user_chunk, item_chunk = _chunk_sizes(num_users, num_items, max_block)
    item_starts = range(0, num_items, item_chunk)
    parts = []
    for u0 in range(0, num_users, user_chunk):
        users = range(u0, min(u0 + user_chunk, num_users))
        block_users = users_t[users.start : users.stop]  # (Uc, e)
        chunk_targets = torch.from_numpy(targets[users.start : users.stop])  # (Uc,)
        ex_rows, ex_cols = _exclusion_pairs(exclude, users, targets)
        # Pass 1 (only with several item blocks): the target's score, read from the block that
        # contains it; with a single block pass 2 reads it from that block directly.
        target_scores = torch.empty(len(users), dtype=torch.float32)
        for i0 in item_starts if len(item_starts) > 1 else ():
            i1 = min(i0 + item_chunk, num_items)
            here = torch.nonzero((chunk_targets >= i0) & (chunk_targets < i1)).squeeze(1)
            if len(here) == 0:
                continue
            block = block_users @ items_t[i0:i1].T  # (Uc, Ic)
            target_scores[here] = block[here, chunk_targets[here] - i0]
        # Pass 2: count candidates above and tied with the target.
        greater = torch.zeros(len(users), dtype=torch.long)
        ties = torch.zeros(len(users), dtype=torch.long)
        for i0 in item_starts:
            i1 = min(i0 + item_chunk, num_items)
            block = block_users @ items_t[i0:i1].T  # (Uc, Ic)
            here = torch.nonzero((chunk_targets >= i0) & (chunk_targets < i1)).squeeze(1)
            if len(item_starts) == 1:
                target_scores = block[torch.arange(len(users)), chunk_targets]
            above = block > target_scores[:, None]  # (Uc, Ic)
            equal = block == target_scores[:, None]
            rows, cols = _in_chunk(ex_rows, ex_cols, i0, i1)
            above[rows, cols] = False
            equal[rows, cols] = False
            equal[here, chunk_targets[here] - i0] = False  # the target does not tie with itself
            greater += above.sum(dim=1)
            ties += equal.sum(dim=1)
        parts.append(TargetRanks(greater.numpy().astype(np.int64), ties.numpy().astype(np.int64)))
    return TargetRanks.concat(parts)


def top_k_items(
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    k: int,
    exclude: Sequence[np.ndarray] | None = None,
    max_block: int = DEFAULT_MAX_BLOCK,
) -> tuple[np.ndarray, np.ndarray]:
    """The k best items per user: (indices (U, k) int64, scores (U, k) float32), best first.

    Excluded items are never returned; when fewer than k candidates remain the row is padded with
    index -1 and score -inf. Returned items with equal scores are listed by item index; when
    several items tie at the k-th score, which of them make the cut is up to `torch.topk`.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    user_vectors = np.ascontiguousarray(user_vectors, dtype=np.float32)
    item_vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
    _check_finite("user vectors", user_vectors)
    _check_finite("item vectors", item_vectors)
    num_users, num_items = len(user_vectors), len(item_vectors)
    users_t = torch.from_numpy(user_vectors)
    items_t = torch.from_numpy(item_vectors)
    user_chunk, item_chunk = _chunk_sizes(num_users, num_items, max_block)
    out_idx = np.full((num_users, k), -1, dtype=np.int64)
    out_scores = np.full((num_users, k), -np.inf, dtype=np.float32)
    for u0 in range(0, num_users, user_chunk):
        users = range(u0, min(u0 + user_chunk, num_users))
        block_users = users_t[users.start : users.stop]  # (Uc, e)
        ex_rows, ex_cols = _exclusion_pairs(exclude, users, None)
        best_scores = torch.full((len(users), 0), -torch.inf)
        best_idx = torch.zeros((len(users), 0), dtype=torch.long)
        for i0 in range(0, num_items, item_chunk):
            i1 = min(i0 + item_chunk, num_items)
            block = block_users @ items_t[i0:i1].T  # (Uc, Ic)
            rows, cols = _in_chunk(ex_rows, ex_cols, i0, i1)
            block[rows, cols] = -torch.inf
            width = min(k, i1 - i0)
            chunk_scores, chunk_idx = torch.topk(block, width, dim=1)  # (Uc, width)
            scores = torch.cat([best_scores, chunk_scores], dim=1)
            indices = torch.cat([best_idx, chunk_idx + i0], dim=1)
            width = min(k, scores.shape[1])
            best_scores, keep = torch.topk(scores, width, dim=1)
            best_idx = indices.gather(1, keep)
        # Deterministic order of the returned items: score descending, then item index.
        order = torch.from_numpy(
            np.lexsort((best_idx.numpy(), -best_scores.numpy().astype(np.float64)), axis=1)
        )
        best_scores, best_idx = best_scores.gather(1, order), best_idx.gather(1, order)
        valid = torch.isfinite(best_scores)
        best_idx = torch.where(valid, best_idx, torch.full_like(best_idx, -1))
        width = best_idx.shape[1]
        out_idx[users.start : users.stop, :width] = best_idx.numpy()
        out_scores[users.start : users.stop, :width] = best_scores.numpy()
    return out_idx, out_scores
