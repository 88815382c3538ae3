"""Loading a KARMA run for inference reads the encoder's weights alone, without training code."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import karma.train.karma_task as karma_task
from karma.config import load_config, save_config
from karma.errors import KarmaError
from karma.runs import load_encoder, load_retriever, open_run
from karma.runs.layout import CONFIG_FILE, start_run
from karma.serve.export import export_run
from karma.testing.datasets import write_tiny_dataset
from karma.train.checkpoint import MODEL_FILE, save_model_weights
from karma.train.run_config import RunConfig, build_task

TINY = Path(__file__).parents[2] / "configs" / "debug" / "tiny.yaml"
WITH_HEADS = [
    "knowledge.generation_weight=0.5",
    "knowledge.reconstruction_weight=0.5",
    "knowledge.flow_weight=0.5",
    "knowledge.feature_name=text",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("data") / "tiny", feature_dim=6)


def trained_run(run_dir: Path, data: Path, overrides: list[str]) -> karma_task.KarmaTask:
    """A KARMA run directory whose best/ holds the whole KarmaModel, weights moved off init."""
    config = load_config(
        RunConfig, TINY, [f"data.path={data}", f"output_dir={run_dir}", *overrides]
    )
    task = build_task(config)
    with torch.no_grad():
        for param in task.model.parameters():
            param.add_(0.05 * torch.randn_like(param))  # the frozen token table too
    task.model.encoder.refresh_item_cache()
    start_run(run_dir, "karma", data, config)
    (run_dir / "best").mkdir()
    save_model_weights(task.model.state_dict(), run_dir / "best")
    return task


def forbid_training_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any training-only construction on the inference path fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("inference built a training-only part")

    for name in ("ActionLoss", "KnowledgeCatalog", "build_knowledge_objectives", "KarmaTask"):
        monkeypatch.setattr(karma_task, name, refuse)


def test_encoder_loads_from_a_checkpoint_with_other_train_heads(
    tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "run"
    task = trained_run(run_dir, data, WITH_HEADS)
    checkpoint = load_file(str(run_dir / "best" / MODEL_FILE))
    assert any(k.startswith("knowledge.") for k in checkpoint)  # the heads are in the file
    # The run's config now describes an action-only model: none of the file's knowledge heads
    # would fit a KarmaModel built from it, yet the encoder loads and exports.
    config = open_run(run_dir).read_config(RunConfig)
    config.knowledge.generation_weight = 0.0
    config.knowledge.reconstruction_weight = 0.0
    config.knowledge.flow_weight = 0.0
    save_config(config, run_dir / CONFIG_FILE)
    forbid_training_parts(monkeypatch)

    encoder = load_encoder(run_dir).module
    assert not encoder.training
    expected = task.model.encoder.state_dict()
    loaded = encoder.state_dict()
    assert loaded.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key
    # The pooled item-text cache follows the checkpoint's token table, not the freshly built one.
    assert torch.allclose(encoder.pooled_item_text, task.model.encoder.pooled_item_text)

    examples = task.dataset.examples("test")
    retriever = load_retriever(run_dir)
    assert retriever.progress is None  # a users bar on a terminal, unless asked for none
    assert load_retriever(run_dir, progress=False).progress is False
    reference = karma_task.KarmaRetriever(task.model.encoder)
    assert torch.allclose(
        torch.from_numpy(retriever.user_vectors(examples)),
        torch.from_numpy(reference.user_vectors(examples)),
        atol=1e-5,
    )
    manifest = export_run(run_dir, tmp_path / "artifact")
    assert manifest["num_items"] == task.dataset.num_items


def test_unknown_or_missing_encoder_keys_are_errors(tmp_path: Path, data: Path) -> None:
    run_dir = tmp_path / "run"
    trained_run(run_dir, data, [])
    path = run_dir / "best" / MODEL_FILE
    state = load_file(str(path))
    save_file({**state, "mystery.weight": torch.zeros(1)}, str(path))
    with pytest.raises(KarmaError, match="mystery"):
        load_encoder(run_dir)
    state.pop("encoder.user_head.weight")
    save_file(state, str(path))
    with pytest.raises(KarmaError, match="does not match"):
        load_encoder(run_dir)


def test_run_json_has_one_schema_and_old_files_still_read(tmp_path: Path, data: Path) -> None:
    run = start_run(tmp_path / "new", "popularity", data)
    assert run.info.status == "training" and run.info.schema_version == 1
    old = tmp_path / "old"
    old.mkdir()
    (old / "run.json").write_text(
        '{"kind": "sasrec", "data": "/d", "num_items": 7, "best_step": 3, "best_valid": 0.5}'
    )
    info = open_run(old).info
    assert (info.kind, info.status, info.best_step, info.best_metric) == (
        "sasrec",
        "finished",
        3,
        0.5,
    )
    assert info.options == {"num_items": 7}


def test_every_checkpoint_prefix_is_the_encoder_or_a_known_training_head(
    tmp_path: Path, data: Path
) -> None:
    """A new KarmaModel child must be declared train-only (or be the encoder) to stay loadable."""
    task = trained_run(tmp_path / "run", data, WITH_HEADS)
    prefixes = {f"{k.split('.', 1)[0]}." for k in task.model.state_dict()}
    known = {karma_task.KarmaModel.ENCODER_PREFIX, *karma_task.KarmaModel.TRAIN_ONLY_PREFIXES}
    assert prefixes <= known
