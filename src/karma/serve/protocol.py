"""What serving needs from a model: the `InterestEncoder` protocol and the encoder registry.

Serving never sees the training task. It needs only the path to the interest embedding `e_u` and
the item tower `e_i`, both L2-normalized so that retrieval is a dot product:

- `interest_embeddings(histories, queries)`: each history given as the item texts in time order
  (the continuous-token interface reads an item's text, not its id, so items added after training
  work without retraining), plus an optional query per user -> (B, e);
- `item_embeddings(texts)`: the item tower over item text -> (N, e);
- `kind` and `encoder_config()`: what `load_artifact` needs to rebuild the module (an encoder may
  also define `save_assets(directory)` to write e.g. its tokenizer next to the weights);
- `serving_prefixes`: the state-dict key prefixes that make up those two paths. Export keeps only
  keys under these prefixes (an allowlist: a new training head is left out by default).

An exported artifact names its encoder `kind` in the manifest; `load_artifact` rebuilds the module
with the builder registered for that kind (`register_encoder`), then loads the merged weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from torch import nn

from karma.errors import KarmaError

# Substrings of state-dict keys that belong to training-only heads (LM head for generation and
# reconstruction, the soft-prefix map `g`, the flow-matching and MSE heads). Export refuses to write
# any of them even if an encoder lists them among its serving prefixes by mistake.
TRAIN_ONLY_MARKERS: tuple[str, ...] = (
    "lm_head",
    "generation",
    "reconstruction",
    "prefix_map",
    "flow",
    "regression_head",
)


@runtime_checkable
class InterestEncoder(Protocol):
    """The serving path of a retrieval model (see the module docstring)."""

    kind: str
    embedding_dim: int
    serving_prefixes: tuple[str, ...]

    def encoder_config(self) -> dict[str, Any]:
        """JSON-safe arguments the registered builder for `kind` needs to rebuild the module."""
        ...

    def interest_embeddings(
        self, histories: Sequence[Sequence[str]], queries: Sequence[str | None]
    ) -> np.ndarray:
        """(B, e) float32, L2-normalized; histories are item texts in time order."""
        ...

    def item_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        """(N, e) float32, L2-normalized item-tower embeddings of item texts."""
        ...


EncoderBuilder = Callable[[Path, dict[str, Any]], nn.Module]
"""Rebuilds an untrained encoder module from (artifact directory, encoder config); no weights."""

_BUILDERS: dict[str, EncoderBuilder] = {}


def register_encoder(kind: str, builder: EncoderBuilder) -> None:
    """Make artifacts whose manifest names `kind` loadable (later registrations replace earlier)."""
    _BUILDERS[kind] = builder


def encoder_builder(kind: str) -> EncoderBuilder:
    """The builder for `kind`, importing the module that registers a known kind on first use."""
    if kind not in _BUILDERS:
        _register_known_kind(kind)
    if kind not in _BUILDERS:
        raise KarmaError(
            f"artifact encoder kind {kind!r} is unknown to this karma version; "
            f"known kinds: {', '.join(sorted({*_BUILDERS, 'karma'}))}"
        )
    return _BUILDERS[kind]


def _register_known_kind(kind: str) -> None:
    # Imported lazily so that `import karma.serve` does not pull in the LLM stack (transformers),
    # which only an artifact of the `karma` kind needs. Test doubles (karma.testing) register
    # themselves; production code never knows about them.
    if kind == "karma":
        from karma.serve import karma_encoder  # transformers: only karma artifacts need it

        register_encoder(karma_encoder.KIND, karma_encoder.build_from_config)


def is_train_only_key(key: str) -> bool:
    """True for a state-dict key of a training-only head (see `TRAIN_ONLY_MARKERS`)."""
    return any(marker in key for marker in TRAIN_ONLY_MARKERS)


def count_parameters(state: dict[str, Any]) -> int:
    """Number of scalars in a state dict (tensors or arrays)."""
    return int(sum(int(np.prod(tuple(v.shape))) for v in state.values()))
