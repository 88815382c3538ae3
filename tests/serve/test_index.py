"""ANN indexes against exact search, and growing the catalog from item text alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from karma.errors import KarmaError
from karma.serve import index as item_index
from karma.serve.artifact import ServingModel, load_artifact, save_catalog


def clustered_unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """Unit vectors around 20 centres: structured like real embeddings, unlike pure noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, dim))
    x = centres[rng.integers(0, 20, n)] + 0.7 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_recall_at_k_counts_the_overlap() -> None:
    exact = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    approx = np.array([[4, 3, 9, -1], [5, 6, 7, 8]])
    assert item_index.recall_at_k(approx, exact) == pytest.approx((2 / 4 + 4 / 4) / 2)


def test_flat_index_equals_brute_force_dot_product() -> None:
    items = clustered_unit_vectors(500, 16, seed=0)
    queries = clustered_unit_vectors(30, 16, seed=1)
    index = item_index.build_index(items, item_index.IndexConfig("flat"))
    scores, ids = index.search(queries, 10)
    brute = np.argsort(-(queries @ items.T), axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(ids, brute)
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ items.T, brute, 1), atol=1e-5)


@pytest.mark.parametrize(
    "config",
    [
        item_index.IndexConfig("hnsw", m=16, ef_construction=100, ef_search=200),
        item_index.IndexConfig("ivf", nlist=16, nprobe=8),
    ],
    ids=["hnsw", "ivf"],
)
def test_ann_recall_is_high_at_generous_parameters(config: item_index.IndexConfig) -> None:
    items = clustered_unit_vectors(2000, 16, seed=2)
    queries = clustered_unit_vectors(100, 16, seed=3)
    index = item_index.build_index(items, config)
    report = item_index.evaluate_index(index, items, queries, k=20, kind=config.kind, build_s=0.0)
    assert report.recall >= 0.9
    assert report.num_items == 2000


def test_ivf_with_one_probe_loses_recall() -> None:
    # The check above must be able to fail: a starved IVF misses neighbours in other lists.
    items = clustered_unit_vectors(2000, 16, seed=2)
    queries = clustered_unit_vectors(100, 16, seed=3)
    index = item_index.build_index(items, item_index.IndexConfig("ivf", nlist=64, nprobe=1))
    report = item_index.evaluate_index(index, items, queries, k=20, kind="ivf", build_s=0.0)
    assert report.recall < 0.9


def test_index_config_names_the_bad_field() -> None:
    with pytest.raises(ValueError, match="nprobe"):
        item_index.IndexConfig("ivf", nprobe=0)
    with pytest.raises(ValueError, match="kind"):
        item_index.IndexConfig("lsh")  # type: ignore[arg-type]


def test_index_round_trips_through_disk(tmp_path: Path) -> None:
    items = clustered_unit_vectors(300, 8, seed=4)
    config = item_index.IndexConfig("hnsw", m=8, ef_search=64)
    index = item_index.build_index(items, config)
    item_index.save_index(index, tmp_path, "hnsw")
    loaded = item_index.load_index(tmp_path, "hnsw")
    np.testing.assert_array_equal(loaded.search(items[:5], 5)[1], index.search(items[:5], 5)[1])


def new_items() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": ["new1"],
            "title": ["Galaxy Quest Returns"],
            "categories": [["space", "comedy"]],
            "text": ["Galaxy Quest Returns | space, comedy"],
        }
    )


def test_an_added_item_is_retrievable(serving_model: ServingModel) -> None:
    before = serving_model.num_items
    (index,) = serving_model.add_items(new_items())
    assert index == before and serving_model.num_items == before + 1
    # Its own embedding as the query: the new item must come out first.
    vector = serving_model.item_embeddings[index][None]
    (recs,) = serving_model.search_embeddings(vector, k=1)
    assert recs.item_indices.tolist() == [index]
    assert serving_model.resolve_items(["new1", "Galaxy Quest Returns"]) == [index, index]
    np.testing.assert_allclose(
        serving_model.item_embeddings[index],
        serving_model.encoder.item_embeddings(["Galaxy Quest Returns | space, comedy"])[0],
        atol=1e-6,
    )


def test_added_items_persist_into_saved_indexes(artifact_dir: Path) -> None:
    from karma.cli import main

    assert main(["index", str(artifact_dir), "--kind", "hnsw", "--m", "8", "-k", "5"]) == 0
    model = load_artifact(artifact_dir, index="hnsw")
    model.add_items(new_items())
    save_catalog(model)
    reloaded = load_artifact(artifact_dir, index="hnsw")
    assert reloaded.num_items == model.num_items == reloaded.index.ntotal
    assert reloaded.resolve_items(["new1"]) == [model.num_items - 1]


def test_adding_an_existing_id_is_refused(serving_model: ServingModel) -> None:
    clash = new_items().assign(item_id="m3")
    with pytest.raises(KarmaError, match="m3"):
        serving_model.add_items(clash)


def test_a_missing_saved_index_names_the_command(serving_model: ServingModel) -> None:
    with pytest.raises(KarmaError, match="karma index"):
        serving_model.use_index("ivf")
