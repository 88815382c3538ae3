"""Cold items do not exist while training: never a negative for KARMA's action loss or SASRec+."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from karma.baselines.sasrec import SASRecConfig, SASRecTask
from karma.data.cold import strip_cold_interactions
from karma.data.dataset import PreparedDataset
from karma.model.config import BackboneConfig, EncoderConfig, ModelConfig
from karma.objectives.action import ActionConfig
from karma.testing.datasets import write_leave_one_out, write_tiny_dataset
from karma.train.karma_task import DataConfig, KarmaTask
from karma.train.knowledge_inputs import KnowledgeCatalog

COLD = "i5"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cold_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny dataset with item i5 made cold the way `karma data prepare` does it."""
    root = write_tiny_dataset(tmp_path_factory.mktemp("data") / "tiny")
    inter = pd.read_parquet(root / "interactions.parquet")
    kept, _ = strip_cold_interactions(inter, pd.Series([COLD]))
    kept.to_parquet(root / "interactions.parquet")
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["cold_items"] = {"item_ids": [COLD]}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def make_task(root: Path, **action: object) -> KarmaTask:
    return KarmaTask(
        DataConfig(path=root, batch_size=8, max_history=5),
        ModelConfig(
            BackboneConfig(name="tiny", tuning="lora"),  # type: ignore[arg-type]
            EncoderConfig(embedding_dim=16, item_text_tokens=32),
        ),
        ActionConfig(num_negatives=64, temperature=0.1, **action),  # type: ignore[arg-type]
        seed=0,
    )


def test_karma_full_softmax_leaves_the_cold_item_out(cold_root: Path) -> None:
    task = make_task(cold_root, negatives="full")
    cold = task.dataset.item_index[COLD]
    assert task.model.action.untrainable_items.nonzero().flatten().tolist() == [cold]
    batch = next(task.batches(0))
    user_emb, _, target_ids = task.interest_embeddings(batch)
    assert cold not in target_ids.tolist()
    out = task.action_loss(batch, user_emb, target_ids)
    # Reference: the cross-entropy over the warm columns only.
    catalog = task.encoder.item_embeddings()
    logits = user_emb @ catalog.T / task.model.action.temperature  # (K, N)
    warm = torch.ones(catalog.shape[0], dtype=torch.bool)
    warm[cold] = False
    remap = torch.cumsum(warm.long(), 0) - 1  # item index -> column among the warm items
    reference = F.cross_entropy(logits[:, warm], remap[target_ids])
    assert out.loss.item() == pytest.approx(reference.item(), rel=1e-5)


def test_karma_sampled_negatives_never_draw_the_cold_item(cold_root: Path) -> None:
    task = make_task(cold_root)
    cold = task.dataset.item_index[COLD]
    assert task.model.action.sampler.probs[cold] == 0
    for batch in task.batches(0):
        drawn = task.model.action.sample_negatives(torch.Generator().manual_seed(batch.seed))
        assert cold not in drawn.tolist()


def test_knowledge_catalog_draws_warm_items_only() -> None:
    class Tokenizer:
        def __call__(self, text: str, **_: object) -> dict[str, list[int]]:
            return {"input_ids": [1 + len(text)]}

    catalog = KnowledgeCatalog(Tokenizer(), ["a", "b", "c"], 4, trainable_items=np.array([1, 0, 1]))
    assert catalog.trainable_ids.tolist() == [0, 2]
    assert KnowledgeCatalog(Tokenizer(), ["a", "b"], 4).trainable_ids.tolist() == [0, 1]


def test_sasrec_loss_ignores_the_cold_item(tmp_path: Path) -> None:
    # Item 9 is cold: no training click, one user's test target.
    sequences = [[(s + t) % 9 for t in range(6)] for s in range(9)] + [[1, 2, 3, 4, 9]]
    ds = PreparedDataset(write_leave_one_out(tmp_path / "ds", sequences, 10, cold_items=[9]))
    assert ds.cold_items.tolist() == [9] and ds.train_item_counts()[9] == 0
    config = SASRecConfig(hidden=8, num_heads=1, max_len=8, dropout=0.0, batch_size=16)
    task = SASRecTask(ds, config)
    batch = next(task.batches(0))
    losses = []
    for value in (0.0, 3.0):
        with torch.no_grad():
            task.model.item_embedding.weight[10].fill_(value)  # row i + 1 = item 9
        task.model.zero_grad()
        out = task.loss_step(batch, "joint")
        out.loss.backward()
        losses.append(out.loss.item())
        assert task.model.item_embedding.weight.grad[10].abs().sum() == 0
        # Reference: cross-entropy over items 0..8 only.
        hidden = task.model(batch.inputs, batch.positions, batch.segments)  # packed rows
        real = batch.labels != 0
        logits = hidden[real] @ task.model.catalog_embeddings()[:9].T
        reference = F.cross_entropy(logits, batch.labels[real] - 1)
        assert out.loss.item() == pytest.approx(reference.item(), rel=1e-5)
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
