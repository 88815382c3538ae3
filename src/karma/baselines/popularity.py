"""Most-popular baseline: every user gets the same ranking, by training clicks.

As a dot-product retriever: user vector `[1]`, item vector `[log(1 + count)]` (log keeps the
scores small and the ranking unchanged). Items with equal counts tie, and the harness scores ties
as random tie-breaking, so cold items share the tail equally.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from karma.data.dataset import Examples, PreparedDataset
from karma.errors import KarmaError

COUNTS_FILE = "popularity.json"


class PopularityRetriever:
    """Scores every item by log(1 + training clicks), whatever the user."""

    name = "popularity"

    def __init__(self, train_counts: np.ndarray) -> None:
        counts = np.asarray(train_counts)
        if counts.ndim != 1 or (counts < 0).any():
            raise ValueError("train_counts must be a 1-D array of non-negative counts")
        self.train_counts = counts.astype(np.int64)

    @classmethod
    def from_dataset(cls, dataset: PreparedDataset) -> PopularityRetriever:
        return cls(dataset.train_item_counts())

    def item_vectors(self) -> np.ndarray:
        return np.log1p(self.train_counts).astype(np.float32)[:, None]  # (N, 1)

    def user_vectors(self, examples: Examples) -> np.ndarray:
        return np.ones((len(examples), 1), dtype=np.float32)  # (U, 1)

    def save(self, directory: str | Path) -> None:
        path = Path(directory) / COUNTS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"train_counts": self.train_counts.tolist()}), encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path) -> PopularityRetriever:
        path = Path(directory) / COUNTS_FILE
        if not path.is_file():
            raise KarmaError(f"{path} is missing; retrain with `karma baseline popularity`")
        return cls(np.asarray(json.loads(path.read_text(encoding="utf-8"))["train_counts"]))
