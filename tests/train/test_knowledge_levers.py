"""The knowledge–action levers inside the KARMA task and through the Trainer.

Gradient control, per-objective gradient norms, weight schedules, item tokens with frozen features
and the item-ID embedding combined with KARMA, and search mode end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from karma.model.config import BackboneConfig, EncoderConfig, ModelConfig
from karma.objectives.action import ActionConfig
from karma.objectives.knowledge import KnowledgeConfig
from karma.testing.datasets import write_tiny_dataset
from karma.train.config import TrainConfig
from karma.train.gradient_balance import flat_norm
from karma.train.karma_task import DataConfig, KarmaRetriever, KarmaTask
from karma.train.task import StepInfo
from karma.train.trainer import Trainer

KNOWLEDGE = {
    "generation_weight": 0.5,
    "reconstruction_weight": 1.0,
    "flow_weight": 0.3,
    "feature_name": "text",
    "positions_per_sequence": 1,
}


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("data") / "tiny", feature_dim=6)


def make_task(
    root: Path, mode: str = "rec", features: str | None = None, item_id: bool = False, **knowledge
) -> KarmaTask:
    return KarmaTask(
        DataConfig(path=root, mode=mode, batch_size=4, max_history=5),  # type: ignore[arg-type]
        ModelConfig(
            BackboneConfig(name="tiny", tuning="lora"),
            EncoderConfig(
                embedding_dim=16, item_text_tokens=8, features=features, item_id_embedding=item_id
            ),
        ),
        ActionConfig(num_negatives=8, temperature=0.1),
        knowledge=KnowledgeConfig(**{**KNOWLEDGE, **knowledge}),
        seed=0,
    )


def term_gradients(task: KarmaTask, batch: object) -> tuple[list, dict[str, list]]:
    """Every trainable parameter and each loss term's gradient on it (None = not reached)."""
    params = [p for p in task.model.parameters() if p.requires_grad]
    torch.manual_seed(1)  # the flow objective draws its noise from torch's global generator
    out = task.loss_step(batch, "joint")  # type: ignore[arg-type]
    grads = {
        name: list(torch.autograd.grad(term, params, retain_graph=True, allow_unused=True))
        for name, term in out.terms.items()
    }
    return params, grads


def test_clip_ratio_in_the_task_matches_the_formula(tiny_root: Path) -> None:
    ratio = 0.05  # small enough that every knowledge term is clipped
    task = make_task(tiny_root, grad_control="clip_ratio", grad_ratio=ratio, log_grad_norms=True)
    batch = next(iter(task.batches(0)))
    params, grads = term_gradients(task, batch)
    assert set(grads) == {"action", "generation", "reconstruction", "flow"}
    candidates = {id(p) for p in task.encoder.parameters()} - {
        id(p) for p in task.encoder.item_head.parameters()
    }
    others = [n for n in grads if n != "action"]
    shared = [
        id(p) in candidates
        and grads["action"][j] is not None
        and any(grads[n][j] is not None for n in others)
        for j, p in enumerate(params)
    ]
    action_norm = flat_norm(grads["action"], shared)
    factor = {n: min(1.0, ratio * action_norm / flat_norm(grads[n], shared)) for n in others}
    assert all(f < 1.0 for f in factor.values())
    expected = []
    for j, is_shared in enumerate(shared):
        total = torch.zeros_like(params[j])
        for name, g in grads.items():
            if g[j] is not None:
                total += g[j] * (factor[name] if is_shared and name != "action" else 1.0)
        expected.append(total)

    task.start_step(StepInfo("joint", 0, 10, log=True))
    torch.manual_seed(1)
    parts = task.backward(task.loss_step(batch, "joint"), scale=1.0)
    for param, want in zip(params, expected):
        assert torch.allclose(param.grad, want, atol=1e-6, rtol=1e-5)
    for name in others:
        assert parts[f"gradnorm_{name}_controlled"] == pytest.approx(
            ratio * parts["gradnorm_action"], rel=1e-4
        )
    knowledge = task.model.knowledge
    assert knowledge is not None
    flow_head = next(iter(knowledge.flow.parameters()))  # a knowledge head: its own gradient
    j = next(j for j, p in enumerate(params) if p is flow_head)
    assert not shared[j] and torch.equal(flow_head.grad, grads["flow"][j])


