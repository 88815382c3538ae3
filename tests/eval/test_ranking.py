"""Chunked full ranking: equals the dense computation, masks history, keeps the target."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from karma.eval.metrics import ranks_from_scores
from karma.eval.ranking import rank_targets, top_k_items


def dense_reference(users, items, targets, exclude):
    scores = (users.astype(np.float64) @ items.T.astype(np.float64)).astype(np.float32)
    if exclude is not None:
        for u, hist in enumerate(exclude):
            for i in hist:
                if i != targets[u]:
                    scores[u, i] = -np.inf
    return ranks_from_scores(scores, targets)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 9), st.integers(1, 40), st.integers(1, 64), st.integers(0, 2**31 - 1))
def test_chunked_equals_dense(users: int, items: int, block: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Small integer vectors: exact float32 dot products with many ties.
    user_vecs = rng.integers(-2, 3, size=(users, 3)).astype(np.float32)
    item_vecs = rng.integers(-2, 3, size=(items, 3)).astype(np.float32)
    targets = rng.integers(0, items, size=users)
    exclude = [rng.integers(0, items, size=rng.integers(0, 5)) for _ in range(users)]
    chunked = rank_targets(user_vecs, item_vecs, targets, exclude, max_block=block)
    whole = rank_targets(user_vecs, item_vecs, targets, exclude)
    ref = dense_reference(user_vecs, item_vecs, targets, exclude)
    np.testing.assert_array_equal(chunked.greater, ref.greater)
    np.testing.assert_array_equal(chunked.ties, ref.ties)
    np.testing.assert_array_equal(whole.greater, ref.greater)
    np.testing.assert_array_equal(whole.ties, ref.ties)


def test_history_masking_hand_example() -> None:
    users = np.array([[1.0]], dtype=np.float32)
    items = np.array([[5.0], [4.0], [3.0], [2.0]], dtype=np.float32)
    # Target item 2 has two items above; masking item 0 removes one of them.
    r = rank_targets(users, items, np.array([2]), None)
    assert (r.greater[0], r.ties[0]) == (2, 0)
    r = rank_targets(users, items, np.array([2]), [np.array([0, 3])])
    assert (r.greater[0], r.ties[0]) == (1, 0)
    # The target is never masked, even when it is in the history (repeat click).
    r = rank_targets(users, items, np.array([2]), [np.array([2])])
    assert (r.greater[0], r.ties[0]) == (2, 0)


def test_scores_stay_float32_under_bf16_autocast() -> None:
    # Scores 256, 257 and 258 are one bf16 step apart at most (bf16 keeps 8 significant bits:
    # 257 rounds to 256 or 258): under the Trainer's bf16 autocast a bf16 matmul would tie them.
    users = np.array([[1.0]], dtype=np.float32)
    items = np.array([[258.0], [257.0], [256.0]], dtype=np.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        r = rank_targets(users, items, np.array([1]))
    assert (r.greater[0], r.ties[0]) == (1, 0)


def test_nan_vectors_rejected() -> None:
    with pytest.raises(ValueError, match="NaN"):
        rank_targets(np.full((1, 2), np.nan), np.ones((3, 2)), np.array([0]))


@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(1, 30),
    st.integers(1, 8),
    st.integers(1, 50),
    st.integers(0, 999),
)
def test_top_k_matches_sort(users: int, items: int, k: int, block: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    user_vecs = rng.integers(-2, 3, size=(users, 2)).astype(np.float32)
    item_vecs = rng.integers(-2, 3, size=(items, 2)).astype(np.float32)
    exclude = [rng.integers(0, items, size=2) for _ in range(users)]
    idx, scores = top_k_items(user_vecs, item_vecs, k, exclude, max_block=block)
    for u in range(users):
        s = user_vecs[u] @ item_vecs.T
        allowed = [i for i in range(items) if i not in set(exclude[u].tolist())]
        expected = sorted(allowed, key=lambda i: (-s[i], i))[:k]
        got = [i for i in idx[u].tolist() if i >= 0]
        assert len(got) == min(k, len(allowed))
        assert set(got) <= set(allowed)
        # Same scores in the same order; among equal scores, items listed by index.
        np.testing.assert_array_equal(s[got], s[expected])
        np.testing.assert_array_equal(scores[u, : len(got)], s[expected])
        assert got == sorted(got, key=lambda i: (-s[i], i))
        # Every item strictly above the k-th score is returned.
        if got:
            assert {i for i in allowed if s[i] > s[got[-1]]} <= set(got)
