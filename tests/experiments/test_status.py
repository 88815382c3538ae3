"""`karma experiment GRID --status`: each cell's state read from its run directory, nothing written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from karma.cli import main
from karma.experiments import status
from karma.experiments.grid import RESULT_FILE, GridConfig, RunSpec
from karma.train.checkpoint import step_dir_name
from karma.train.lock import LOCK_FILE, RunDirLock

CONFIG = Path("configs/debug/tiny.yaml")  # never read by --status
PROC_LOCKS = pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux /proc/locks")


def _grid(out: Path) -> GridConfig:
    karma = {"kind": "karma", "config": CONFIG}
    return GridConfig(
        data=out / "data",
        output_dir=out,
        runs=[
            RunSpec("done", **karma),
            RunSpec("live", **karma),
            RunSpec("paused", **karma),
            RunSpec("child", init_from="live", **karma),
            RunSpec("fresh", **karma),
        ],
    )


def _log(run_dir: Path, records: list[dict]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in records)
    (run_dir / status.LOG_FILE).write_text(text, encoding="utf-8")


def _fill(grid: GridConfig) -> None:
    """done: finished; live: joint step 750 of 1,500 at 0.5 steps/s; paused: checkpoints 150/300,
    its lock file left behind by a process that is gone (it names this process's pid, unlocked)."""
    done = grid.run_dir(grid.runs[0], 0)
    done.mkdir(parents=True)
    result = {"metrics": {"hr@10": 0.25, "hr@200": 0.5}, "train_seconds": 120.0}
    (done / RESULT_FILE).write_text(json.dumps(result), encoding="utf-8")
    live = grid.run_dir(grid.runs[1], 0)
    _log(
        live,
        [
            {"kind": "train", "step": 50, "stage": "warmup", "stage_step": 50, "steps_per_s": 2.0},
            {"kind": "eval", "step": 650, "stage": "joint", "ndcg@10": 0.09, "hr@10": 0.17},
            {"kind": "train", "step": 800, "stage": "joint", "stage_step": 750, "steps_per_s": 0.5},
        ],
    )
    (live / "run_config.yaml").write_text(
        "train:\n  max_steps: 1500\n  semantic_warmup_steps: 50\n", encoding="utf-8"
    )
    paused = grid.run_dir(grid.runs[2], 0)
    for step in (150, 300):
        (paused / "checkpoints" / step_dir_name(step)).mkdir(parents=True)
    _log(paused, [{"kind": "eval", "step": 300, "stage": "joint", "ndcg@10": 0.05}])
    (paused / LOCK_FILE).write_text(f"{os.getpid()}\n", encoding="utf-8")


@PROC_LOCKS
def test_every_state_of_a_grid_with_progress_and_time_left(tmp_path: Path) -> None:
    grid = _grid(tmp_path / "out")
    _fill(grid)
    with RunDirLock(grid.run_dir(grid.runs[1], 0)):
        cells = status.grid_status(grid)
    assert [(c.run, c.state) for c in cells] == [
        ("done", "finished"),
        ("live", "training"),
        ("paused", "paused"),
        ("child", "waiting"),
        ("fresh", "not started"),
    ]
    done, live, paused = cells[:3]
    assert (done.metric, done.train_seconds) == (0.25, 120.0)
    assert live.holder == os.getpid()
    assert (live.stage, live.step, live.steps, live.steps_per_s) == ("joint", 750, 1500, 0.5)
    assert live.seconds_left == pytest.approx(1500.0)  # (1500 - 750) / 0.5
    assert (live.valid_metric, live.valid) == ("ndcg@10", 0.09)
    assert paused.step == 300 and paused.holder is None  # a stale lock file is no holder
    text = status.format_status(cells)
    assert "hr@10 0.2500, trained 2 min" in text
    assert f"pid {os.getpid()}, joint 750/1500, 0.50 steps/s, ~25 min left" in text
    assert "resumes from step 300, valid ndcg@10 0.0500" in text
    assert text.splitlines()[-1] == "1 finished, 1 training, 1 paused, 1 waiting, 1 not started"


@PROC_LOCKS
def test_a_lock_is_live_only_while_held(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert status.lock_holder(run_dir) is None  # no directory
    with RunDirLock(run_dir):
        assert status.lock_holder(run_dir) == os.getpid()
    assert (run_dir / LOCK_FILE).is_file()  # the file stays, the lock goes
    assert status.lock_holder(run_dir) is None


def test_the_child_of_a_finished_source_is_not_waiting(tmp_path: Path) -> None:
    grid = _grid(tmp_path / "out")
    source = grid.run_dir(grid.runs[1], 0)
    source.mkdir(parents=True)
    (source / RESULT_FILE).write_text(json.dumps({"metrics": {}}), encoding="utf-8")
    child = status.cell_status(grid, grid.runs[3], 0)
    assert child.state == "not started"
    assert status.cell_status(grid, grid.runs[1], 0).metric is None  # no hr@10 recorded


def test_only_the_end_of_a_long_log_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = [{"kind": "train", "step": s, "stage": "joint", "stage_step": s} for s in range(200)]
    _log(tmp_path, records)
    monkeypatch.setattr(status, "TAIL_BYTES", 300)
    tail = status._tail_records(tmp_path / status.LOG_FILE)
    assert tail and tail[-1]["step"] == 199
    assert [r["step"] for r in tail] == list(range(200 - len(tail), 200))  # no torn first line
    assert status._tail_records(tmp_path / "missing.jsonl") == []


def test_cli_status_prints_the_table_and_trains_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(
        f"data: {tmp_path / 'no-data'}\noutput_dir: {out}\nseeds: [0, 1]\n"
        "runs:\n  - {name: popularity, kind: popularity}\n"
        "  - {name: karma, kind: karma, config: no/such/config.yaml}\n",
        encoding="utf-8",
    )
    assert main(["experiment", str(grid_file), "--status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["run", "seed", "state", "progress"]
    assert [line.split()[:2] for line in lines[1:5]] == [
        ["popularity", "0"],
        ["karma", "0"],
        ["popularity", "1"],
        ["karma", "1"],
    ]
    assert lines[-1] == "4 not started"
    assert not out.exists()  # nothing created, no data or config opened


def test_overrides_written_after_only_are_still_overrides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(
        f"data: {tmp_path / 'no-data'}\noutput_dir: {tmp_path / 'out'}\nseeds: [0]\n"
        "runs:\n  - {name: a, kind: popularity}\n  - {name: b, kind: popularity}\n",
        encoding="utf-8",
    )
    args = ["experiment", str(grid_file), "--only", "b", "seeds=[3]", "--status"]
    assert main(args) == 0
    rows = [line.split()[:2] for line in capsys.readouterr().out.splitlines()[1:-1]]
    assert rows == [["a", "3"], ["b", "3"]]  # b and its baseline a, at the overridden seed

    assert main(["experiment", str(grid_file), "--only", "seeds=[3]", "--status"]) == 2
    assert "--only: name at least one run" in capsys.readouterr().err
