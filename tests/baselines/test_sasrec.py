"""SASRec+: learns a sequential pattern that popularity cannot, and saves/loads exactly."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from karma.baselines.popularity import PopularityRetriever
from karma.baselines.sasrec import (
    SASRec,
    SASRecBatch,
    SASRecConfig,
    SASRecRetriever,
    SASRecTask,
    next_item_loss,
    packed_windows,
    right_padded,
    training_windows,
)
from karma.config import ConfigError, load_config
from karma.data.dataset import PreparedDataset
from karma.eval.evaluate import evaluate
from karma.runs import load_retriever
from karma.runs.layout import start_run
from karma.runs.recipes.sasrec import SASRecRecipe, trainer_config
from karma.testing.datasets import write_leave_one_out

NUM_ITEMS = 30


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def successor_dataset(tmp_path: Path) -> PreparedDataset:
    """Every user clicks a run i, i+1, i+2, ... (mod N): the next item is always i + 1."""
    rng = np.random.default_rng(0)
    sequences = []
    for _ in range(120):
        start, length = rng.integers(0, NUM_ITEMS), rng.integers(5, 12)
        sequences.append([(start + t) % NUM_ITEMS for t in range(length)])
    return PreparedDataset(write_leave_one_out(tmp_path / "ds", sequences, NUM_ITEMS))


def tiny_config(**overrides: object) -> SASRecConfig:
    base = dict(
        hidden=16,
        num_blocks=1,
        num_heads=2,
        max_len=16,
        dropout=0.1,
        lr=5e-3,
        batch_size=32,
        epochs=10,
        patience=0,
        device="cpu",
    )
    base.update(overrides)
    return SASRecConfig(**base)  # type: ignore[arg-type]


def test_batches_are_deterministic_and_shifted(successor_dataset: PreparedDataset) -> None:
    task = SASRecTask(successor_dataset, tiny_config())
    first = next(task.batches(3))
    again = next(task.batches(3))
    assert torch.equal(first.inputs, again.inputs)
    assert not torch.equal(first.inputs, next(task.batches(4)).inputs)
    real = first.labels > 0
    # Labels are the inputs shifted by one step: here always item + 1 (mod N), in row + 1 space.
    expected = (first.inputs[real] - 1 + 1) % NUM_ITEMS + 1
    assert torch.equal(first.labels[real], expected)
    assert task.num_batches(0) == len(list(task.batches(0)))


def test_loss_falls_and_beats_popularity(
    successor_dataset: PreparedDataset, tmp_path: Path
) -> None:
    task = SASRecTask(successor_dataset, tiny_config())
    before = task.loss_step(next(task.batches(0)), "joint").parts["ce"]
    run_dir = tmp_path / "run"
    SASRecRecipe().train(tiny_config(), run_dir, successor_dataset.root, progress=False)
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["ce"] for r in log if r["kind"] == "train"][-1] < 0.5 * before
    sasrec = evaluate(load_retriever(run_dir), successor_dataset, bootstrap=0, segments=False)
    pop = evaluate(
        PopularityRetriever.from_dataset(successor_dataset), successor_dataset, bootstrap=0
    )
    assert sasrec.metrics["hr@1"] > 0.8
    assert sasrec.metrics["ndcg@10"] > pop.metrics["ndcg@10"] + 0.3


def test_every_parameter_trains(successor_dataset: PreparedDataset) -> None:
    task = SASRecTask(successor_dataset, tiny_config(dropout=0.0))
    before = {k: v.detach().clone() for k, v in task.model.named_parameters()}
    optimizer = torch.optim.Adam(task.model.parameters(), lr=1e-2)
    out = task.loss_step(next(task.batches(0)), "joint")
    out.loss.backward()
    optimizer.step()
    for name, param in task.model.named_parameters():
        assert not torch.equal(param, before[name]), name


def test_save_load_roundtrip(successor_dataset: PreparedDataset, tmp_path: Path) -> None:
    task = SASRecTask(successor_dataset, tiny_config())
    retriever = SASRecRetriever(task.model)
    run_dir = tmp_path / "run"
    retriever.save(run_dir)
    start_run(run_dir, "sasrec", successor_dataset.root, options={"num_items": NUM_ITEMS})
    loaded = load_retriever(run_dir)
    examples = successor_dataset.examples("test")
    np.testing.assert_allclose(
        loaded.user_vectors(examples), retriever.user_vectors(examples), atol=1e-6
    )
    np.testing.assert_array_equal(loaded.item_vectors(), retriever.item_vectors())


def test_config_validation_names_field() -> None:
    with pytest.raises(ValueError, match="num_heads"):
        SASRecConfig(hidden=10, num_heads=3)
    with pytest.raises(ValueError, match="precision"):
        SASRecConfig(precision="fp16")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="dropout"):
        load_config(SASRecConfig, None, ["dropout=1.5"])


@pytest.mark.parametrize("name", ["ml-100k", "ml-1m"])
def test_shipped_configs_parse(name: str) -> None:
    path = Path(__file__).parents[2] / "configs" / name / "sasrec.yaml"
    config = load_config(SASRecConfig, path)
    assert config.hidden == 64


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_trainer_run_dir_evaluates(
    successor_dataset: PreparedDataset, tmp_path: Path, precision: str
) -> None:
    run_dir = tmp_path / "run"
    config = tiny_config(epochs=6, precision=precision)
    assert trainer_config(config, 1).precision == precision  # bf16: the Trainer autocasts
    SASRecRecipe().train(config, run_dir, successor_dataset.root, progress=False)
    assert (run_dir / "best").is_dir()
    info = json.loads((run_dir / "run.json").read_text())
    assert info["kind"] == "sasrec" and info["status"] == "finished"
    assert info["options"] == {"num_items": NUM_ITEMS} and info["best_step"] is not None
    loaded = load_retriever(run_dir)
    result = evaluate(loaded, successor_dataset, bootstrap=0, segments=False)
    assert result.metrics["hr@10"] > 0.5


def test_cli_baseline_sasrec(
    successor_dataset: PreparedDataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from karma.cli import main

    run_dir = tmp_path / "cli_run"
    args = ["baseline", "sasrec", "--data", str(successor_dataset.root), "--out", str(run_dir)]
    overrides = ["hidden=16", "num_blocks=1", "max_len=16", "epochs=2", "device=cpu"]
    assert main([*args, "--no-progress", *overrides]) == 0
    assert "joint:" not in capsys.readouterr().err  # no progress bar
    assert main(["evaluate", str(run_dir), "--bootstrap", "0", "--split", "valid"]) == 0
    assert (run_dir / "metrics_valid.json").is_file()
    assert main([*args, "epochs=abc"]) == 2  # a bad override is a one-line user error


@pytest.fixture
def featured_dataset(tmp_path: Path) -> PreparedDataset:
    """The successor pattern, with one-hot 'text' features and item 29 never clicked in training."""
    rng = np.random.default_rng(0)
    sequences = []
    for _ in range(120):
        start, length = rng.integers(0, NUM_ITEMS - 1), rng.integers(5, 12)
        sequences.append([(start + t) % (NUM_ITEMS - 1) for t in range(length)])
    features = {"text": np.eye(NUM_ITEMS, 8, dtype=np.float32) + 0.1}
    root = write_leave_one_out(tmp_path / "ds", sequences, NUM_ITEMS, features=features)
    return PreparedDataset(root)


@pytest.mark.parametrize("residual, drop", [(None, 0.0), (0.5, 0.0), (0.5, 0.5)])
def test_text_sasrec_embeds_items_from_features(
    featured_dataset: PreparedDataset, tmp_path: Path, residual: float | None, drop: float
) -> None:
    config = tiny_config(
        item_features="text", item_residual_ratio=residual, item_residual_dropout=drop, epochs=3
    )
    task = SASRecTask(featured_dataset, config)
    model = task.model
    assert model.item_embedding is None  # no free ID table
    if residual is not None:
        assert model.item_residual is not None and model.item_residual.dropout == drop
    features = torch.from_numpy(featured_dataset.features("text")[1])
    with torch.no_grad():
        anchors = model.item_projection(features)
    assert torch.equal(model.catalog_embeddings().detach(), anchors)  # residual starts at zero
    run_dir = tmp_path / "run"
    SASRecRecipe().train(config, run_dir, featured_dataset.root, progress=False)
    loaded = load_retriever(run_dir)  # the features travel with the weights
    items = torch.from_numpy(loaded.item_vectors())
    with torch.no_grad():
        anchors = loaded.model.item_projection(features)
    assert torch.allclose(items[29], anchors[29])  # never trained: exactly its anchor
    moved = (items - anchors).norm(dim=1)
    if residual is None:
        assert torch.allclose(items, anchors)
    else:
        assert moved[:29].max() > 0
        assert (moved <= residual * anchors.norm(dim=1) * (1 + 1e-5)).all()


def test_text_sasrec_config_checks(featured_dataset: PreparedDataset) -> None:
    with pytest.raises(ValueError, match="item_residual_ratio needs item_features"):
        tiny_config(item_residual_ratio=0.5)
    with pytest.raises(ValueError, match="item_residual_dropout needs item_residual_ratio"):
        tiny_config(item_features="text", item_residual_dropout=0.2)
    from karma.errors import DataError

    with pytest.raises(DataError, match="no features named 'nope'"):
        SASRecTask(featured_dataset, tiny_config(item_features="nope"))


# ------------------------------------------------------- the fast path against a slow reference


def reference_hidden(model: SASRec, items: torch.Tensor) -> torch.Tensor:
    """The plain formulation: right-padded rows through `nn.TransformerEncoder` (B, T, D)."""
    length = items.shape[1]
    x = model.item_embedding(items) * model.config.hidden**0.5 + model.position_embedding(
        torch.arange(length)
    )
    causal = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)
    return model.final_norm(model.blocks(x, mask=causal))


def reference_loss(
    model: SASRec, windows: list[np.ndarray], untrainable: torch.Tensor | None
) -> torch.Tensor:
    """One right-padded window a row, the full (M, N) logits, `F.cross_entropy`."""
    inputs, _ = right_padded([w[:-1] for w in windows], model.config.max_len)
    labels, _ = right_padded([w[1:] for w in windows], model.config.max_len)
    hidden = reference_hidden(model, inputs)
    real = labels != 0
    logits = hidden[real] @ model.catalog_embeddings().T
    if untrainable is not None:
        logits = logits.masked_fill(untrainable, float("-inf"))
    return F.cross_entropy(logits, labels[real] - 1)


@settings(max_examples=25, deadline=None)
@given(
    lengths=st.lists(st.integers(2, 9), min_size=1, max_size=10),
    heads=st.sampled_from([1, 2]),
    cold=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_packed_fused_loss_matches_padded_reference(
    lengths: list[int], heads: int, cold: bool, seed: int
) -> None:
    """Same loss and same gradient on every parameter (dropout off: the only randomness)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    config = tiny_config(hidden=8, num_heads=heads, num_blocks=2, max_len=8, dropout=0.0)
    model = SASRec(NUM_ITEMS, config)
    untrainable = None
    if cold:  # the last five items are never candidates (and never targets)
        untrainable = torch.arange(NUM_ITEMS) >= NUM_ITEMS - 5
    windows = [rng.integers(0, NUM_ITEMS - 5, size=n) for n in lengths]

    expected = reference_loss(model, windows, untrainable)
    expected.backward()
    expected_grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    batch = SASRecBatch(*packed_windows(windows, config.max_len))
    assert batch.inputs.shape[0] <= len(windows)
    loss = next_item_loss(model, batch, untrainable)
    loss.backward()

    torch.testing.assert_close(loss, expected)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, expected_grads[name], msg=name)


