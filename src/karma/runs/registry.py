"""Run kind -> recipe, and the entry points every application uses to train and load runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from karma.errors import KarmaError
from karma.eval.retriever import Retriever
from karma.runs.base import Recipe, TrainedEncoder
from karma.runs.layout import Run, open_run
from karma.runs.recipes.frozen import FrozenRecipe
from karma.runs.recipes.karma import KarmaRecipe
from karma.runs.recipes.popularity import PopularityRecipe
from karma.runs.recipes.query_floor import QueryFloorRecipe
from karma.runs.recipes.sasrec import SASRecRecipe
from karma.train.run_config import RunConfig

RECIPES: dict[str, Recipe] = {
    recipe.kind: recipe
    for recipe in (
        KarmaRecipe(),
        SASRecRecipe(),
        PopularityRecipe(),
        FrozenRecipe(),
        QueryFloorRecipe(),
    )
}
KINDS = tuple(RECIPES)


def recipe_for(kind: str) -> Recipe:
    if kind not in RECIPES:
        raise KarmaError(f"unknown run kind {kind!r}; known kinds: {', '.join(KINDS)}")
    return RECIPES[kind]


def _as_run(run: str | Path | Run) -> Run:
    return run if isinstance(run, Run) else open_run(run)


def load_retriever(
    run: str | Path | Run, data: str | Path | None = None, progress: bool | None = None
) -> Retriever:
    """The retriever saved in a run directory, whatever its kind (`data` overrides its dataset;
    `progress` as in `Recipe.load_retriever`)."""
    run = _as_run(run)
    data_path = Path(data) if data is not None else None
    return recipe_for(run.kind).load_retriever(run, data_path, progress)


def load_encoder(run: str | Path | Run, data: str | Path | None = None) -> TrainedEncoder:
    """The trained encoder of a run, built without any training-only part."""
    run = _as_run(run)
    return recipe_for(run.kind).load_encoder(run, Path(data) if data is not None else None)


def train_run(
    config: RunConfig,
    resume: bool | None = None,
    pause_at: float | None = None,
    pause_after_steps: int | None = None,
) -> dict[str, Any]:
    """Train a KARMA `RunConfig` into `config.output_dir`; return the trainer's summary.

    `resume=None` resumes when the run directory already has checkpoints (so an interrupted grid
    or demo continues where it stopped) and starts fresh otherwise. `pause_at` (a `time.time()`
    deadline) / `pause_after_steps` (steps of this call) pause the run resumably after the step
    that reaches them: the summary then has `paused: True` and run.json stays `status: training`.
    """
    return KarmaRecipe().train(
        config, resume=resume, pause_at=pause_at, pause_after_steps=pause_after_steps
    )
