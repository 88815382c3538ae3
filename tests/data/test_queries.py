"""Synthetic queries (Ai et al., 2017): words, stop words, determinism under a seed."""

from __future__ import annotations

import numpy as np

from karma.data.queries import category_words, synthesize_queries


def test_category_words() -> None:
    categories = ["Clothing, Shoes & Jewelry", "Women", "Shoes", "Children's", "Sci-Fi", "Other"]
    assert category_words(categories) == [
        "clothing",
        "shoes",
        "jewelry",
        "women",
        "children's",
        "sci-fi",
    ]
    assert category_words([]) == []


def test_short_items_get_all_words_in_order() -> None:
    queries = synthesize_queries(np.array([0, 1, 0]), [["Drama", "War"], []], 4, seed=0)
    assert queries.tolist() == ["drama war", None, "drama war"]


def test_subsets_are_seeded_and_ordered() -> None:
    categories = [["a1 b2 c3 d4 e5 f6"], ["Solo"]]
    positions = np.array([0] * 200 + [1] * 3)
    first = synthesize_queries(positions, categories, 2, seed=7)
    again = synthesize_queries(positions, categories, 2, seed=7)
    other = synthesize_queries(positions, categories, 2, seed=8)
    assert first.tolist() == again.tolist()
    assert first.tolist() != other.tolist()
    order = ["a1", "b2", "c3", "d4", "e5", "f6"]
    for query in first[:200]:
        words = query.split()
        assert len(words) == 2 and set(words) <= set(order)
        assert words == sorted(words, key=order.index)  # original order kept
    assert len(set(first[:200])) > 5  # different interactions draw different subsets
    assert first[200:].tolist() == ["solo"] * 3
    assert synthesize_queries(positions, categories, 0, seed=7)[0] == " ".join(order)
