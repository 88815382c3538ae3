"""`PrepareConfig`: the preprocessing options (kept free of pandas so `karma --help` stays quick)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TIE_BREAKING = {  # `PrepareConfig.ties` -> how the manifest describes the order
    "file": "timestamp, then row order in the input file",
    "item": "timestamp, then item id, then row order in the input file",
    "reversed": "timestamp, then row order in the input file reversed",
}


@dataclass
class PrepareConfig:
    """How raw interactions become a prepared dataset."""

    split: Literal["leave-one-out", "time"] = "leave-one-out"
    """Split protocol: per-user leave-one-out, or one global time cut for everybody."""
    valid_fraction: float = 0.1
    """Time split: fraction of clicks (latest before test) that are validation."""
    test_fraction: float = 0.1
    """Time split: fraction of clicks (the latest) that are test."""
    valid_start: int | None = None
    """Time split: first validation timestamp (seconds); overrides the fractions."""
    test_start: int | None = None
    """Time split: first test timestamp (seconds); overrides the fractions."""
    ties: Literal["file", "item", "reversed"] = "file"
    """Order of one user's clicks with the same timestamp: as in the input file, by item id, or the
    file's order reversed. A fixed order matters: on MovieLens-1m 42 % of the test targets share
    their timestamp with the validation click, so the choice decides which click is the target."""
    min_history: int = 3
    """Users with fewer clicks are dropped (3 = one each for train, valid and test)."""
    k_core_users: int = 0
    """Iterative k-core: minimum clicks per user (0 = off)."""
    k_core_items: int = 0
    """Iterative k-core: minimum clicks per item (0 = off)."""
    queries: Literal["auto", "synth", "none", "column"] = "auto"
    """Queries: from the data's query column, synthesized from categories, or none (auto = column
    if the data has queries, else synth)."""
    query_words: int = 4
    """Synthetic queries: at most this many category words (seeded random subset; 0 = all)."""
    seed: int = 0
    """Seed of the synthetic query draw and of the cold-item draw."""
    unknown_items: Literal["error", "drop"] = "error"
    """Interactions naming items missing from the item table: stop with an error, or drop them."""
    keep_unused_items: bool = False
    """Keep items that no remaining interaction names (default: drop them)."""
    cold_items: float = 0.0
    """New-item protocol: this fraction of the catalog (seeded, stratified by training clicks)
    loses every interaction except its users' valid/test target clicks (0 = off)."""
    cold_strata: int = 10
    """Cold items: popularity strata (equal-size buckets of items sorted by training clicks), each
    contributing its share of cold items, so cold items are not all tail items."""

    def __post_init__(self) -> None:
        if self.split not in ("leave-one-out", "time"):
            raise ValueError(f"split: {self.split!r} is not leave-one-out or time")
        for name in ("valid_fraction", "test_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name}: must be in [0, 1), got {getattr(self, name)}")
        if self.valid_fraction + self.test_fraction >= 1.0:
            raise ValueError("valid_fraction: valid_fraction + test_fraction must be below 1")
        if (self.valid_start is None) != (self.test_start is None):
            raise ValueError("valid_start: give both valid_start and test_start, or neither")
        if (
            self.valid_start is not None
            and self.test_start is not None
            and self.valid_start > self.test_start
        ):
            raise ValueError("valid_start: must not be after test_start")
        for name in ("min_history", "k_core_users", "k_core_items", "query_words"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.queries not in ("auto", "synth", "none", "column"):
            raise ValueError(f"queries: {self.queries!r} is not auto, synth, none or column")
        if not 0.0 <= self.cold_items < 1.0:
            raise ValueError(f"cold_items: must be in [0, 1), got {self.cold_items}")
        if self.cold_strata < 1:
            raise ValueError(f"cold_strata: must be >= 1, got {self.cold_strata}")
        if self.ties not in TIE_BREAKING:
            raise ValueError(f"ties: {self.ties!r} is not file, item or reversed")
        if self.unknown_items not in ("error", "drop"):
            raise ValueError(f"unknown_items: {self.unknown_items!r} is not error or drop")
