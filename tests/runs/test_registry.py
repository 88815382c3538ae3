"""One registry from run kind to recipe; every recipe has the same three entry points."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from karma.errors import KarmaError
from karma.experiments.grid import RunKind
from karma.runs import KINDS, RECIPES, load_encoder, recipe_for
from karma.runs.layout import start_run


def test_grid_kinds_are_the_registered_kinds() -> None:
    assert set(typing.get_args(RunKind)) == set(KINDS)
    assert set(KINDS) == {"karma", "sasrec", "popularity", "frozen", "query-floor"}


@pytest.mark.parametrize("kind", KINDS)
def test_every_recipe_trains_and_loads(kind: str) -> None:
    recipe = RECIPES[kind]
    assert recipe.kind == kind
    for name in ("train", "load_retriever", "load_encoder", "run_overrides", "task"):
        assert callable(getattr(recipe, name)), name
    assert recipe.config_type() is not None  # every config has defaults


@pytest.mark.parametrize(
    ("kind", "task"),
    [("popularity", "rec"), ("sasrec", "rec"), ("frozen", "rec"), ("query-floor", "search")],
)
def test_each_recipe_says_what_its_runs_rank_for(kind: str, task: str) -> None:
    recipe = RECIPES[kind]
    assert recipe.task(recipe.config_type()) == task


def test_a_karma_run_ranks_for_its_data_mode() -> None:
    from karma.config import load_config

    recipe = RECIPES["karma"]
    tiny = Path(__file__).resolve().parents[2] / "configs" / "debug" / "tiny.yaml"
    assert recipe.task(load_config(recipe.config_type, tiny)) == "rec"
    assert recipe.task(load_config(recipe.config_type, tiny, ["data.mode=search"])) == "search"


def test_unknown_kind_and_encoderless_kind_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(KarmaError, match="unknown run kind 'bm25'"):
        recipe_for("bm25")
    start_run(tmp_path / "pop", "popularity", tmp_path)
    with pytest.raises(KarmaError, match="popularity run has no encoder"):
        load_encoder(tmp_path / "pop")
