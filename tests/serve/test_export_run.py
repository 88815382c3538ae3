"""`karma export` of real (tiny) training runs: KARMA vs action-only, and served = offline ranking.

Slow (two tiny training runs, ~20 s of CPU): run with `-m slow`. The default suite covers the same
properties on the toy encoder (test_artifact.py) and the real encoder without training
(test_karma_encoder.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from karma.cli import main
from karma.serve.artifact import load_artifact
from karma.serve.protocol import is_train_only_key
from karma.testing.datasets import write_tiny_dataset

pytestmark = pytest.mark.slow

CONFIG = Path(__file__).parents[2] / "configs" / "debug" / "tiny.yaml"
FEATURE_DIM = 6


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export")
    data = write_tiny_dataset(root / "data", feature_dim=FEATURE_DIM)
    common = [
        f"data.path={data}",
        "train.max_steps=2",
        "train.eval_every=2",
        "train.checkpoint_every=2",
        "train.progress_bar=false",
        "train.tensorboard=false",
        "data.valid_users=4",
    ]
    knowledge = [
        "knowledge.generation_weight=0.5",
        "knowledge.reconstruction_weight=0.5",
        "knowledge.flow_weight=0.5",
        "knowledge.feature_name=text",
        "knowledge.flow_hidden=16",
    ]
    out = {}
    for name, extra in (("karma", knowledge), ("action", [])):
        run_dir = root / f"run-{name}"
        assert main(["train", str(CONFIG), *common, *extra, "--output-dir", str(run_dir)]) == 0
        assert main(["export", str(run_dir), "--out", str(root / f"artifact-{name}")]) == 0
        out[name] = root / f"artifact-{name}"
    out["karma_run"] = root / "run-karma"
    return out


def test_karma_and_action_only_exports_have_equal_parameter_counts(runs: dict[str, Path]) -> None:
    karma = json.loads((runs["karma"] / "manifest.json").read_text())
    action = json.loads((runs["action"] / "manifest.json").read_text())
    assert karma["encoder"]["parameter_count"] == action["encoder"]["parameter_count"]
    karma_keys = load_file(str(runs["karma"] / "encoder.safetensors")).keys()
    assert set(karma_keys) == set(load_file(str(runs["action"] / "encoder.safetensors")).keys())
    assert not any(is_train_only_key(k) for k in karma_keys)
    # The KARMA run really trained more parameters than it exports (its knowledge heads).
    trained = load_file(str(runs["karma_run"] / "best" / "model.safetensors"))
    assert any(k.startswith("knowledge.") for k in trained)
    assert sum(v.numel() for v in trained.values()) > karma["encoder"]["parameter_count"]
    assert karma["backbone"] == "tiny" and karma["data_hash"] == action["data_hash"]
    assert karma["config_hash"] != action["config_hash"]


def test_served_top_k_equals_offline_ranking_of_the_run(runs: dict[str, Path]) -> None:
    from fastapi.testclient import TestClient

    from karma.serve.app import create_app

    model = load_artifact(runs["karma"])
    histories = [[0, 6, 12], [1, 7], [5]]
    users = model.encode(histories)  # (3, e)
    scores = users @ model.item_embeddings.T  # (3, N)
    with TestClient(create_app(model)) as client:
        for history, row in zip(histories, scores):
            row[history] = -np.inf
            offline = [f"i{i}" for i in np.argsort(-row, kind="stable")[:5]]
            body = {"history": [f"i{i}" for i in history], "k": 5}
            served = [r["item_id"] for r in client.post("/v1/search", json=body).json()["items"]]
            assert served == offline
