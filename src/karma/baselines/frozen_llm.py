"""Frozen-embedding baseline: no training, a user is the (recency-weighted) mean of its history.

The item matrix comes from any frozen encoder: precomputed `ds.features(name)` (e.g. MiniLM
sentence embeddings) or the mean of a causal LM's input-embedding rows over each item's text
tokens (`pooled_input_embeddings`). This measures what the LLM knows about items before any
behaviour training, the floor KARMA must beat.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from karma.data.dataset import Examples, PreparedDataset


@dataclass
class FrozenConfig:
    """Which frozen item matrix, and how a history is pooled into a user vector."""

    feature: str | None = None
    """feature matrix of the prepared dataset (`ds.features` name; null = the only one)"""
    decay: float = 1.0
    """recency weight per step back in the history (1.0 = plain mean)"""
    max_history: int = 50
    """most recent history items pooled"""

    def __post_init__(self) -> None:
        if not 0.0 < self.decay <= 1.0:
            raise ValueError(f"decay: must be in (0, 1], got {self.decay}")
        if self.max_history < 1:
            raise ValueError(f"max_history: must be >= 1, got {self.max_history}")


class FrozenEmbeddingRetriever:
    """Dot-product retriever over a fixed (N, d) item matrix.

    user = sum_j w_j item[h_j] / sum_j w_j with w_j = decay ** (n - 1 - j) over the last
    `max_history` items (decay 1.0 = plain mean). Rows are L2-normalised first when `normalize`,
    so scores are cosine-like and long texts do not dominate.
    """

    def __init__(
        self,
        item_matrix: np.ndarray,
        name: str = "frozen",
        decay: float = 1.0,
        max_history: int = 50,
        normalize: bool = True,
    ) -> None:
        if item_matrix.ndim != 2:
            raise ValueError(f"item_matrix must be (num_items, dim), got shape {item_matrix.shape}")
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"decay must be in (0, 1], got {decay}")
        if max_history < 1:
            raise ValueError(f"max_history must be >= 1, got {max_history}")
        matrix = np.asarray(item_matrix, dtype=np.float32)
        if normalize:
            norms = np.linalg.norm(matrix, axis=1, keepdims=True)
            matrix = matrix / np.maximum(norms, 1e-12)
        self.items = matrix
        self.name = name
        self.decay = decay
        self.max_history = max_history

    @classmethod
    def from_features(
        cls, dataset: PreparedDataset, feature: str | None = None, **kwargs: float | int | bool
    ) -> FrozenEmbeddingRetriever:
        name, matrix = dataset.features(feature)
        return cls(matrix, name=f"frozen-{name}", **kwargs)  # type: ignore[arg-type]

    def item_vectors(self) -> np.ndarray:
        return self.items  # (N, d)

    def user_vectors(self, examples: Examples) -> np.ndarray:
        out = np.zeros((len(examples), self.items.shape[1]), dtype=np.float32)  # (U, d)
        for u, history in enumerate(examples.histories):
            recent = np.asarray(history, dtype=np.int64)[-self.max_history :]
            if len(recent) == 0:
                continue
            weights = self.decay ** np.arange(len(recent) - 1, -1, -1, dtype=np.float64)
            out[u] = (weights[:, None] * self.items[recent]).sum(axis=0) / weights.sum()
        return out


@torch.no_grad()
def pooled_input_embeddings(
    texts: Sequence[str],
    tokenize: Callable[[str], list[int]],
    embedding: torch.nn.Embedding,
) -> np.ndarray:
    """(len(texts), d): the mean input-embedding row over each text's tokens (frozen LM table).

    `tokenize` maps a text to token ids (e.g. `lambda t: tok(t, add_special_tokens=False).input_ids`
    for a Hugging Face tokenizer); `embedding` is `model.get_input_embeddings()`. A text with no
    tokens gets a zero row.
    """
    weight = embedding.weight.detach().float()
    out = np.zeros((len(texts), weight.shape[1]), dtype=np.float32)
    for i, text in enumerate(texts):
        ids = tokenize(text)
        if ids:
            out[i] = weight[torch.as_tensor(ids, dtype=torch.long)].mean(dim=0).numpy()
    return out