@pytest.mark.parametrize("control", ["none", "clip_ratio"])
def test_protected_item_tokens_get_only_the_action_gradient(tiny_root: Path, control: str) -> None:
    task = make_task(
        tiny_root, features="text", item_id=True, grad_control=control, protect_item_tokens=True
    )
    batch = next(iter(task.batches(0)))
    params, grads = term_gradients(task, batch)
    item_tokens = {id(p) for p in task.encoder.item_token_parameters()}
    assert item_tokens == {
        id(p)
        for m in (task.encoder.item_projection, task.encoder.item_id_embedding)
        for p in m.parameters()  # type: ignore[union-attr]
    }
    reached = [  # item-token parameters some knowledge term does reach: the test has teeth
        j
        for j, p in enumerate(params)
        if id(p) in item_tokens and any(g[j] is not None for n, g in grads.items() if n != "action")
    ]
    assert reached
    task.start_step(StepInfo("joint", 0, 10, log=False))
    torch.manual_seed(1)
    task.backward(task.loss_step(batch, "joint"), scale=1.0)
    for j in reached:
        assert torch.allclose(params[j].grad, grads["action"][j], atol=1e-6, rtol=1e-5)
    names = {id(p): n for n, p in task.model.named_parameters()}
    llm = next(  # a LoRA B matrix (A's gradient is 0 while B is at its zero init)
        j
        for j, p in enumerate(params)
        if "lora_B" in names[id(p)] and grads["generation"][j] is not None
    )
    knowledge_part = sum(g[llm] for n, g in grads.items() if n != "action" and g[llm] is not None)
    assert not torch.allclose(params[llm].grad, grads["action"][llm])  # the LLM still gets it
    if control == "none":  # unclipped: exactly action + knowledge there
        assert torch.allclose(params[llm].grad, grads["action"][llm] + knowledge_part, atol=1e-6)


@pytest.mark.parametrize("mode", ["rec", "search"])
def test_separate_readout_is_the_batch_readout_on_its_own_graph(tiny_root: Path, mode: str) -> None:
    from karma.train.knowledge_inputs import build_knowledge_batch

    task = make_task(tiny_root, mode=mode, positions_per_sequence=2, sequences_per_batch=2)
    batch = next(iter(task.batches(0)))
    user_emb, _, _ = task.interest_embeddings(batch)
    catalog = task.model.knowledge_catalog
    assert catalog is not None

    def inputs(separate: bool) -> torch.Tensor:
        out = build_knowledge_batch(
            task.encoder,
            catalog,
            task.knowledge_config,
            "joint",
            batch.histories,
            batch.queries,
            batch.targets,
            user_emb,
            batch.seed,
            separate_readout=separate,
        )
        assert out.interest_embedding is not None
        return out.interest_embedding

    shared, separate = inputs(False), inputs(True)
    assert len(separate) == (4 if mode == "rec" else 2)  # 2 sequences x (2 positions | [INTEREST])
    assert torch.allclose(separate, shared, atol=1e-5)
    # The separate rows do not read the batch's forward: a backward from them skips that graph.
    assert torch.autograd.grad(separate.sum(), user_emb, allow_unused=True) == (None,)
    assert torch.autograd.grad(shared.sum(), user_emb, allow_unused=True)[0] is not None
    # Samples from every sequence of the batch: nothing to skip, the batch's readout is reused.
    task.knowledge_config.sequences_per_batch = None
    assert torch.autograd.grad(inputs(True).sum(), user_emb, allow_unused=True)[0] is not None


def test_per_term_backward_with_separate_readouts_matches_one_plain_backward(
    tiny_root: Path,
) -> None:
    """A clip that never binds (ratio 1e9) must give exactly the plain step's gradient: the
    controlled step's L_rec / L_flow read e_u from their own forward, the plain one from the batch's."""
    plain, controlled = (
        make_task(tiny_root),
        make_task(tiny_root, grad_control="clip_ratio", grad_ratio=1e9),
    )
    controlled.model.load_state_dict(plain.model.state_dict())
    batch = next(iter(plain.batches(0)))
    torch.manual_seed(1)  # the flow objective draws its noise from torch's global generator
    plain.backward(plain.loss_step(batch, "joint"), 0.5)
    controlled.start_step(StepInfo("joint", 0, 10, log=False))
    torch.manual_seed(1)
    out = controlled.loss_step(batch, "joint")
    assert {"reconstruction", "flow"} <= set(out.terms)
    controlled.backward(out, 0.5)
    compared = 0
    for a, b in zip(plain.model.parameters(), controlled.model.parameters()):
        assert (a.grad is None) == (b.grad is None)
        if a.grad is not None:
            assert torch.allclose(a.grad, b.grad, atol=1e-6, rtol=1e-4)
            compared += 1
    assert compared > 10


def test_measuring_leaves_the_gradient_bit_identical(tiny_root: Path) -> None:
    plain, measured = make_task(tiny_root), make_task(tiny_root, log_grad_norms=True)
    batch = next(iter(plain.batches(0)))
    torch.manual_seed(1)  # the flow objective draws its noise from torch's global generator
    assert plain.backward(plain.loss_step(batch, "joint"), 0.5) == {}
    measured.start_step(StepInfo("joint", 9, 10, log=True))
    torch.manual_seed(1)
    parts = measured.backward(measured.loss_step(batch, "joint"), 0.5)
    assert parts["gradnorm_action"] > 0 and parts["gradnorm_reconstruction"] > 0
    assert -1.0 <= parts["gradcos_flow"] <= 1.0
    for a, b in zip(plain.model.parameters(), measured.model.parameters()):
        assert (a.grad is None) == (b.grad is None)
        assert a.grad is None or torch.equal(a.grad, b.grad)
    measured.start_step(StepInfo("joint", 3, 10, log=False))  # not a log step: nothing measured
    assert measured.backward(measured.loss_step(batch, "joint"), 0.5) == {}


