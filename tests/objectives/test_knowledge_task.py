"""The knowledge objectives inside the KARMA task: stages, weights, gradients, optimizer groups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from knowledge_fixtures import CallCounter

from karma.model.config import BackboneConfig, EncoderConfig, ModelConfig
from karma.objectives.action import ActionConfig
from karma.objectives.knowledge import KnowledgeConfig
from karma.testing.datasets import write_tiny_dataset
from karma.train.karma_task import DataConfig, KarmaTask

FEATURE_DIM = 6


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("data") / "tiny", feature_dim=FEATURE_DIM)


def make_task(root: Path, knowledge: KnowledgeConfig | dict, mode: str = "rec") -> KarmaTask:
    return KarmaTask(
        DataConfig(path=root, mode=mode, batch_size=4, max_history=5),  # type: ignore[arg-type]
        ModelConfig(
            BackboneConfig(name="tiny", tuning="lora"),
            EncoderConfig(embedding_dim=16, item_text_tokens=8),
        ),
        ActionConfig(num_negatives=8, temperature=0.1),
        knowledge=knowledge,
        seed=0,
    )


def test_action_only_builds_no_knowledge_modules(tiny_root: Path) -> None:
    task = make_task(tiny_root, KnowledgeConfig())
    assert task.model.knowledge is None and task.model.knowledge_catalog is None
    out = task.loss_step(next(iter(task.batches(0))), "joint")
    assert not any(name.startswith(("gen_", "rec_", "flow_")) for name in out.parts)


@pytest.mark.parametrize("mode", ["rec", "search"])
def test_joint_stage_adds_every_weighted_objective(tiny_root: Path, mode: str) -> None:
    config = {
        "generation_weight": 0.5,
        "reconstruction_weight": 1.0,
        "flow_weight": 0.1,
        "feature_name": "text",
        "positions_per_sequence": 2,
    }
    task = make_task(tiny_root, config, mode=mode)
    assert isinstance(task.knowledge_config, KnowledgeConfig)
    out = task.loss_step(next(iter(task.batches(0))), "joint")
    for part in (
        "gen_nll",
        "rec_nll",
        "flow_mse",
        "generation_weighted",
        "reconstruction_weighted",
    ):
        assert part in out.parts and np.isfinite(out.parts[part])
    out.loss.backward()
    knowledge = task.model.knowledge
    assert knowledge is not None
    assert all(p.grad is not None for p in knowledge.parameters())
    assert task.encoder.user_head.weight.grad is not None
    heads = {
        id(p)
        for g in task.optimizer_groups(1e-3)
        if g["name"].startswith("heads")
        for p in g["params"]
    }
    assert all(id(p) in heads for p in knowledge.parameters())


def test_warmup_with_only_item_text_skips_the_history_pass(tiny_root: Path) -> None:
    task = make_task(
        tiny_root, KnowledgeConfig(warmup_item_text_weight=1.0, warmup_items_per_batch=5)
    )
    trunk = CallCounter(task.encoder.backbone.model)
    batch = next(iter(task.batches(0)))
    out = task.loss_step(batch, "warmup")
    assert trunk.calls == 1 and "item_text_nll" in out.parts and "action" not in str(out.parts)
    out.loss.backward()
    assert task.encoder.item_projection.weight.grad is not None  # P_item is what warm-up aligns
    task.loss_step(batch, "joint")  # joint: the history pass only; item-text weight is warm-up only
    assert trunk.calls == 1 + len(task.history_groups(batch))


def test_zero_weight_objective_is_not_called_in_the_task(tiny_root: Path) -> None:
    task = make_task(tiny_root, KnowledgeConfig(flow_weight=0.2, feature_name="text"))
    trunk = CallCounter(task.encoder.backbone.model)
    knowledge = task.model.knowledge
    assert (
        knowledge is not None and knowledge.generation is None and knowledge.reconstruction is None
    )
    batch = next(iter(task.batches(0)))
    task.loss_step(batch, "joint")
    # the encoder's own pass (one per length group); no decoder pass for knowledge
    assert trunk.calls == len(task.history_groups(batch))


def test_frozen_base_reconstruction_runs_in_the_task_and_restores_the_adapters(
    tiny_root: Path,
) -> None:
    task = make_task(
        tiny_root,
        KnowledgeConfig(warmup_reconstruction_weight=1.0, reconstruction_decoder="frozen_base"),
    )
    task.loss_step(next(iter(task.batches(0))), "warmup").loss.backward()
    knowledge = task.model.knowledge
    assert knowledge is not None and knowledge.reconstruction is not None
    assert all(p.grad is not None for p in knowledge.reconstruction.parameters())
    assert task.encoder.user_head.weight.grad is not None  # through e_u into W_u
    lora = [p for n, p in task.encoder.backbone.named_parameters() if "lora_" in n]
    assert lora and all(p.requires_grad for p in lora)  # adapters back on, still trainable


def test_catalog_standardizes_features_per_dimension() -> None:
    from karma.train.knowledge_inputs import KnowledgeCatalog

    class _Tokenizer:
        eos_token_id = 1

        def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
            return {"input_ids": [2, 3]}

    features = np.array([[1.0, 10.0], [3.0, 10.0], [5.0, 10.0]], dtype=np.float32)
    catalog = KnowledgeCatalog(_Tokenizer(), ["a", "b", "c"], 4, features)
    # column 0: mean 3, std 2 -> [-1, 0, 1]; column 1 is constant -> 0 (std clamped)
    assert catalog.features.tolist() == [[-1.0, 0.0], [0.0, 0.0], [1.0, 0.0]]
    raw = KnowledgeCatalog(_Tokenizer(), ["a", "b", "c"], 4, features, standardize_features=False)
    assert raw.features.tolist() == features.tolist()
    assert catalog.text_ids.tolist() == [[2, 3, 1]] * 3
