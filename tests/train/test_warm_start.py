"""`train.init_from`: a fresh run starts from another run's weights, tensor by tensor."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from train_toy_task import FAST, ToyTask

from karma.errors import KarmaError
from karma.train.checkpoint import (
    init_weights_dir,
    latest_checkpoint,
    load_matching_weights,
    load_model_weights,
)
from karma.train.trainer import Trainer


def _save(directory: Path, tensors: dict[str, torch.Tensor]) -> Path:
    directory.mkdir(parents=True)
    save_file(tensors, str(directory / "model.safetensors"))
    return directory


def test_matching_tensors_are_loaded_others_kept_and_extra_ones_ignored(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    weight = torch.arange(6.0).reshape(3, 2)
    source = _save(tmp_path / "best", {"0.weight": weight, "head.weight": torch.ones(4)})
    done = load_matching_weights(model, source)
    assert done.loaded == ["0.weight"]
    assert done.kept == ["0.bias", "1.weight", "1.bias"]
    assert done.unused == ["head.weight"]
    assert torch.equal(model[0].weight, weight)
    for key in done.kept:
        assert torch.equal(model.state_dict()[key], before[key])


def test_a_run_directory_means_its_best_model(tmp_path: Path) -> None:
    best = _save(tmp_path / "run" / "best", {"w": torch.zeros(1)})
    assert init_weights_dir(tmp_path / "run") == best
    assert init_weights_dir(best) == best
    with pytest.raises(KarmaError, match=r"no model\.safetensors"):
        init_weights_dir(tmp_path / "elsewhere")


def test_a_shape_mismatch_or_no_shared_tensor_is_an_error(tmp_path: Path) -> None:
    model = nn.Linear(2, 3)
    wrong = _save(tmp_path / "a", {"weight": torch.zeros(5, 2), "bias": torch.zeros(3)})
    with pytest.raises(KarmaError, match=r"weight \[5, 2\] there, \[3, 2\] here"):
        load_matching_weights(model, wrong)
    unrelated = _save(tmp_path / "b", {"other": torch.zeros(1)})
    with pytest.raises(KarmaError, match="shares no tensor"):
        load_matching_weights(model, unrelated)


def _record_first_step(task: ToyTask) -> list[dict[str, torch.Tensor]]:
    """The weights `task` has when its first loss step runs (filled in by that step)."""
    seen: list[dict[str, torch.Tensor]] = []
    original = task.loss_step

    def spy(batch: dict, stage: str):
        if not seen:
            seen.append({k: v.clone() for k, v in task.model.state_dict().items()})
        return original(batch, stage)

    task.loss_step = spy  # type: ignore[method-assign]
    return seen


def test_a_fresh_run_starts_from_the_source_and_a_resumed_one_ignores_it(tmp_path: Path) -> None:
    source_task = ToyTask(init_seed=1)
    Trainer(
        replace(FAST, max_steps=4, eval_every=0, checkpoint_every=0),
        source_task,
        tmp_path / "source",
    ).fit()
    best = {k: v.clone() for k, v in source_task.validated_states[-1].items()}
    own_init = ToyTask(init_seed=2).model.state_dict()
    assert not torch.equal(best["0.weight"], own_init["0.weight"])  # the test can tell them apart

    warm = ToyTask(init_seed=2, scripted_metrics=[0.0])
    first = _record_first_step(warm)
    config = replace(
        FAST, max_steps=1, eval_every=0, checkpoint_every=0, init_from=str(tmp_path / "source")
    )
    Trainer(config, warm, tmp_path / "warm").fit()
    for key, value in first[0].items():
        assert torch.equal(value, best[key]), key

    # Resuming: the checkpoint has the weights; init_from must not overwrite them.
    config = replace(
        FAST, max_steps=2, eval_every=0, checkpoint_every=1, init_from=str(tmp_path / "source")
    )
    Trainer(replace(config, max_steps=1), ToyTask(init_seed=3), tmp_path / "r").fit()
    at_checkpoint = ToyTask(init_seed=4)
    load_model_weights(at_checkpoint.model, latest_checkpoint(tmp_path / "r"))
    assert not torch.equal(at_checkpoint.model[0].weight, best["0.weight"])
    resumed = ToyTask(init_seed=3)
    first = _record_first_step(resumed)
    Trainer(config, resumed, tmp_path / "r", resume=True).fit()
    for key, value in first[0].items():
        assert torch.equal(value, at_checkpoint.model.state_dict()[key]), key
