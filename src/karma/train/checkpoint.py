"""Resumable checkpoints, written atomically, and the best model's weights.

Layout of a run directory:

    run_dir/checkpoints/step_0000200/   one resumable checkpoint (the latest `keep_checkpoints` kept)
        model.safetensors               the model's full state_dict (tied tensors stored once each)
        training_state.pt               optimizer, lr scheduler, RNG states (python, numpy, torch, cuda)
        trainer_state.json              data position (stage, epoch, batch index, step), best metric,
                                        early-stopping counter
    run_dir/best/                       the model at its best validation metric
        model.safetensors
        metrics.json                    {"step": ..., "metrics": {...}}

A checkpoint is first written to a hidden temporary directory next to it and then renamed into
place with `os.replace`, so a crash mid-save leaves the previous checkpoints untouched and never a
half-written `step_*` directory. Load the best model with `load_model_weights(model, run_dir/"best")`.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from karma.errors import KarmaError
from karma.objectives.base import Stage

CHECKPOINTS_DIR = "checkpoints"
"""a run directory's resumable checkpoints, one `step_XXXXXXX` folder each"""
MODEL_FILE = "model.safetensors"
TRAINING_STATE_FILE = "training_state.pt"
TRAINER_STATE_FILE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step_(\d{7,})$")


@dataclass
class TrainerState:
    """Where training stands: enough to continue exactly where a checkpoint was taken."""

    stage: Stage = "joint"
    """stage being trained ("warmup" or "joint")"""
    stage_step: int = 0
    """optimizer steps done in this stage"""
    step: int = 0
    """optimizer steps done over all stages (names the checkpoint)"""
    epoch: int = 0
    """data epoch passed to task.batches (counts on across stages)"""
    stage_first_epoch: int = 0
    """first data epoch of this stage (max_epochs counts from here)"""
    batch_index: int = 0
    """batches of `epoch` already consumed (resuming skips them)"""
    best_metric: float | None = None
    """best value of the early-stopping metric so far"""
    best_step: int | None = None
    """step at which best_metric was reached"""
    evals_without_improvement: int = 0
    """early-stopping counter"""
    stopped_early: bool = False
    """training ended by early stopping (resuming does nothing more)"""
    train_seconds: float | None = 0.0
    """wall-clock seconds spent in `Trainer.fit` up to this state, summed over resumed calls (None:
    unknown, the run started under a karma that did not count it)"""


def step_dir_name(step: int) -> str:
    return f"step_{step:07d}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of `run_dir`, oldest first."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def delete_checkpoints(run_dir: Path) -> bool:
    """Delete every resumable checkpoint of `run_dir` (for a finished run: its best model stays
    in best/); True when there were any."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return False
    shutil.rmtree(root)
    return True


def _storable(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors; a tensor sharing storage with an earlier one (tied weights) is copied,
    because safetensors refuses shared storage."""
    seen: set[tuple[int, int]] = set()
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        tensor = tensor.detach()
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key in seen or not tensor.is_contiguous():
            tensor = tensor.clone(memory_format=torch.contiguous_format)
        seen.add(key)
        out[name] = tensor.cpu()
    return out


def _device_of(module: nn.Module) -> torch.device:
    """Where `module`'s parameters live (CPU for a module without any)."""
    return next((p.device for p in module.parameters()), torch.device("cpu"))


def save_model_weights(state_dict: dict[str, torch.Tensor], directory: Path) -> None:
    save_file(_storable(state_dict), str(Path(directory) / MODEL_FILE))


def load_model_weights(model: nn.Module, directory: Path, strict: bool = True) -> None:
    """Load `directory/model.safetensors` (a checkpoint or `run_dir/best`) into `model`."""
    path = Path(directory) / MODEL_FILE
    if not path.is_file():
        raise KarmaError(f"{path} does not exist; is {directory} a karma checkpoint or best/ dir?")
    device = _device_of(model)
    model.load_state_dict(load_file(str(path), device=str(device)), strict=strict)


def load_encoder_weights(
    encoder: nn.Module, directory: Path, prefix: str, train_only_prefixes: tuple[str, ...]
) -> None:
    """Load only the encoder's weights from a full training checkpoint (inference, export).

    Keys under `prefix` are stripped of it and loaded strictly: the encoder must match exactly.
    Every other key must start with one of `train_only_prefixes` (heads that only training uses,
    e.g. the action loss and the knowledge objectives) and is skipped without being read into any
    module, so a checkpoint written with different train-only heads still loads. Any other key is
    an error: the checkpoint does not belong to this kind of model.
    """
    path = Path(directory) / MODEL_FILE
    if not path.is_file():
        raise KarmaError(f"{path} does not exist; is {directory} a karma checkpoint or best/ dir?")
    device = _device_of(encoder)
    state: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt", device=str(device)) as handle:
        keys = list(handle.keys())
        unknown = [k for k in keys if not k.startswith((prefix, *train_only_prefixes))]
        if unknown:
            raise KarmaError(
                f"{path}: keys {unknown[:3]} are neither under {prefix!r} nor a known training "
                f"head {train_only_prefixes}; not a checkpoint of this model"
            )
        for key in keys:
            if key.startswith(prefix):
                state[key.removeprefix(prefix)] = handle.get_tensor(key)
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise KarmaError(f"{path}: the encoder does not match the run's config ({exc})") from None


