"""The KARMA task on a tiny dataset and a tiny random backbone: batches, loss, training, configs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from karma.config import field_docs, load_config
from karma.model.config import BackboneConfig, EncoderConfig, ModelConfig
from karma.objectives.action import ActionConfig
from karma.testing.datasets import write_tiny_dataset
from karma.train.karma_task import DataConfig, KarmaRetriever, KarmaTask, full_ranking_metrics
from karma.train.run_config import RunConfig, build_task

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("**/*.yaml"))
KARMA_CONFIGS = [p for p in CONFIGS if "action-only" in p.name or p.parent.name == "debug"]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("data") / "tiny")


def make_task(
    root: Path,
    mode: str = "rec",
    tuning: str = "lora",
    residual: float | None = None,
    length_groups: int = 4,
    **action: object,
) -> KarmaTask:
    data = DataConfig(
        path=root, mode=mode, batch_size=8, max_history=5, length_groups=length_groups
    )  # type: ignore[arg-type]
    return KarmaTask(
        data,
        ModelConfig(
            BackboneConfig(name="tiny", tuning=tuning),  # type: ignore[arg-type]
            EncoderConfig(
                embedding_dim=16, item_text_tokens=32, head_lr=1e-2, item_residual_ratio=residual
            ),
        ),
        ActionConfig(num_negatives=8, temperature=0.1, **action),  # type: ignore[arg-type]
        seed=0,
    )


def test_batches_are_deterministic_per_epoch_and_shift_targets(tiny_root: Path) -> None:
    task = make_task(tiny_root)
    first, again, other = list(task.batches(0)), list(task.batches(0)), list(task.batches(1))
    assert len(first) == task.num_batches(0) == math.ceil(24 / 8)
    assert all(np.array_equal(a.targets, b.targets) for a, b in zip(first, again))
    assert not all(np.array_equal(a.targets, b.targets) for a, b in zip(first, other))
    batch = first[0]
    for history, targets in zip(batch.histories, batch.targets):
        n = len(history)
        assert 1 <= n <= 5 and np.all(targets[n:] == -1)
        assert np.array_equal(history[1:], targets[: n - 1])  # target of position t is item t+1


def test_search_batches_have_one_target_and_its_query(tiny_root: Path) -> None:
    task = make_task(tiny_root, mode="search", hard_negatives=2)
    batch = next(iter(task.batches(0)))
    assert batch.targets.shape == (8,) and batch.queries is not None and all(batch.queries)
    assert batch.hard_negatives is not None and batch.hard_negatives.shape == (8, 2)
    out = task.loss_step(batch, "joint")
    assert torch.isfinite(out.loss) and out.parts["candidates"] > 8


@pytest.mark.parametrize("residual", [None, 0.3])  # 0.3: the semantic-anchored item tower
def test_loss_falls_and_every_trainable_parameter_changes(
    tiny_root: Path, residual: float | None
) -> None:
    torch.manual_seed(0)
    task = make_task(tiny_root, residual=residual, learn_temperature=True)
    probe = next(iter(task.batches(100)))
    with torch.no_grad():
        before_loss = task.loss_step(probe, "joint").loss.item()
    before = {n: p.detach().clone() for n, p in task.model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW(task.optimizer_groups(3e-3))
    steps = 0
    while steps < 30:
        for batch in task.batches(steps):
            optimizer.zero_grad()
            task.loss_step(batch, "joint").loss.backward()
            optimizer.step()
            steps += 1
    with torch.no_grad():
        after_loss = task.loss_step(probe, "joint").loss.item()
    assert after_loss < before_loss - 0.3
    unchanged = [
        n for n, p in task.model.named_parameters() if p.requires_grad and torch.equal(p, before[n])
    ]
    assert not unchanged, unchanged


@pytest.mark.parametrize("mode", ["rec", "search"])
def test_length_groups_give_the_loss_and_gradients_of_one_padded_pass(
    tiny_root: Path, mode: str
) -> None:
    """Groups of similar history length: the same targets in the same order, the same loss and
    the same gradient on every trainable weight as one pass padded to the longest history."""
    results = {}
    for groups in (1, 3):
        torch.manual_seed(0)
        task = make_task(tiny_root, mode=mode, length_groups=groups)
        batch = next(iter(task.batches(0)))
        assert len({len(h) for h in batch.histories}) > 1  # lengths differ: groups do form
        _, _, target_ids = task.interest_embeddings(batch)
        loss = task.loss_step(batch, "joint").loss
        loss.backward()
        grads = {n: p.grad.clone() for n, p in task.model.named_parameters() if p.grad is not None}
        results[groups] = (target_ids, float(loss.detach()), grads)
    (targets_one, loss_one, grads_one), (targets_grouped, loss_grouped, grads_grouped) = (
        results[1],
        results[3],
    )
    assert torch.equal(targets_one, targets_grouped)
    assert loss_grouped == pytest.approx(loss_one, rel=1e-5)
    assert grads_one.keys() == grads_grouped.keys() and grads_one
    for name, grad in grads_one.items():
        assert torch.allclose(grads_grouped[name], grad, rtol=1e-4, atol=1e-6), name


def test_optimizer_groups_split_backbone_and_heads(tiny_root: Path) -> None:
    task = make_task(tiny_root, tuning="full")
    groups = {g["name"]: g for g in task.optimizer_groups(1e-4)}
    assert groups["backbone"]["lr"] == 1e-4 and groups["heads"]["lr"] == 1e-2
    assert groups["heads_no_decay"]["weight_decay"] == 0.0
    counted = sum(len(g["params"]) for g in groups.values())
    assert counted == sum(1 for p in task.model.parameters() if p.requires_grad)
    assert not any(
        p is task.encoder.backbone.get_input_embeddings().weight
        for g in groups.values()
        for p in g["params"]
    )


def test_warmup_stage_without_knowledge_objectives_is_a_config_error(tiny_root: Path) -> None:
    from karma.errors import ConfigError

    task = make_task(tiny_root)
    with pytest.raises(ConfigError, match="warmup"):
        task.loss_step(next(iter(task.batches(0))), "warmup")


def test_full_ranking_metrics_by_hand() -> None:
    items = np.eye(4, dtype=np.float32)  # item j scores user·e_j = user[j]
    users = np.array([[0.9, 0.5, 0.1, 0.0], [0.9, 0.5, 0.1, 0.0]], dtype=np.float32)
    # user 0: target 2, history {0}: ranked item 1 > 2 -> rank 1; user 1: target 0 (in history, kept) -> rank 0
    got = full_ranking_metrics(
        users, items, [np.array([0]), np.array([0, 1])], np.array([2, 0]), k=1
    )
    assert got["hr@1"] == pytest.approx(0.5)
    assert got["ndcg@1"] == pytest.approx(0.5)
    assert got["mrr"] == pytest.approx((1 / 2 + 1) / 2)
    got10 = full_ranking_metrics(
        users, items, [np.array([0]), np.array([0, 1])], np.array([2, 0]), k=10
    )
    assert got10["ndcg@10"] == pytest.approx((1 / math.log2(3) + 1) / 2)


def test_validate_and_retriever(tiny_root: Path) -> None:
    task = make_task(tiny_root)
    metrics = task.validate()
    assert set(metrics) >= {"ndcg@10", "hr@10"} and 0 <= metrics["hr@10"] <= 1
    retriever = KarmaRetriever(task.encoder)
    examples = task.dataset.examples("test")
    assert retriever.item_vectors().shape == (task.dataset.num_items, 16)
    assert retriever.user_vectors(examples).shape == (len(examples), 16)
    assert task.model.training  # validate restores the training mode


@pytest.mark.parametrize("path", KARMA_CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_shipped_configs_parse_and_start_with_a_command(path: Path) -> None:
    config = load_config(RunConfig, path)
    assert isinstance(config, RunConfig)
    head = path.read_text(encoding="utf-8").splitlines()[:8]
    assert head[0].startswith("# ") and any(
        "karma train " + str(path.relative_to(path.parents[1].parent)) in line for line in head
    )


def test_every_run_config_field_is_documented() -> None:
    for cls in (RunConfig, DataConfig, ModelConfig, BackboneConfig, EncoderConfig, ActionConfig):
        docs = field_docs(cls)
        missing = [f for f in cls.__dataclass_fields__ if f not in docs]
        assert not missing, f"{cls.__name__}: {missing}"


def test_debug_config_builds_a_task_that_trains(tiny_root: Path) -> None:
    debug = Path(__file__).parents[2] / "configs" / "debug" / "tiny.yaml"
    config = load_config(RunConfig, debug, [f"data.path={tiny_root}"])
    task = build_task(config)
    out = task.loss_step(next(iter(task.batches(0))), "joint")
    out.loss.backward()
    assert torch.isfinite(out.loss)


def test_karma_train_command_runs_the_trainer(tiny_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("karma.train.trainer")
    from karma.cli import main

    run_dir = tmp_path / "run"
    argv = ["train", str(Path(__file__).parents[2] / "configs" / "debug" / "tiny.yaml")]
    argv += [
        f"data.path={tiny_root}",
        f"output_dir={run_dir}",
        "train.max_steps=4",
        "train.eval_every=4",
    ]
    argv += ["train.checkpoint_every=4", "train.tensorboard=false"]
    assert main([*argv, "--no-progress"]) == 0
    assert (run_dir / "run_config.yaml").is_file() and (run_dir / "log.jsonl").is_file()
    assert "progress_bar: false" in (run_dir / "run_config.yaml").read_text()  # --no-progress
    assert main(["train", argv[1], "data.batch_size=0"]) == 2  # a bad value is a one-line error


def test_loss_step_runs_under_bf16_autocast(tiny_root: Path) -> None:
    task = make_task(tiny_root, tuning="full")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = task.loss_step(next(iter(task.batches(0))), "joint")
    out.loss.backward()
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
