"""Reading a training run directory for export: the trained encoder, its catalog, its provenance.

The run directory is written by `karma train` (karma.train). Export needs from it the trained
encoder module (implementing `InterestEncoder`), the items table and the exact item texts the model
was trained on, and provenance for the manifest (backbone, data and config hashes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from karma.errors import KarmaError


@dataclass
class LoadedRun:
    """What `export_run` needs from a run directory."""

    encoder: nn.Module
    items: pd.DataFrame
    item_texts: list[str]
    provenance: dict[str, Any]


def load_run_for_export(run_dir: Path) -> LoadedRun:
    """Load `run_dir`'s best (else latest) checkpoint as a serving encoder."""
    if not run_dir.is_dir():
        raise KarmaError(f"run directory {run_dir} does not exist; train one with `karma train`")
    try:
        from karma.serve.karma_encoder import load_run
    except ImportError as exc:
        raise KarmaError(
            f"cannot export {run_dir}: the KARMA model is not importable ({exc})"
        ) from None
    return load_run(run_dir)
