"""`karma diagnose` end to end on a tiny prepared dataset and a tiny random KARMA encoder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import karma.runs as runs
from karma.data.dataset import Examples, PreparedDataset
from karma.diagnostics.attention import collect_readout_attention
from karma.diagnostics.commands import register
from karma.errors import KarmaError
from karma.model.backbone import load_backbone
from karma.model.config import BackboneConfig, EncoderConfig
from karma.model.encoder import KarmaEncoder
from karma.runs.layout import start_run
from karma.testing.datasets import write_leave_one_out

NUM_ITEMS = 12


def main(argv: list[str]) -> int:
    """`karma` with only the diagnose command (other areas' commands are not under test here)."""
    import argparse

    parser = argparse.ArgumentParser(prog="karma")
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def _dataset(root: Path) -> Path:
    rng = np.random.default_rng(0)
    sequences = [rng.integers(0, NUM_ITEMS, rng.integers(4, 9)).tolist() for _ in range(30)]
    write_leave_one_out(root, sequences, NUM_ITEMS)
    items = pd.read_parquet(root / "items.parquet")
    items["categories"] = [["even"] if i % 2 == 0 else ["odd"] for i in range(NUM_ITEMS)]
    items.to_parquet(root / "items.parquet", index=False)
    return root


def _encoder(titles: list[str]) -> KarmaEncoder:
    torch.manual_seed(0)
    backbone, tokenizer = load_backbone(BackboneConfig(name="tiny", tuning="full"))
    config = EncoderConfig(embedding_dim=8, instruction="Next:")
    return KarmaEncoder(config, backbone, tokenizer, titles, max_history=6)


class _Retriever:
    def __init__(self, encoder: KarmaEncoder) -> None:
        self.encoder = encoder

    def user_vectors(self, examples: Examples) -> np.ndarray:
        return self.encoder.encode_users(examples.histories).numpy()


def test_collect_from_the_real_encoder_layout() -> None:
    encoder = _encoder([f"item {i}" for i in range(NUM_ITEMS)])
    histories = [np.array([1, 2, 3]), np.array([4, 5, 6, 7, 8, 9, 10, 11])]
    examples = Examples(["a", "b"], histories, np.zeros(2, np.int64), [None, None])
    result = collect_readout_attention(encoder, examples, batch_size=1, progress=False)
    assert result.weights.shape[:3] == (2, 2, 4)  # (layers, U, heads, L)
    assert result.history_mask.sum(-1).tolist() == [3, 6]  # truncated to max_history
    assert torch.allclose(result.weights.sum(-1), torch.ones(2, 2, 4), atol=1e-5)
    assert encoder.backbone.config._attn_implementation == "sdpa"


def test_diagnose_writes_json_markdown_and_figures(tmp_path, monkeypatch) -> None:
    data = _dataset(tmp_path / "data")
    titles = PreparedDataset(data).titles
    encoders = {"action-only": _encoder(titles), "karma": _encoder(titles)}
    for name in encoders:
        start_run(tmp_path / name, "karma", data)
    monkeypatch.setattr(runs, "load_retriever", lambda run: _Retriever(encoders[run.name]))
    argv = [
        "diagnose",
        str(tmp_path / "action-only"),
        "--users",
        "20",
        "--layers",
        "0",
        "1",
        "--compare",
        str(tmp_path / "karma"),
    ]
    assert main(argv) == 0
    out = tmp_path / "action-only" / "diagnostics"
    for name in ("diagnostics.json", "diagnostics.md", "heatmaps.png", "layers.png", "compare.png"):
        assert (out / name).is_file(), name
    report = json.loads((out / "diagnostics.json").read_text())
    assert set(report["runs"]) == {"action-only", "karma"}
    run = report["runs"]["action-only"]
    assert run["attention"]["num_users"] == 20 and len(run["attention"]["layers"]) == 2
    assert {"category", "title"} <= set(run["fidelity"])
    assert "| layer |" in (out / "diagnostics.md").read_text()


def test_bad_layers_and_users_are_user_errors(tmp_path, monkeypatch) -> None:
    data = _dataset(tmp_path / "data")
    encoder = _encoder(PreparedDataset(data).titles)
    start_run(tmp_path / "run", "karma", data)
    monkeypatch.setattr(runs, "load_retriever", lambda run: _Retriever(encoder))
    with pytest.raises(KarmaError, match="--layers"):
        main(["diagnose", str(tmp_path / "run"), "--users", "5", "--layers", "7"])
    with pytest.raises(KarmaError, match="--users"):
        main(["diagnose", str(tmp_path / "run"), "--users", "1"])
    with pytest.raises(KarmaError, match="not a run directory"):
        main(["diagnose", str(tmp_path / "missing")])


@pytest.mark.parametrize("users", [3])
def test_sample_is_the_same_for_every_run(users: int) -> None:
    from karma.diagnostics.commands import sample_examples

    examples = Examples(
        [str(i) for i in range(10)], [np.arange(2)] * 10, np.arange(10), [None] * 10
    )
    a, b = sample_examples(examples, users, 0), sample_examples(examples, users, 0)
    assert a.user_ids == b.user_ids and len(a) == users
    assert a.user_ids == sorted(a.user_ids, key=int)


def test_diagnose_a_karma_training_run_directory(tmp_path) -> None:
    """The `karma train` layout: run_config.yaml + best/model.safetensors (no run.json)."""
    from karma.config import load_config, save_config
    from karma.train.checkpoint import save_model_weights
    from karma.train.run_config import RunConfig, build_task

    data = _dataset(tmp_path / "data")
    config = load_config(
        RunConfig,
        Path(__file__).parents[2] / "configs" / "debug" / "tiny.yaml",
        [f"data.path={data}", f"output_dir={tmp_path / 'run'}"],
    )
    task = build_task(config)
    run = tmp_path / "run"
    (run / "best").mkdir(parents=True)
    save_config(config, run / "run_config.yaml")
    save_model_weights(task.model.state_dict(), run / "best")
    assert main(["diagnose", str(run), "--users", "12", "--threads", "1"]) == 0
    report = json.loads((run / "diagnostics" / "diagnostics.json").read_text())
    assert report["runs"]["run"]["attention"]["num_layers"] == 2
    assert report["meta"]["data"] == str(data)
