"""What a run records: `run_dir/log.jsonl` (one JSON object a line) and TensorBoard scalars.

Named `run_log` rather than `logging` so it never shadows the standard library module.
Train lines:  {"kind": "train", "step", "stage", "stage_step", "epoch", "lr", "loss", <parts>,
               "steps_per_s", "tokens_per_s"?, "sequences_per_s"?}
Eval lines:   {"kind": "eval", "step", "stage", <metric>: value, ...}
TensorBoard tags are "<stage>/<name>" for train scalars and "eval/<metric>" for metrics.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# LossOutput.parts entries that count work done rather than measure a loss: summed, not averaged,
# and turned into throughput.
COUNT_PARTS = ("tokens", "sequences")


class LossMeter:
    """Averages loss parts over the optimizer steps since the last log line; sums the counts.

    A part is averaged over the steps that reported it (parts measured only on log steps, such as
    per-objective gradient norms, are not diluted by the steps that skipped them).
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.steps = 0
        self.started = time.perf_counter()

    def add_step(self, parts: dict[str, float]) -> None:
        """`parts` of one optimizer step (already averaged over its micro-batches)."""
        for name, value in parts.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value)
            self.counts[name] = self.counts.get(name, 0) + 1
        self.steps += 1

    def summary(self) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        out: dict[str, float] = {}
        for name, total in self.sums.items():
            if name in COUNT_PARTS:
                out[f"{name}_per_s"] = total / elapsed
            else:
                out[name] = total / max(self.counts[name], 1)
        out["steps_per_s"] = self.steps / elapsed
        return out


class RunLog:
    """Appends to `run_dir/log.jsonl` and (optionally) writes TensorBoard scalars to `run_dir/tb`."""

    def __init__(self, run_dir: Path, tensorboard: bool = True, enabled: bool = True) -> None:
        self.enabled = enabled
        self._tb: Any = None
        self._file = None
        if not enabled:
            return
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / "log.jsonl"
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                logger.info("tensorboard is not installed; logging to log.jsonl only")
            else:
                self._tb = SummaryWriter(log_dir=str(run_dir / "tb"))

    def drop_after(self, step: int) -> int:
        """Forget the lines of steps after `step` (those the run is about to train again: a
        process stopped after its last checkpoint, or before its first one, `step` 0), so that
        log.jsonl reads as one uninterrupted run. Returns how many lines were dropped."""
        if not self.enabled or self._file is None:
            return 0
        self._file.close()
        lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [line for line in lines if _step_of(line) <= step]
        if len(kept) < len(lines):
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(kept), encoding="utf-8")
            tmp.replace(self.path)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        return len(lines) - len(kept)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled or self._file is None:
            return
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is None:
            return
        prefix = "eval" if record.get("kind") == "eval" else record.get("stage", "train")
        for name, value in record.items():
            if name in ("kind", "step", "stage", "stage_step", "epoch"):
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._tb.add_scalar(f"{prefix}/{name}", value, record["step"])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _step_of(line: str) -> float:
    """A log line's step; a line that is not a record (a torn last line) counts as after all."""
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return float("inf")
