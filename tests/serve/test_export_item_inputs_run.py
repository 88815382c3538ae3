"""Tiny training runs whose item tokens need more than text export, index and serve like any run:
one with frozen item features (`model.encoder.features`), one with backbone item-text states."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from karma.cli import main
from karma.runs import open_run
from karma.serve.artifact import load_artifact
from karma.testing.datasets import write_tiny_dataset
from karma.train.checkpoint import load_model_weights
from karma.train.run_config import RunConfig, build_task

CONFIG = Path(__file__).parents[2] / "configs" / "debug" / "tiny.yaml"


@pytest.mark.parametrize(
    "overrides",
    [
        ["model.encoder.features=text"],
        ["model.encoder.item_text_pooling=backbone", "model.backbone.num_layers=1"],
    ],
    ids=["features", "backbone-states"],
)
def test_trained_run_exports_and_serves_its_training_embeddings(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    overrides: list[str],
) -> None:
    monkeypatch.setenv("KARMA_CACHE", str(tmp_path / "cache"))
    data = write_tiny_dataset(tmp_path / "data", feature_dim=6)
    run_dir, out = tmp_path / "run", tmp_path / "artifact"
    train = [
        "train",
        str(CONFIG),
        f"data.path={data}",
        "train.max_steps=2",
        "train.eval_every=2",
        "train.checkpoint_every=2",
        "train.progress_bar=false",
        "train.tensorboard=false",
        "data.valid_users=4",
        *overrides,
        "--output-dir",
        str(run_dir),
    ]
    assert main(train) == 0
    assert main(["export", str(run_dir), "--out", str(out)]) == 0

    run = open_run(run_dir)  # the training task itself (not the export path), best weights loaded
    task = build_task(run.read_config(RunConfig))
    load_model_weights(task.model, run.best_weights())
    task.model.eval()
    histories = [np.array([0, 6, 12]), np.array([1, 7]), np.array([5])]
    trained = task.encoder.encode_users(histories).numpy()  # (3, e)
    trained_items = task.encoder.item_embeddings().detach().numpy()  # (N, e)
    model = load_artifact(out)
    np.testing.assert_allclose(model.encode([h.tolist() for h in histories]), trained, atol=1e-5)
    np.testing.assert_allclose(model.item_embeddings, trained_items, atol=1e-5)

    assert main(["index", str(out), "--kind", "hnsw", "--queries", "20", "-k", "5"]) == 0
    hnsw = load_artifact(out, index="hnsw")
    (recs,) = hnsw.search([[0, 6, 12]], k=5)
    scores = trained[0] @ trained_items.T
    scores[[0, 6, 12]] = -np.inf
    assert set(recs.item_indices.tolist()) == set(np.argsort(-scores)[:5].tolist())
    capsys.readouterr()
    assert main(["recommend", str(out), "--history", "i0", "i6", "-k", "3", "--index", "hnsw"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) >= 3
