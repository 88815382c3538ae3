"""Full KARMA through the Trainer: semantic warm-up, then joint training with every objective on."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from karma.config import load_config
from karma.testing.datasets import write_tiny_dataset
from karma.train.run_config import RunConfig, build_task
from karma.train.trainer import Trainer

TINY = Path(__file__).resolve().parents[2] / "configs" / "debug" / "tiny.yaml"


def test_warmup_then_joint_changes_every_trainable_parameter(tmp_path: Path) -> None:
    data = write_tiny_dataset(tmp_path / "data", feature_dim=6)
    run_dir = tmp_path / "run"
    overrides = [
        f"data.path={data}",
        f"output_dir={run_dir}",
        "model.backbone.tuning=lora",  # LoRA adapters + new heads train, the base stays frozen
        "action.learn_temperature=true",
        "knowledge.generation_weight=0.5",
        "knowledge.reconstruction_weight=0.5",
        "knowledge.flow_weight=0.5",
        "knowledge.feature_name=text",
        "knowledge.flow_hidden=16",
        "knowledge.warmup_item_text_weight=1.0",
        "knowledge.warmup_reconstruction_weight=0.5",
        "train.semantic_warmup_steps=2",
        "train.max_steps=3",
        "train.lr=0.01",
        "train.lr_warmup_steps=0",
        "train.eval_every=0",
        "train.checkpoint_every=0",
        "train.log_every=1",
        "train.tensorboard=false",
        "train.progress_bar=false",
        "train.num_threads=1",
    ]
    config = load_config(RunConfig, TINY, overrides)
    task = build_task(config)
    before = {n: p.detach().clone() for n, p in task.model.named_parameters() if p.requires_grad}
    frozen = {
        n: p.detach().clone() for n, p in task.model.named_parameters() if not p.requires_grad
    }
    assert any(n.startswith("knowledge.") for n in before)  # g and the flow head train too
    assert any("lora_" in n for n in before)

    Trainer(config.train, task, run_dir).fit()

    unchanged = [
        n for n, p in task.model.named_parameters() if n in before and torch.equal(p, before[n])
    ]
    assert unchanged == []
    changed_frozen = [
        n for n, p in task.model.named_parameters() if n in frozen and not torch.equal(p, frozen[n])
    ]
    assert changed_frozen == []  # the LLM's base weights stay as loaded
    stages = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    train_stages = [r["stage"] for r in stages if r["kind"] == "train"]
    assert train_stages == ["warmup", "warmup", "joint", "joint", "joint"]
