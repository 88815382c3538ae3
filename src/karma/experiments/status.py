"""Where a grid stands, read from its run directories without touching them.

`karma experiment GRID.yaml --status` prints one row per run x seed:

- `finished`: `result.json` is there (the grid's metric on its split, and the training time);
- `training`: a live process holds the cell's lock (its pid, the step it logged last out of the
  stage's steps, the last validation score, and a time left from its logged step rate);
- `paused`: trained part-way, nobody holds it (the step a re-run resumes from: its last checkpoint);
- `waiting`: it starts from another cell (`init_from`) that has not finished;
- `not started`.

Nothing is locked, written or loaded beyond a few small files, so it is safe to call while other
processes train the grid. Whether a lock is live is read from `/proc/locks` (Linux); elsewhere
from whether the pid written in the lock file is a running process.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from karma.experiments.grid import RESULT_FILE, GridConfig, RunSpec
from karma.train.lock import LOCK_FILE

State = Literal["finished", "training", "paused", "waiting", "not started"]
LOG_FILE = "log.jsonl"
TAIL_BYTES = 65536  # the end of log.jsonl read for the latest records


@dataclass(frozen=True)
class CellStatus:
    """One (run, seed) of a grid."""

    run: str
    seed: int
    state: State
    stage: str | None = None
    """stage of the last logged training step (warmup / joint)"""
    step: int | None = None
    """last logged step within that stage (training), or the checkpoint step a re-run resumes
    from (paused)"""
    steps: int | None = None
    """steps of that stage in the run's config, when known"""
    steps_per_s: float | None = None
    valid: float | None = None
    """last validation score logged (the run's early-stopping metric)"""
    valid_metric: str | None = None
    metric: float | None = None
    """finished: the grid's headline metric on its split"""
    train_seconds: float | None = None
    holder: int | None = None
    """pid of the process training it"""

    @property
    def seconds_left(self) -> float | None:
        """Time to the end of the current stage at the logged rate (evaluations not counted)."""
        if self.state != "training" or None in (self.step, self.steps, self.steps_per_s):
            return None
        assert self.step is not None and self.steps is not None and self.steps_per_s is not None
        if self.steps_per_s <= 0:
            return None
        return max(0, self.steps - self.step) / self.steps_per_s