def test_bf16_loss_is_the_fp32_loss_in_mixed_precision(
    successor_dataset: PreparedDataset,
) -> None:
    # precision: bf16 = the Trainer's bf16 autocast + bf16 operands for the logits' matmuls: the
    # same loss from the same weights to bf16 rounding, and every parameter still gets a gradient.
    task = SASRecTask(successor_dataset, tiny_config(dropout=0.0))
    batch = next(task.batches(0))
    fp32 = task.loss_step(batch, "joint").loss
    task.model.config = dataclasses.replace(task.model.config, precision="bf16")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = task.loss_step(batch, "joint").loss
    bf16.backward()
    assert bf16.item() == pytest.approx(fp32.item(), rel=2e-2)
    assert bf16.item() != fp32.item()  # it did run in bf16
    for name, param in task.model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_training_windows_by_hand() -> None:
    sequences = [np.arange(12), np.array([5]), np.array([7, 8])]
    # Windows of at most 5 clicks from the end, overlapping by one: 11 steps of the first
    # sequence trained once each (4 + 4 + 3); the one-click sequence teaches nothing.
    every = training_windows(sequences, max_len=4)
    assert [w.tolist() for w in every] == [
        [7, 8, 9, 10, 11],
        [3, 4, 5, 6, 7],
        [0, 1, 2, 3],
        [7, 8],
    ]
    last = training_windows(sequences, max_len=4, last_only=True)
    assert [w.tolist() for w in last] == [[7, 8, 9, 10, 11], [7, 8]]
    with pytest.raises(ValueError, match="windows"):
        SASRecConfig(windows="first")  # type: ignore[arg-type]


