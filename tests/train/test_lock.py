"""The run-directory lock against a real second process: refused with the holder's pid, and free
again once the holder is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from karma.cli import main
from karma.errors import KarmaError
from karma.testing.datasets import write_leave_one_out
from karma.train.lock import LOCK_FILE, RunDirLock

SRC = Path(__file__).resolve().parents[2] / "src"
HOLDER = "import sys, time\nfrom karma.train.lock import RunDirLock\nwith RunDirLock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(600)\n"


def in_use(run_dir: Path, pid: int) -> str:
    return (
        f"run directory {run_dir} is in use by pid {pid} (another training process); "
        "wait for it or use another output_dir"
    )


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """Another process holding the lock on tmp_path/run (killed at the end in any case)."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"
        yield run_dir, proc
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_second_process_is_refused_until_the_holder_dies(
    holder: tuple[Path, subprocess.Popen[str]],
) -> None:
    run_dir, proc = holder
    assert (run_dir / LOCK_FILE).read_text().strip() == str(proc.pid)
    with pytest.raises(KarmaError) as refused:
        RunDirLock(run_dir).__enter__()
    assert str(refused.value) == in_use(run_dir, proc.pid)

    os.kill(proc.pid, signal.SIGKILL)  # no clean-up code runs; the kernel drops the flock
    proc.wait(timeout=30)
    with RunDirLock(run_dir):
        assert (run_dir / LOCK_FILE).read_text().strip() == str(os.getpid())


def test_karma_train_on_a_directory_in_use_is_one_line_exit_2(
    holder: tuple[Path, subprocess.Popen[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, proc = holder
    config = Path(__file__).resolve().parents[2] / "configs" / "debug" / "tiny.yaml"
    assert main(["train", str(config), f"output_dir={run_dir}", "--resume"]) == 2
    err = capsys.readouterr().err
    assert err == f"karma: error: {in_use(run_dir, proc.pid)}\n"
    assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_FILE]  # nothing written


def test_karma_baseline_on_a_directory_in_use_is_refused(
    holder: tuple[Path, subprocess.Popen[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, proc = holder
    data = write_leave_one_out(tmp_path / "data", [[0, 1, 2, 3], [1, 2, 3, 0]], num_items=4)
    for kind in ("popularity", "sasrec"):
        assert main(["baseline", kind, "--data", str(data), "--out", str(run_dir)]) == 2
        assert f"in use by pid {proc.pid}" in capsys.readouterr().err
    assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_FILE]


def test_reentrant_in_one_process_and_released_on_exit(tmp_path: Path) -> None:
    run_dir = tmp_path / "a" / "run"  # created, parents included
    with RunDirLock(run_dir), RunDirLock(run_dir):  # nesting: e.g. a grid runner around train_run
        pass
    # Released: a different process can take it now.
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    probe = "import sys\nfrom karma.train.lock import RunDirLock\nwith RunDirLock(sys.argv[1]):\n    print('ok')\n"
    out = subprocess.run(
        [sys.executable, "-c", probe, str(run_dir)], env=env, capture_output=True, text=True
    )
    assert out.stdout.strip() == "ok", out.stderr


def test_released_after_an_exception(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), RunDirLock(tmp_path):
        raise RuntimeError("training crashed")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    probe = "import sys\nfrom karma.train.lock import RunDirLock\nRunDirLock(sys.argv[1]).__enter__()\nprint('ok')\n"
    out = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path)], env=env, capture_output=True, text=True
    )
    assert out.stdout.strip() == "ok", out.stderr


def test_nonzero_distributed_ranks_leave_the_lock_to_rank_0(
    holder: tuple[Path, subprocess.Popen[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir, proc = holder  # stands in for rank 0 of the same torchrun job
    monkeypatch.setenv("RANK", "1")
    with RunDirLock(run_dir):
        pass
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(KarmaError, match=f"in use by pid {proc.pid} "):
        RunDirLock(run_dir).__enter__()
