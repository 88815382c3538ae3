"""Fidelity probes on synthetic embeddings whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from karma.diagnostics.probes import (
    ProbeConfig,
    category_matrix,
    category_probe,
    semantic_fidelity,
    split_users,
    text_alignment,
    title_probe,
)

USERS, CATEGORIES, DIM = 300, 5, 16


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    category = rng.integers(0, CATEGORIES, USERS)
    labels = np.eye(CATEGORIES, dtype=np.float32)[category]  # (U, C)
    encoded = labels @ rng.normal(size=(CATEGORIES, DIM)) + 0.1 * rng.normal(size=(USERS, DIM))
    random = rng.normal(size=(USERS, DIM))
    return labels, encoded.astype(np.float32), random.astype(np.float32)


def test_split_is_seeded_and_disjoint() -> None:
    train, test = split_users(10, 0.8, seed=3)
    assert len(train) == 8 and len(test) == 2 and not set(train) & set(test)
    assert np.array_equal(split_users(10, 0.8, seed=3)[1], test)
    with pytest.raises(ValueError, match="train_fraction"):
        ProbeConfig(train_fraction=1.0)


def test_category_probe_reads_linearly_encoded_categories() -> None:
    labels, encoded, random = _data()
    good = category_probe(encoded, labels)
    assert good["top1_accuracy"] > 0.95 and good["micro_f1"] > 0.9 and good["macro_f1"] > 0.9
    chance = category_probe(random, labels)
    assert chance["top1_accuracy"] < 0.4  # 5 balanced categories: chance is about 0.2
    assert chance["chance_top1"] < 0.4


def test_category_matrix_is_multi_hot() -> None:
    labels, names = category_matrix([["b", "a"], [], ["b"]])
    assert names == ["a", "b"]
    assert labels.tolist() == [[1, 1], [0, 0], [0, 1]]


def test_title_probe_decodes_titles_only_from_informative_embeddings() -> None:
    labels, encoded, random = _data()
    words = [["red", "apple"], ["blue", "sky", "today"], ["green", "tea"], ["old", "man"], ["sea"]]
    titles = [" ".join(words[int(c)]) for c in labels.argmax(1)]
    config = ProbeConfig(title_epochs=15)
    good = title_probe(encoded, titles, config)
    assert good["token_accuracy"] > 0.95
    # without E the first word is a 1-in-5 guess (the rest follow from it): perplexity well above 1
    assert good["perplexity"] < 1.1 < 1.4 < good["unconditional_perplexity"]
    noise = title_probe(random, titles, config)
    assert noise["token_accuracy"] < good["token_accuracy"] - 0.2


def test_text_alignment_recovers_a_linear_map_and_not_noise() -> None:
    rng = np.random.default_rng(1)
    _, encoded, random = _data()
    features = encoded @ rng.normal(size=(DIM, 8))  # a linear image of E in another dimension
    assert text_alignment(encoded, features)["cosine"] > 0.99
    noise = text_alignment(random, features)
    # noise can only learn the mean feature vector (the intercept): no better than the floor
    assert noise["cosine"] < noise["mean_feature_cosine"] + 0.05
    direct = text_alignment(features, features, fit_map=False)
    assert direct["cosine"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="target_features"):
        text_alignment(encoded, features, fit_map=False)


def test_semantic_fidelity_runs_the_probes_given() -> None:
    labels, encoded, _ = _data()
    cats = [[f"c{int(c)}"] for c in labels.argmax(1)]
    out = semantic_fidelity(encoded, target_categories=cats, target_features=encoded)
    assert set(out) == {"category", "text_alignment"}