def test_last_window_task_trains_one_window_per_user(successor_dataset: PreparedDataset) -> None:
    every = SASRecTask(successor_dataset, tiny_config(max_len=4))
    last = SASRecTask(successor_dataset, tiny_config(max_len=4, windows="last"))
    users = [s for s in successor_dataset.train_sequences() if len(s) > 1]
    assert len(last.sequences) == len(users) < len(every.sequences)
    for window, seq in zip(last.sequences, users):
        assert window.tolist() == seq[-5:].tolist()


def test_packing_places_every_step_once() -> None:
    windows = [np.arange(n) + 10 * n for n in (9, 2, 5, 4, 3, 7)]  # 8 + 1 + 4 + 3 + 2 + 6 steps
    inputs, labels, positions, segments = packed_windows(windows, max_len=8)
    assert inputs.shape == (3, 8)  # 24 steps fit exactly in three rows of eight
    for index, window in enumerate(windows):
        mine = segments == index
        assert torch.equal(inputs[mine], torch.from_numpy(window[:-1] + 1))
        assert torch.equal(labels[mine], torch.from_numpy(window[1:] + 1))
        assert torch.equal(positions[mine], torch.arange(len(window) - 1))
    assert not bool((segments == -1).any())


def test_user_vectors_match_reference_in_any_order(successor_dataset: PreparedDataset) -> None:
    task = SASRecTask(successor_dataset, tiny_config(num_blocks=2))
    task.model.eval()
    examples = successor_dataset.examples("test")
    items, lengths = right_padded(examples.histories, task.model.config.max_len)
    with torch.no_grad():
        hidden = reference_hidden(task.model, items)
    expected = hidden[torch.arange(len(lengths)), lengths - 1].numpy()
    np.testing.assert_allclose(
        SASRecRetriever(task.model, batch_size=7).user_vectors(examples), expected, atol=1e-5
    )