def test_delayed_start_does_not_run_the_knowledge_objectives(tiny_root: Path) -> None:
    task = make_task(tiny_root, start_step=3, schedule="linear", final_ratio=0.5)
    calls = []
    task.encoder.backbone.model.register_forward_pre_hook(lambda *_: calls.append(1))
    batch = next(iter(task.batches(0)))
    task.start_step(StepInfo("joint", 2, 13, log=False))
    out = task.loss_step(batch, "joint")
    assert len(calls) == len(task.history_groups(batch))  # the encoder's pass only
    assert set(out.terms) == {"action"}
    assert not any(name.endswith("_weighted") for name in out.parts)
    task.start_step(StepInfo("joint", 8, 13, log=False))  # p = 5 / 9, factor 1 - 0.5 p
    out = task.loss_step(batch, "joint")
    factor = 1 - 0.5 * 5 / 9
    assert out.parts["reconstruction_weighted"] == pytest.approx(factor * out.parts["rec_nll"])


@pytest.mark.parametrize("mode", ["rec", "search"])
def test_trainer_runs_karma_with_features_item_id_and_every_lever(
    tiny_root: Path, tmp_path: Path, mode: str
) -> None:
    task = make_task(
        tiny_root,
        mode=mode,
        features="text",
        item_id=True,
        grad_control="pcgrad" if mode == "rec" else "clip_ratio",
        grad_ratio=0.5,
        log_grad_norms=True,
        schedule="cosine",
        start_step=2,
        warmup_item_text_weight=1.0,
    )
    assert task.encoder.item_features is not None and task.encoder.item_id_embedding is not None
    before = {n: p.detach().clone() for n, p in task.model.named_parameters() if p.requires_grad}
    config = TrainConfig(
        lr=1e-2,
        max_steps=6,
        semantic_warmup_steps=2,
        lr_warmup_steps=1,
        grad_accum=2,
        precision="bf16",  # CPU autocast: no GradScaler anywhere (bf16 needs none)
        eval_every=0,
        checkpoint_every=0,
        log_every=2,
        tensorboard=False,
        progress_bar=False,
        num_threads=1,
    )
    Trainer(config, task, tmp_path).fit()
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    train = [r for r in lines if r["kind"] == "train"]
    joint = [r for r in train if r["stage"] == "joint"]
    assert [r["stage_step"] for r in joint] == [2, 4, 6]
    assert "reconstruction_weighted" not in joint[0]  # steps 0-1 of the joint stage: delayed
    assert "gradnorm_reconstruction" in joint[1] and joint[1]["gradnorm_action"] > 0
    assert "gradnorm_reconstruction_controlled" in joint[1]
    assert all(np.isfinite(r["loss"]) for r in train)
    assert not any("gradnorm_action" in r for r in train if r["stage"] == "warmup")
    unchanged = [
        n for n, p in task.model.named_parameters() if p.requires_grad and torch.equal(p, before[n])
    ]
    assert not unchanged, unchanged


def test_search_mode_reads_the_query_and_evaluates(tiny_root: Path) -> None:
    from karma.data.dataset import PreparedDataset
    from karma.eval.evaluate import evaluate

    task = make_task(tiny_root, mode="search")
    history = [np.array([0, 6, 12])]
    encoder = task.encoder
    encoder.eval()
    comedy = encoder.encode_users(history, ["comedy"])
    horror = encoder.encode_users(history, ["horror"])
    assert not torch.allclose(comedy, horror)  # only the query differs
    assert torch.equal(comedy, encoder.encode_users(history, ["comedy"]))
    result = evaluate(KarmaRetriever(encoder), PreparedDataset(tiny_root), "test", bootstrap=20)
    assert 0.0 <= result.metrics["hr@10"] <= 1.0
    examples = PreparedDataset(tiny_root).examples("test")
    assert all(examples.queries)  # evaluation hands the retriever each target's query


def test_run_config_rejects_levers_that_cannot_work() -> None:
    from karma.config import load_config
    from karma.errors import ConfigError
    from karma.train.run_config import RunConfig

    with pytest.raises(ConfigError, match="start_step"):
        load_config(RunConfig, None, ["knowledge.start_step=10", "train.max_steps=10"])
    with pytest.raises(ConfigError, match="grad_control"):
        load_config(
            RunConfig,
            None,
            ["knowledge.grad_control=pcgrad", "train.distributed=fsdp", "train.device=cuda"],
        )
    assert load_config(RunConfig, None, ["knowledge.start_step=9", "train.max_steps=10"])
