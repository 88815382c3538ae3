"""Popularity and frozen-embedding baselines: hand-checkable rankings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from karma.baselines.frozen_llm import FrozenEmbeddingRetriever, pooled_input_embeddings
from karma.baselines.popularity import PopularityRetriever
from karma.data.dataset import Examples, PreparedDataset
from karma.eval.evaluate import evaluate
from karma.eval.ranking import top_k_items
from karma.testing.datasets import write_leave_one_out


def test_popularity_ranks_by_training_counts(tmp_path: Path) -> None:
    # Training clicks: item 0 x3, item 1 x2, item 2 x1 (last two clicks are valid/test).
    sequences = [[0, 1, 2, 3, 4], [0, 1, 5, 6], [0, 7, 8]]
    ds = PreparedDataset(write_leave_one_out(tmp_path / "ds", sequences, num_items=10))
    pop = PopularityRetriever.from_dataset(ds)
    assert pop.train_counts.tolist() == [3, 2, 1, 0, 0, 0, 0, 0, 0, 0]
    examples = Examples(["x"], [np.array([], dtype=np.int64)], np.array([0]), [None])
    idx, _ = top_k_items(pop.user_vectors(examples), pop.item_vectors(), 3)
    assert idx[0].tolist() == [0, 1, 2]
    pop.save(tmp_path)
    assert PopularityRetriever.load(tmp_path).train_counts.tolist() == pop.train_counts.tolist()
    result = evaluate(pop, ds, bootstrap=0)
    # Every test target is unclicked in training and ties with the other zero-count candidates.
    # User 0 (history 0-3 masked): no item above, tied with 5..9 -> HR@1 = 1/6. Users 1 and 2
    # still have item 2 (resp. 1 and 2) above the target -> 0. Mean 1/18.
    assert result.metrics["hr@1"] == pytest.approx(1 / 18)


def test_popularity_rejects_negative_counts() -> None:
    with pytest.raises(ValueError, match="train_counts"):
        PopularityRetriever(np.array([1, -1]))


def test_frozen_mean_and_recency() -> None:
    items = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    examples = Examples(["a"], [np.array([0, 1])], np.array([2]), [None])
    mean = FrozenEmbeddingRetriever(items).user_vectors(examples)
    np.testing.assert_allclose(mean[0], [0.5, 0.5])  # rows normalised: (1,0) and (0,1)
    recent = FrozenEmbeddingRetriever(items, decay=0.5).user_vectors(examples)
    # weights 0.5 (older), 1.0 (newer): (0.5 * (1,0) + (0,1)) / 1.5
    np.testing.assert_allclose(recent[0], [1 / 3, 2 / 3], rtol=1e-6)
    raw = FrozenEmbeddingRetriever(items, normalize=False).item_vectors()
    np.testing.assert_allclose(raw, items)


def test_pooled_input_embeddings() -> None:
    embedding = torch.nn.Embedding(5, 2)
    with torch.no_grad():
        embedding.weight.copy_(torch.arange(10, dtype=torch.float32).view(5, 2))
    vocab = {"a": 1, "b": 3}
    matrix = pooled_input_embeddings(
        ["a b", "b", ""], lambda t: [vocab[w] for w in t.split()], embedding
    )
    np.testing.assert_allclose(matrix, [[4.0, 5.0], [6.0, 7.0], [0.0, 0.0]])


def test_frozen_cli_roundtrip(tmp_path: Path) -> None:
    from karma.cli import main

    # Features: items 0-4 on one axis, 5-9 on another; users stay within one group.
    features = np.zeros((10, 2), dtype=np.float32)
    features[:5, 0] = 1.0
    features[5:, 1] = 1.0
    sequences = [[0, 1, 2, 3], [5, 6, 7, 8], [1, 2, 3, 4], [6, 7, 8, 9]]
    root = write_leave_one_out(tmp_path / "ds", sequences, 10, features={"toy": features})
    run_dir = tmp_path / "run"
    assert main(["baseline", "frozen", "--data", str(root), "--out", str(run_dir)]) == 0
    assert main(["evaluate", str(run_dir), "--bootstrap", "0"]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    # The target ties with the unmasked items of its group: 5 - 3 history = 2 candidates.
    assert metrics["hr@1"] == pytest.approx(0.5)
    assert metrics["hr@5"] == pytest.approx(1.0)