def test_dropout_rate_and_scale_by_hand() -> None:
    """p = 0.2 drops k = round(0.2 · 2^16) = 13,107 of every 2^16 bit patterns and scales the rest
    by 2^16 / 52,429, so the output's expectation is x exactly; every 16-bit lane of the int64
    draws drops at that rate (a draw without its sign bit would keep one lane in four)."""
    from karma.baselines.sasrec import dropout

    x = torch.full((4, 1000, 1000), 3.0)
    assert dropout(x, 0.2, training=False) is x
    assert dropout(x, 0.0, training=True) is x
    torch.manual_seed(0)
    out = dropout(x, 0.2, training=True)
    scale = 65536 / 52429
    assert torch.equal(out.unique(), torch.tensor([0.0, 3.0 * scale]))
    dropped = out.eq(0).flatten().double()
    rate, sigma = 13107 / 65536, (0.2 * 0.8 / dropped.numel() * 4) ** 0.5  # per lane
    for lane in range(4):
        assert abs(dropped[lane::4].mean().item() - rate) < 5 * sigma
    assert abs(out.double().mean().item() - 3.0) < 5 * 3.0 * scale * sigma / 2
    torch.manual_seed(0)
    assert torch.equal(dropout(x, 0.2, training=True), out)  # seeded: reproducible


def test_dropout_keeps_dtype_and_gradient_is_the_mask() -> None:
    from karma.baselines.sasrec import dropout

    x = torch.randn(3, 7, 5, dtype=torch.bfloat16, requires_grad=True)  # 105: not a multiple of 4
    out = dropout(x, 0.5, training=True)
    assert out.dtype == torch.bfloat16 and out.shape == x.shape
    out.sum().backward()
    assert x.grad is not None
    kept = out != 0
    assert torch.equal(x.grad[kept], torch.full_like(x.grad[kept], 2.0))
    assert torch.equal(x.grad[~kept], torch.zeros_like(x.grad[~kept]))
