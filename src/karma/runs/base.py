"""What a recipe is: how one kind of run is trained and loaded back.

A recipe owns one run kind (karma, sasrec, popularity, frozen, query-floor). `train` writes a run directory
through `karma.runs.layout`; `load_retriever` gives the `Retriever` evaluation, diagnostics and
experiments use; `load_encoder` gives the trained module alone (inference and export: no training
heads, no optimizer state).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from torch import nn

from karma.data.dataset import PreparedDataset
from karma.errors import KarmaError
from karma.eval.retriever import Retriever
from karma.runs.layout import Run


@dataclass
class TrainedEncoder:
    """A run's trained encoder, in eval mode, with the catalog it was built on."""

    module: nn.Module
    """the encoder (KarmaEncoder, SASRec), its trained weights loaded"""
    dataset: PreparedDataset
    """the prepared dataset whose items the encoder indexes"""
    item_texts: list[str] | None
    """the exact text the item tower reads per item (None for an ID-based model)"""
    provenance: dict[str, Any] = field(default_factory=dict)
    """where it came from: run directory, weights, config and data hashes, recipe settings"""


Task = Literal["rec", "search"]
"""What a run ranks for: the next item after a history (rec), or a query's answer (search)."""


class Recipe(Protocol):
    kind: str
    config_type: type
    """the dataclass of the run's config (saved as run_config.yaml)"""

    def train(
        self,
        config: Any,
        run_dir: Path | None = None,
        data: Path | None = None,
        resume: bool | None = None,
        progress: bool = True,
    ) -> dict[str, Any]:
        """Train `config` into `run_dir` on `data`; returns a summary (best step, metric, ...).

        `resume=None` resumes when the run directory already has checkpoints.
        """
        ...

    def load_retriever(
        self, run: Run, data: Path | None = None, progress: bool | None = None
    ) -> Retriever:
        """The run as a dot-product retriever; `data` points at another copy of its dataset.

        `progress`: a bar while users are encoded, for kinds slow enough to want one (None: only on
        a terminal; False: never).
        """
        ...

    def load_encoder(self, run: Run, data: Path | None = None) -> TrainedEncoder:
        """The trained encoder alone (raises KarmaError for a kind without one)."""
        ...

    def run_overrides(
        self, seed: int, progress: bool, threads: int | None, time_budget_minutes: float | None
    ) -> list[str]:
        """`key=value` overrides of `config_type` that set these run-wide settings."""
        ...

    def task(self, config: Any) -> Task:
        """What a run of `config` ranks for: reports never compare runs of different tasks."""
        ...


def open_training_data(kind: str, run_dir: Path | None, data: Path | None) -> PreparedDataset:
    """The dataset a run of `kind` trains on; both a run directory and a dataset are required."""
    if run_dir is None or data is None:
        raise KarmaError(f"a {kind} run needs a run directory and a prepared dataset")
    return PreparedDataset(data)