def init_weights_dir(source: Path) -> Path:
    """The directory holding the weights `train.init_from` names: itself when it holds
    `model.safetensors` (a `best/` or `checkpoints/step_*` directory), else a run directory's
    `best/`."""
    source = Path(source)
    for directory in (source, source / "best"):
        if (directory / MODEL_FILE).is_file():
            return directory
    raise KarmaError(
        f"train.init_from: no {MODEL_FILE} in {source} or {source / 'best'}; give a trained run "
        "directory, its best/ or one of its checkpoints/step_* directories"
    )


@dataclass(frozen=True)
class WarmStart:
    """What `load_matching_weights` did: tensor names loaded, kept at their initialization (not in
    the source) and left unused (in the source, not in the model)."""

    loaded: list[str]
    kept: list[str]
    unused: list[str]


def load_matching_weights(model: nn.Module, source: Path) -> WarmStart:
    """Warm-start `model` from another run's weights (`train.init_from`): every tensor of the
    source whose name is in the model's state_dict is loaded into it; the model's other tensors keep
    their initialization (e.g. knowledge heads an action-only source never had) and the source's
    other tensors are ignored. A tensor whose shape differs (another catalog, model size or LoRA
    rank) is an error, as is a source sharing no tensor with the model."""
    directory = init_weights_dir(source)
    path = directory / MODEL_FILE
    own = model.state_dict()
    device = _device_of(model)
    state: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    mismatched: list[str] = []
    with safe_open(str(path), framework="pt", device=str(device)) as handle:
        names = list(handle.keys())
        for key in names:
            if key not in own:
                unused.append(key)
                continue
            shape = tuple(handle.get_slice(key).get_shape())
            if shape != tuple(own[key].shape):
                mismatched.append(f"{key} {list(shape)} there, {list(own[key].shape)} here")
                continue
            state[key] = handle.get_tensor(key)
    if mismatched:
        raise KarmaError(
            f"train.init_from: {path} does not fit this model (another catalog, model size or "
            f"LoRA rank?): {'; '.join(mismatched[:3])}"
            + (f" and {len(mismatched) - 3} more" if len(mismatched) > 3 else "")
        )
    if not state:
        raise KarmaError(
            f"train.init_from: {path} shares no tensor with this model; is it a karma run's weights?"
        )
    model.load_state_dict(state, strict=False)
    kept = [key for key in own if key not in state]
    return WarmStart(loaded=list(state), kept=kept, unused=unused)


def rng_states() -> dict[str, Any]:
    """All random generator states, in types `torch.load(weights_only=True)` accepts."""
    bit_generator, keys, pos, has_gauss, cached_gauss = np.random.get_state()  # type: ignore[misc]
    version, internal, gauss = random.getstate()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [bit_generator, torch.from_numpy(keys.copy()), pos, has_gauss, cached_gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    bit_generator, keys, pos, has_gauss, cached_gauss = states["numpy"]
    np.random.set_state((bit_generator, keys.numpy(), pos, has_gauss, cached_gauss))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move a fully written `tmp` onto `final`; an existing `final` is kept until `tmp` is in place."""
    if final.exists():
        old = final.with_name(f".old_{final.name}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def save_checkpoint(
    run_dir: Path,
    state: TrainerState,
    model_state: dict[str, torch.Tensor],
    training_state: dict[str, Any],
    keep: int,
) -> Path:
    """Write checkpoint `run_dir/checkpoints/step_XXXXXXX` atomically and prune to the last `keep`."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(state.step)
    tmp = root / f".tmp_{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)  # left over by an earlier crash
    tmp.mkdir()
    save_model_weights(model_state, tmp)
    torch.save(training_state, tmp / TRAINING_STATE_FILE)
    (tmp / TRAINER_STATE_FILE).write_text(json.dumps(asdict(state), indent=1), encoding="utf-8")
    _replace_dir(tmp, final)
    for stale in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(stale, ignore_errors=True)
    return final


def load_checkpoint(
    directory: Path,
) -> tuple[TrainerState, dict[str, torch.Tensor], dict[str, Any]]:
    """(trainer state, model state_dict on CPU, training state) of one checkpoint directory."""
    directory = Path(directory)
    fields = json.loads((directory / TRAINER_STATE_FILE).read_text(encoding="utf-8"))
    fields.setdefault("train_seconds", None)  # written before karma counted it: unknown
    state = TrainerState(**fields)
    model_state = load_file(str(directory / MODEL_FILE))
    training_state = torch.load(directory / TRAINING_STATE_FILE, weights_only=True)
    return state, model_state, training_state


def save_best(
    run_dir: Path, model_state: dict[str, torch.Tensor], step: int, metrics: dict
) -> Path:
    """Write the best model's weights and metrics to `run_dir/best` atomically."""
    final = Path(run_dir) / "best"
    tmp = Path(run_dir) / ".tmp_best"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model_weights(model_state, tmp)
    (tmp / "metrics.json").write_text(
        json.dumps({"step": step, "metrics": metrics}, indent=1), encoding="utf-8"
    )
    _replace_dir(tmp, final)
    return final
