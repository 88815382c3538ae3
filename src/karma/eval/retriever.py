"""Every model is evaluated and served as a dot-product retriever."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from karma.data.dataset import Examples


class Retriever(Protocol):
    """Scores are `user_vectors(examples) @ item_vectors().T` over the whole catalog."""

    name: str

    def item_vectors(self) -> np.ndarray:
        """(num_items, e) float32."""
        ...

    def user_vectors(self, examples: Examples) -> np.ndarray:
        """(len(examples), e) float32, one per example (history [+ query])."""
        ...
