"""The settings of `karma serve` and `karma index` as dataclasses: the one place for their defaults
and help (`karma.config.add_config_options` turns each field into a command-line option).

Kept free of heavy imports (no faiss, fastapi, torch), so `karma --help` stays quick.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

IndexKind = Literal["flat", "ivf", "hnsw"]
INDEX_KINDS: tuple[str, ...] = ("flat", "ivf", "hnsw")


@dataclass
class ServeConfig:
    """Service settings (the `karma serve` options)."""

    host: str = "127.0.0.1"
    """Address to bind; loopback by default."""
    port: int = 8000
    """TCP port."""
    api_key: str | None = None
    """When set, /v1/* requires header X-API-Key with this value; `karma serve` reads it from the
    environment variable KARMA_API_KEY when the option is not given (prefer that: a command-line
    value is visible to other users in `ps`)."""
    index: IndexKind = "flat"
    """Which saved index to search: flat, ivf or hnsw."""
    max_history: int = 200
    """Longest accepted history (items)."""
    max_k: int = 1000
    """Largest accepted k."""
    max_batch: int = 32
    """Micro-batcher: most requests per encoder call."""
    max_wait_ms: float = 0.0
    """Micro-batcher: longest wait for more requests before running a batch (0 = run at once with
    whatever is queued; requests arriving during a batch form the next one)."""

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port: must be in 1..65535, got {self.port}")
        for name in ("max_history", "max_k", "max_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms: must be >= 0, got {self.max_wait_ms}")
        if self.api_key is not None and not self.api_key:
            raise ValueError("api_key: must not be empty (leave it unset for no key)")


@dataclass
class IndexConfig:
    """How to build the item index."""

    kind: IndexKind = "flat"
    """flat (exact), ivf (inverted lists) or hnsw (graph)."""
    nlist: int = 0
    """IVF: number of inverted lists; 0 = about 4*sqrt(N), at most N/39 (FAISS's training minimum)."""
    nprobe: int = 16
    """IVF: lists visited per query (recall vs speed)."""
    m: int = 32
    """HNSW: neighbours per node."""
    ef_construction: int = 200
    """HNSW: candidate list size while building."""
    ef_search: int = 128
    """HNSW: candidate list size while searching (recall vs speed)."""

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"kind: {self.kind!r} is not one of {', '.join(INDEX_KINDS)}")
        for name in ("nlist",):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        for name in ("nprobe", "m", "ef_construction", "ef_search"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
