"""Pausing a KARMA run: resumable, not recorded as finished, and `karma train` says how to go on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from karma.cli import main
from karma.config import load_config
from karma.runs import open_run, train_run
from karma.testing.datasets import write_tiny_dataset
from karma.train.checkpoint import MODEL_FILE, latest_checkpoint
from karma.train.run_config import RunConfig

TINY = Path(__file__).parents[2] / "configs" / "debug" / "tiny.yaml"
SHORT = [
    "train.max_steps=4",
    "train.eval_every=0",
    "train.checkpoint_every=0",
    "train.progress_bar=false",
    "train.tensorboard=false",
    "train.num_threads=1",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("data") / "tiny", feature_dim=6)


def config(data: Path, run_dir: Path) -> RunConfig:
    return load_config(RunConfig, TINY, [f"data.path={data}", f"output_dir={run_dir}", *SHORT])


def weights(checkpoint: Path | None) -> dict[str, torch.Tensor]:
    assert checkpoint is not None
    return load_file(str(checkpoint / MODEL_FILE))


def test_paused_run_stays_training_and_resumes_to_the_uninterrupted_weights(
    data: Path, tmp_path: Path
) -> None:
    whole = train_run(config(data, tmp_path / "whole"))
    assert whole["paused"] is False
    assert open_run(tmp_path / "whole").info.status == "finished"

    split = tmp_path / "split"
    paused = train_run(config(data, split), pause_after_steps=2)
    assert (paused["paused"], paused["stopped_early"], paused["steps"]) == (True, False, 2)
    assert latest_checkpoint(split).name == "step_0000002"  # type: ignore[union-attr]
    assert open_run(split).info.status == "training"  # not finished: a grid runner resumes it
    assert not (split / "best").exists()

    done = train_run(config(data, split))  # resume=None: resumes from the checkpoint
    assert (done["paused"], done["steps"]) == (False, 4)
    assert open_run(split).info.status == "finished"
    a, b = weights(latest_checkpoint(tmp_path / "whole")), weights(latest_checkpoint(split))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_karma_train_pause_after_minutes_prints_how_to_continue(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", str(TINY), f"data.path={data}", *SHORT, "--output-dir", str(tmp_path)]
    assert main([*argv, "--pause-after-minutes", "1e-9"]) == 0  # crossed at the first step
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == "paused at step 1; run the same command with --resume to continue"
    assert open_run(tmp_path).info.status == "training"
    assert main([*argv, "--resume"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["paused"], summary["steps"]) == (False, 4)
    assert open_run(tmp_path).info.status == "finished"
    assert latest_checkpoint(tmp_path).name == "step_0000004"  # type: ignore[union-attr]
    assert main([*argv, "--pause-after-minutes", "0"]) == 2  # a clear one-line error
    assert (
        capsys.readouterr().err.strip()
        == "karma: error: --pause-after-minutes: must be > 0, got 0.0"
    )
