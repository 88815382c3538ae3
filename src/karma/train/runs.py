"""A KARMA run directory: train one from a `RunConfig`, and load one back.

    run_dir/.lock             held by the training process (karma.train.lock)
    run_dir/run_config.yaml   the resolved RunConfig (what `karma train` was given, overrides applied)
    run_dir/run.json          {"kind": "karma", "data": ...} (read by `karma.eval.registry`)
    run_dir/log.jsonl, tb/    training logs
    run_dir/checkpoints/      resumable checkpoints (karma.train.checkpoint)
    run_dir/best/             best validation weights (model.safetensors + metrics.json)

Evaluation, diagnostics and export all load a run through `load_trained_task`, so there is one
place that knows this layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from karma.errors import KarmaError

if TYPE_CHECKING:
    from karma.train.karma_task import KarmaRetriever, KarmaTask
    from karma.train.run_config import RunConfig

CONFIG_FILE = "run_config.yaml"


def train_run(config: RunConfig, resume: bool | None = None) -> dict[str, Any]:
    """Train `config` into `config.output_dir`; return the trainer's summary.

    `resume=None` resumes when the run directory already has checkpoints (so an interrupted grid
    or demo continues where it stopped) and starts fresh otherwise.
    """
    import torch

    from karma.config import save_config
    from karma.eval.registry import write_run_info
    from karma.train.checkpoint import latest_checkpoint
    from karma.train.lock import RunDirLock
    from karma.train.run_config import build_task
    from karma.train.trainer import Trainer

    run_dir = Path(config.output_dir)
    # Held for the whole training (and taken before the slow model build): a second process on
    # this directory is refused with one line naming our pid (karma.train.lock).
    with RunDirLock(run_dir):
        if resume is None:
            resume = latest_checkpoint(run_dir) is not None
        if config.train.num_threads is not None:
            torch.set_num_threads(config.train.num_threads)  # before the backbone is built
        task = build_task(config)
        save_config(config, run_dir / CONFIG_FILE)
        summary = Trainer(config.train, task, run_dir, resume=resume).fit()
        write_run_info(run_dir, "karma", task.dataset.root, best_step=summary.get("best_step"))
    return summary


def best_weights(run_dir: Path) -> Path:
    """`best/` if the run validated at least once, else its latest checkpoint."""
    from karma.train.checkpoint import MODEL_FILE, latest_checkpoint

    if (run_dir / "best" / MODEL_FILE).is_file():
        return run_dir / "best"
    latest = latest_checkpoint(run_dir)
    if latest is None:
        raise KarmaError(f"{run_dir} has no best/ model and no checkpoint; train it first")
    return latest


def load_run_config(run_dir: str | Path) -> RunConfig:
    from karma.config import load_config
    from karma.train.run_config import RunConfig

    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise KarmaError(f"{run_dir} is not a karma training run (no {CONFIG_FILE})")
    return load_config(RunConfig, path)


def load_trained_task(run_dir: str | Path, data: str | Path | None = None) -> KarmaTask:
    """Rebuild the run's task (dataset, backbone, heads) and load its best weights, in eval mode.

    `data` points the run at another copy of its prepared dataset (same items, same order).
    """
    from karma.train.checkpoint import load_model_weights
    from karma.train.run_config import build_task

    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    if data is not None:
        config.data.path = Path(data)
    task = build_task(config)
    load_model_weights(task.model, best_weights(run_dir))
    task.model.eval()
    return task


def load_retriever(run_dir: str | Path, data: str | Path | None = None) -> KarmaRetriever:
    """The trained encoder of a run as a dot-product `Retriever` (named after the run)."""
    from karma.train.karma_task import KarmaRetriever

    task = load_trained_task(run_dir, data)
    return KarmaRetriever(task.encoder, name=Path(run_dir).resolve().name)