def lock_holder(run_dir: Path) -> int | None:
    """Pid of the live process holding `run_dir`'s `RunDirLock`, or None (no lock, or a stale one)."""
    path = run_dir / LOCK_FILE
    try:
        st = path.stat()
        written = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    pid = int(written) if written.isdigit() else None
    try:
        locks = Path("/proc/locks").read_text(encoding="utf-8")
    except OSError:
        return pid if pid is not None and _alive(pid) else None
    device = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    for line in locks.splitlines():
        fields = line.split()
        if "FLOCK" not in fields or len(fields) < 6:
            continue
        at = fields.index("FLOCK")
        try:
            holder, ident = int(fields[at + 3]), fields[at + 4].split(":")
            key = (int(ident[0], 16), int(ident[1], 16), int(ident[2]))
        except (IndexError, ValueError):
            continue
        if key == device:
            return holder
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tail_records(log: Path) -> list[dict[str, Any]]:
    """The JSON records in the last `TAIL_BYTES` of `log` (a partial first line is dropped)."""
    try:
        with log.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - TAIL_BYTES))
            lines = handle.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return []
    if size > TAIL_BYTES:
        lines = lines[1:]
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _stage_steps(run_dir: Path, stage: str | None) -> int | None:
    """Steps of `stage` in the run's saved config: train.max_steps (joint) or
    train.semantic_warmup_steps (warmup)."""
    try:
        config = yaml.safe_load((run_dir / "run_config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    train = config.get("train") if isinstance(config, dict) else None
    if not isinstance(train, dict):
        return None
    key = "semantic_warmup_steps" if stage == "warmup" else "max_steps"
    value = train.get(key)
    return int(value) if isinstance(value, int) and value > 0 else None


def _last_checkpoint(run_dir: Path) -> int | None:
    """Step of the checkpoint a re-run resumes from (imports the checkpoint module, and torch
    with it, only for a cell that has a checkpoints/ directory)."""
    if not (run_dir / "checkpoints").is_dir():
        return None
    from karma.train.checkpoint import latest_checkpoint

    latest = latest_checkpoint(run_dir)
    return int(latest.name.removeprefix("step_")) if latest is not None else None


def cell_status(grid: GridConfig, spec: RunSpec, seed: int, metric: str = "hr@10") -> CellStatus:
    """Where one cell stands (see the module docstring)."""
    run_dir = grid.run_dir(spec, seed)
    done = run_dir / RESULT_FILE
    if done.is_file():
        try:
            result = json.loads(done.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            result = {}
        value = result.get("metrics", {}).get(metric)
        seconds = result.get("train_seconds")
        return CellStatus(
            spec.name,
            seed,
            "finished",
            metric=float(value) if value is not None else None,
            train_seconds=float(seconds) if seconds is not None else None,
        )
    holder = lock_holder(run_dir) if run_dir.is_dir() else None
    records = _tail_records(run_dir / LOG_FILE)
    train = next((r for r in reversed(records) if r.get("kind") == "train"), None)
    evaluation = next((r for r in reversed(records) if r.get("kind") == "eval"), None)
    valid_metric = next((k for k in ("ndcg@10", "hr@10") if evaluation and k in evaluation), None)
    valid = float(evaluation[valid_metric]) if evaluation and valid_metric else None
    if holder is not None:
        stage = train.get("stage") if train else None
        step = train.get("stage_step", train.get("step")) if train else None
        rate = train.get("steps_per_s") if train else None
        return CellStatus(
            spec.name,
            seed,
            "training",
            stage=stage,
            step=int(step) if step is not None else None,
            steps=_stage_steps(run_dir, stage),
            steps_per_s=float(rate) if rate is not None else None,
            valid=valid,
            valid_metric=valid_metric,
            holder=holder,
        )
    checkpoint = _last_checkpoint(run_dir)
    if checkpoint is not None:
        return CellStatus(
            spec.name, seed, "paused", step=checkpoint, valid=valid, valid_metric=valid_metric
        )
    source = grid.init_dir(spec, seed)
    if source is not None and not (source / RESULT_FILE).is_file():
        return CellStatus(spec.name, seed, "waiting")
    return CellStatus(spec.name, seed, "not started")


def grid_status(grid: GridConfig, metric: str = "hr@10") -> list[CellStatus]:
    """Every run x seed of the grid, in the order the runner takes them (seed-major)."""
    return [cell_status(grid, spec, seed, metric) for seed in grid.seeds for spec in grid.runs]


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds >= 5400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min"


def _detail(cell: CellStatus, metric: str) -> str:
    if cell.state == "finished":
        value = "–" if cell.metric is None else f"{cell.metric:.4f}"
        took = _minutes(cell.train_seconds)
        return f"{metric} {value}" + (f", trained {took}" if took else "")
    if cell.state == "training":
        where = f"{cell.stage or 'step'} {cell.step if cell.step is not None else '?'}"
        where += f"/{cell.steps}" if cell.steps is not None else ""
        parts = [f"pid {cell.holder}", where]
        if cell.steps_per_s is not None:
            parts.append(f"{cell.steps_per_s:.2f} steps/s")
        if cell.seconds_left is not None:
            parts.append(f"~{_minutes(cell.seconds_left)} left")
        if cell.valid is not None:
            parts.append(f"valid {cell.valid_metric} {cell.valid:.4f}")
        return ", ".join(parts)
    if cell.state == "paused":
        text = f"resumes from step {cell.step}"
        if cell.valid is not None:
            text += f", valid {cell.valid_metric} {cell.valid:.4f}"
        return text
    return ""


def format_status(cells: list[CellStatus], metric: str = "hr@10") -> str:
    """A plain-text table of `cells` and a one-line count per state."""
    rows = [(c.run, str(c.seed), c.state, _detail(c, metric)) for c in cells]
    header = ("run", "seed", "state", "progress")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    lines = [
        "  ".join(value.ljust(width) for value, width in zip(row[:3], widths)) + "  " + row[3]
        for row in [header, *rows]
    ]
    counts = Counter(c.state for c in cells)
    order: list[State] = ["finished", "training", "paused", "waiting", "not started"]
    lines.append(", ".join(f"{counts[s]} {s}" for s in order if counts[s]))
    return "\n".join(line.rstrip() for line in lines)
