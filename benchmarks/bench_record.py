"""What every benchmark writes next to its figures: the commit, the machine and the date.

Scripts run as `python benchmarks/<name>.py`, so this module imports as `bench_record` (the
script's own folder is first on sys.path). `write_result(name, payload)` writes
benchmarks/results/<name>.json and returns the path.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    """The fastest of `repeats` wall-clock timings of `fn()`, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def commit() -> str:
    """`git rev-parse --short HEAD` of the repository, or "unknown" outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, object]:
    """Cores, CPU model and Python version; torch's thread count when the script uses torch."""
    info: dict[str, object] = {
        "nproc": os.cpu_count() or 0,
        "cpu": cpu_model(),
        "python": platform.python_version(),
    }
    # Only report torch threads for scripts that imported torch: importing it here would
    # cost seconds for benchmarks that never touch it.
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
    return info


def write_result(name: str, payload: Mapping[str, object], out: Path | None = None) -> Path:
    """Write `payload` with benchmark name, commit, machine and date to results/<name>.json.

    `out` replaces the default path (for scripts with an --out option). Keys in `payload`
    win over the added ones.
    """
    record = {
        "benchmark": name,
        "commit": commit(),
        "machine": machine(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        **payload,
    }
    path = out if out is not None else RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return path


def print_and_write(name: str, payload: Mapping[str, object]) -> Path:
    """`key: value` lines of `payload` on stdout, then `write_result(name, payload)`."""
    for key, value in payload.items():
        print(f"{key}: {value}")
    path = write_result(name, payload)
    print(f"wrote {path}")
    return path
