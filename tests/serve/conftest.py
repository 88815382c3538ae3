"""Fixtures: a small catalog and toy-encoder artifacts written to tmp_path (no downloads)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from karma.serve.artifact import ServingModel, load_artifact
from karma.serve.export import write_artifact
from karma.testing.toy_encoder import ToyInterestEncoder, register_toy_encoder

register_toy_encoder()  # artifacts of kind "toy" load in every serving test

GENRES = ["comedy", "drama", "horror", "space", "western", "romance", "crime", "music"]


def make_items(num_items: int = 60) -> tuple[pd.DataFrame, list[str]]:
    """Items with distinct titles and overlapping genre words, and the text the item tower reads."""
    rows = []
    for i in range(num_items):
        cats = [GENRES[i % len(GENRES)], GENRES[(i * 3 + 1) % len(GENRES)]]
        rows.append({"item_id": f"m{i}", "title": f"Movie {i} part {i % 7}", "categories": cats})
    items = pd.DataFrame(rows)
    texts = [f"{r['title']} | {', '.join(r['categories'])}" for r in rows]
    return items, texts


@pytest.fixture
def catalog() -> tuple[pd.DataFrame, list[str]]:
    """(items table, item texts) of a 60-item catalog."""
    return make_items()


def _export_toy(out: Path, with_train_heads: bool = False, seed: int = 0) -> dict:
    items, texts = make_items()
    encoder = ToyInterestEncoder(with_train_heads=with_train_heads, seed=seed)
    return write_artifact(encoder, items, texts, out, {"backbone": "toy"})


@pytest.fixture
def export_toy() -> Callable[..., dict]:
    """export_toy(out, with_train_heads=False, seed=0) -> manifest of a toy artifact at `out`."""
    return _export_toy


@pytest.fixture
def artifact_dir(tmp_path: Path) -> Path:
    _export_toy(tmp_path / "artifact")
    return tmp_path / "artifact"


@pytest.fixture
def serving_model(artifact_dir: Path) -> ServingModel:
    return load_artifact(artifact_dir)


MOVIES = [  # (item_id, title, year): ml-100k's pattern of titles without the year, some repeated
    ("1", "Toy Story", "1995"),
    ("25", "Heat", "1995"),
    ("246", "Chasing Amy", "1997"),
    ("268", "Chasing Amy", "1997"),
    ("274", "Sabrina", "1995"),
    ("486", "Sabrina", "1954"),
    ("900", "Nameless", None),
    ("901", "Star Wars", "1977"),
]


def make_movies() -> tuple[pd.DataFrame, list[str]]:
    """A tiny catalog with a `year` column, a title shared within one year and one across years."""
    items = pd.DataFrame(MOVIES, columns=["item_id", "title", "year"])
    texts = [f"{t} ({y}) | drama" for _, t, y in MOVIES]
    return items, texts


@pytest.fixture
def movie_artifact(tmp_path: Path) -> Path:
    """A toy artifact over `MOVIES` (ids, titles and years as ml-100k stores them)."""
    items, texts = make_movies()
    write_artifact(ToyInterestEncoder(), items, texts, tmp_path / "movies", {"backbone": "toy"})
    return tmp_path / "movies"


@pytest.fixture
def movie_items() -> pd.DataFrame:
    """The items table of `MOVIES` (item_id, title, year)."""
    return make_movies()[0]
