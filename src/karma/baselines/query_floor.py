"""The query-only floor of personalized search: rank by the query alone, never the history.

    score(q, i) = |words(q) ∩ words(cat_i)| + log(1 + clicks_i) / (log(1 + max clicks) + 1)

Items matching more query words come first; among equal matches the more clicked in training
(the popularity term stays below 1, so it only breaks ties). With the synthetic queries (the
target's category words, `karma.data.queries`) this is what a search model gets for free from the
query: it is the floor a search-mode model must beat by reading the history as well.

As a dot-product retriever: item vector = [multi-hot of its category words ; scaled popularity],
user vector = [multi-hot of the query's words ; 1], over the vocabulary of the catalog's category
words (a query word no item has matches nothing).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from karma.data.dataset import Examples, PreparedDataset
from karma.data.queries import category_words
from karma.errors import KarmaError

FLOOR_FILE = "query_floor.json"


class QueryFloorRetriever:
    """Scores items by how many query words their categories contain, ties by popularity."""

    name = "query-floor"

    def __init__(self, item_categories: Sequence[Sequence[str]], train_counts: np.ndarray) -> None:
        counts = np.asarray(train_counts)
        if counts.ndim != 1 or len(counts) != len(item_categories) or (counts < 0).any():
            raise ValueError("train_counts must be one non-negative count per item")
        self.item_categories = [list(c) for c in item_categories]
        self.train_counts = counts.astype(np.int64)
        self.item_words = [category_words(c) for c in self.item_categories]
        vocabulary = sorted({w for words in self.item_words for w in words})
        self.vocabulary = {word: column for column, word in enumerate(vocabulary)}

    @classmethod
    def from_dataset(cls, dataset: PreparedDataset) -> QueryFloorRetriever:
        return cls(dataset.categories, dataset.train_item_counts())

    def item_vectors(self) -> np.ndarray:
        vectors = np.zeros((len(self.item_words), len(self.vocabulary) + 1), dtype=np.float32)
        for item, words in enumerate(self.item_words):
            vectors[item, [self.vocabulary[w] for w in words]] = 1.0  # (N, V) multi-hot
        popularity = np.log1p(self.train_counts)
        vectors[:, -1] = popularity / (popularity.max(initial=0.0) + 1.0)  # in [0, 1): ties only
        return vectors  # (N, V + 1)

    def user_vectors(self, examples: Examples) -> np.ndarray:
        vectors = np.zeros((len(examples), len(self.vocabulary) + 1), dtype=np.float32)
        vectors[:, -1] = 1.0
        for u, query in enumerate(examples.queries):
            words = category_words([query or ""])
            vectors[u, [self.vocabulary[w] for w in words if w in self.vocabulary]] = 1.0
        return vectors  # (U, V + 1)

    def save(self, directory: str | Path) -> None:
        path = Path(directory) / FLOOR_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        content = {
            "item_categories": self.item_categories,
            "train_counts": self.train_counts.tolist(),
        }
        path.write_text(json.dumps(content), encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path) -> QueryFloorRetriever:
        path = Path(directory) / FLOOR_FILE
        if not path.is_file():
            raise KarmaError(f"{path} is missing; rerun the query-floor cell")
        content = json.loads(path.read_text(encoding="utf-8"))
        return cls(content["item_categories"], np.asarray(content["train_counts"]))
