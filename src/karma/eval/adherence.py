"""Query adherence: does a ranking answer the query it was asked?

    adherence@K = (1 / |U_q|) Σ_{u ∈ U_q} (1 / K) |{ i ∈ top_K(u) : words(cat_i) ∩ words(q_u) ≠ ∅ }|

the share of each user's top-K results whose categories contain a query word, averaged over the
users that have a query (`U_q`). Words are `karma.data.queries.category_words` on both sides
(lower-cased, stop words out), the words the synthetic queries are made of, so a query built from an
item's categories always matches that item. A query-blind ranking (a recommendation model, the
popularity list) scores the share of query-matching items it happens to rank high; a model that
reads the query should score near 1. It says nothing about whether the right item is found: that
is HR@K's job.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from karma.data.queries import category_words

ADHERENCE_K = 10
"""The cut-off the reports use (`query_adherence@10`)."""


def query_words(query: str) -> set[str]:
    """The words of a query, as `category_words` splits a category ("Sci-Fi" -> {"sci-fi"})."""
    return set(category_words([query]))


def adherence_per_user(
    top: np.ndarray, queries: Sequence[str | None], item_categories: Sequence[Sequence[str]]
) -> np.ndarray:
    """(U,) share of each user's listed items whose categories contain one of the query's words.

    top: (U, K) item indices, best first (-1 = padding: counts as a miss, the list was short).
    NaN for a user without a query (or a query without a word): there is nothing to adhere to.
    """
    top = np.asarray(top, dtype=np.int64)
    if top.ndim != 2 or len(top) != len(queries):
        raise ValueError(f"top must be (len(queries), K), got {top.shape} for {len(queries)}")
    item_words = [set(category_words(list(c))) for c in item_categories]
    out = np.full(len(queries), np.nan)
    for u, query in enumerate(queries):
        words = query_words(query) if query else set()
        if words and top.shape[1]:
            hits = [i >= 0 and bool(item_words[i] & words) for i in top[u]]
            out[u] = float(np.mean(hits))
    return out


def query_adherence(
    top: np.ndarray, queries: Sequence[str | None], item_categories: Sequence[Sequence[str]]
) -> float:
    """Mean of `adherence_per_user` over the users with a query (NaN when none has one)."""
    per_user = adherence_per_user(top, queries, item_categories)
    present = per_user[~np.isnan(per_user)]
    return float(present.mean()) if len(present) else float("nan")
