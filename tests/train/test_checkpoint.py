"""Checkpoint files: round trip, RNG restore, atomic replace, pruning, tied weights, best model."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import karma.train.checkpoint as checkpoint_module
from karma.errors import KarmaError
from karma.train.checkpoint import (
    TrainerState,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_model_weights,
    restore_rng_states,
    rng_states,
    save_best,
    save_checkpoint,
)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def _training_state(model: nn.Module) -> dict:
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(5, 3)).sum().backward()
    optimizer.step()
    return {"optimizer": optimizer.state_dict(), "rng": rng_states()}


def _draws() -> tuple[float, float, torch.Tensor]:
    return random.random(), float(np.random.rand()), torch.rand(3)


def test_round_trip_restores_state_model_optimizer_and_rng(tmp_path: Path) -> None:
    model = _model()
    training_state = _training_state(model)
    state = TrainerState(stage="warmup", stage_step=3, step=3, epoch=1, batch_index=2,
                         best_metric=0.25, best_step=2, evals_without_improvement=1)  # fmt: skip
    expected_draws = _draws()  # what comes after the saved RNG states
    path = save_checkpoint(tmp_path, state, model.state_dict(), training_state, keep=2)
    assert path == tmp_path / "checkpoints" / "step_0000003"
    assert sorted(p.name for p in path.iterdir()) == [
        "model.safetensors", "trainer_state.json", "training_state.pt",
    ]  # fmt: skip

    loaded_state, model_state, loaded_training = load_checkpoint(path)
    assert loaded_state == state
    for name, tensor in model.state_dict().items():
        assert torch.equal(model_state[name], tensor), name
    saved_opt, loaded_opt = training_state["optimizer"], loaded_training["optimizer"]
    assert loaded_opt["param_groups"] == saved_opt["param_groups"]
    for index, slots in saved_opt["state"].items():
        for key, tensor in slots.items():
            assert torch.equal(loaded_opt["state"][index][key], tensor)

    _draws()  # move every generator on
    restore_rng_states(loaded_training["rng"])
    python_draw, numpy_draw, torch_draw = _draws()
    assert (python_draw, numpy_draw) == expected_draws[:2]
    assert torch.equal(torch_draw, expected_draws[2])


def test_crash_mid_save_leaves_previous_checkpoint_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _model()
    training_state = _training_state(model)
    save_checkpoint(tmp_path, TrainerState(step=1), model.state_dict(), training_state, keep=3)

    def crash(obj: object, path: Path) -> None:
        Path(path).write_bytes(b"truncated")
        raise OSError("power cut")

    monkeypatch.setattr(checkpoint_module.torch, "save", crash)
    with pytest.raises(OSError, match="power cut"):
        save_checkpoint(tmp_path, TrainerState(step=2), model.state_dict(), training_state, keep=3)
    monkeypatch.undo()

    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step_0000001"
    state, _, _ = load_checkpoint(latest_checkpoint(tmp_path))
    assert state.step == 1
    # the next save clears the half-written temporary directory
    save_checkpoint(tmp_path, TrainerState(step=2), model.state_dict(), training_state, keep=3)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_0000001", "step_0000002"]


def test_resaving_a_step_replaces_it_whole(tmp_path: Path) -> None:
    model = _model()
    training_state = _training_state(model)
    save_checkpoint(tmp_path, TrainerState(step=4), model.state_dict(), training_state, keep=2)
    save_checkpoint(tmp_path, TrainerState(step=4, best_metric=1.0), model.state_dict(),
                    training_state, keep=2)  # fmt: skip
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_0000004"]
    assert load_checkpoint(latest_checkpoint(tmp_path))[0].best_metric == 1.0


def test_prune_keeps_the_last_k_in_step_order(tmp_path: Path) -> None:
    model = _model()
    training_state = _training_state(model)
    for step in (5, 10, 100, 1000):
        save_checkpoint(
            tmp_path, TrainerState(step=step), model.state_dict(), training_state, keep=2
        )
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000100", "step_0001000"]


def test_tied_weights_are_saved_and_loaded(tmp_path: Path) -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(6, 3)
            self.head = nn.Linear(3, 6, bias=False)
            self.head.weight = self.embed.weight

    model = Tied()
    save_best(tmp_path, model.state_dict(), step=7, metrics={"ndcg@10": 0.5})
    fresh = Tied()
    load_model_weights(fresh, tmp_path / "best")
    assert torch.equal(fresh.embed.weight, model.embed.weight)
    assert fresh.head.weight is fresh.embed.weight
    best = json.loads((tmp_path / "best" / "metrics.json").read_text())
    assert best == {"step": 7, "metrics": {"ndcg@10": 0.5}}


def test_save_best_overwrites_the_previous_best(tmp_path: Path) -> None:
    model = _model()
    save_best(tmp_path, model.state_dict(), step=1, metrics={"ndcg@10": 0.1})
    with torch.no_grad():
        model[0].weight.add_(1.0)
    save_best(tmp_path, model.state_dict(), step=2, metrics={"ndcg@10": 0.2})
    fresh = _model()
    load_model_weights(fresh, tmp_path / "best")
    assert torch.equal(fresh[0].weight, model[0].weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_loading_from_a_directory_without_weights_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(KarmaError, match=r"model\.safetensors does not exist"):
        load_model_weights(_model(), tmp_path)
