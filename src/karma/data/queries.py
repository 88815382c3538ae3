"""Synthetic personalized-search queries from item categories (Ai et al., 2017).

HEM, ZAM and TEM evaluate personalized product search on data without logged queries by using the
target item's category words as the query: words of the item's categories, lower-cased, stop words
removed, each word once. Items with more than `max_words` such words get, per interaction, a seeded
random subset of `max_words` of them (kept in their original order), so different purchases of one
item are asked for with different queries, and the same seed always gives the same queries.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

# A word keeps inner apostrophes and hyphens: `children's`, `sci-fi`, `film-noir`.
WORD = re.compile(r"[0-9a-z]+(?:['\-][0-9a-z]+)*")

STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "in",
        "into",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "the",
        "to",
        "with",
        "&",
        "amp",
        "other",
        "others",
        "more",
        "misc",
        "miscellaneous",
        "general",
        "all",
    ]
)


def category_words(categories: list[str]) -> list[str]:
    """Query words of one item: lower-cased words of its categories, stop words out, no repeats."""
    words: list[str] = []
    for category in categories:
        for word in WORD.findall(str(category).lower()):
            if word not in STOP_WORDS and word not in words:
                words.append(word)
    return words


def synthesize_queries(
    item_positions: np.ndarray, item_categories: list[list[str]], max_words: int, seed: int
) -> np.ndarray:
    """One query per interaction from its item's category words (None where it has none).

    item_positions: (n,) int64 item row of each interaction, in stored order.
    Returns (n,) object array of str | None.
    """
    words_per_item = [category_words(c) for c in item_categories]
    full_query = np.array([" ".join(w) if w else None for w in words_per_item], dtype=object)
    queries = full_query[item_positions]
    if max_words <= 0:
        return queries
    rng = np.random.default_rng(seed)
    by_item = np.argsort(item_positions, kind="stable")  # rows grouped by item, stored order inside
    starts = np.searchsorted(item_positions[by_item], np.arange(len(words_per_item) + 1))
    # Only items with too many words need a draw; loop over those items, not over interactions.
    for item, words in enumerate(words_per_item):
        if len(words) <= max_words:
            continue
        rows = by_item[starts[item] : starts[item + 1]]
        if len(rows) == 0:
            continue
        keys = rng.random((len(rows), len(words)))  # (r, m): random order per interaction
        chosen = np.sort(np.argsort(keys, axis=1)[:, :max_words], axis=1)  # (r, max_words)
        vocabulary = np.array(words, dtype=object)
        queries[rows] = [" ".join(row) for row in vocabulary[chosen]]
    return queries


def queries_from_column(values: pd.Series) -> np.ndarray:
    """Given queries, stripped; empty strings become None."""
    text = values.where(values.notna(), None)
    stripped = text.map(lambda q: q.strip() if isinstance(q, str) else q)
    return stripped.where(stripped != "", None).to_numpy(object)
