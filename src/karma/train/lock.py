"""An exclusive lock on a run directory, so two training processes never write into one.

`RunDirLock(run_dir)` creates `run_dir`, takes a non-blocking `fcntl.flock` on `run_dir/.lock`
and writes the holder's pid into that file. A second process asking for the same directory is
refused at once with a `KarmaError` naming the holder's pid (the CLI prints it as one line, exit
status 2). The kernel drops a flock when its file is closed, which happens when the holder exits
or dies (SIGKILL included), so a crashed run leaves no stale lock: the `.lock` file stays, but
it locks nothing and the next run takes it over.

Re-entrant within one process (a training entry point called by another that already holds the
directory's lock simply nests). In a distributed launch (torchrun / `accelerate launch` set
`RANK`), only global rank 0 takes the lock; the other ranks belong to the same training and
write through rank 0. POSIX only (fcntl).

    with RunDirLock(config.output_dir):
        ...train...
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from karma.errors import KarmaError

LOCK_FILE = ".lock"


class RunDirInUse(KarmaError):
    """Another live process holds the run directory's lock."""


# Directories this process holds: resolved path -> (pid, file descriptor, nesting depth). The
# pid guards against a forked child believing it holds its parent's locks.
_held: dict[Path, tuple[int, int, int]] = {}


class RunDirLock:
    """Context manager holding `run_dir/.lock` exclusively for the duration of the block."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self._key: Path | None = None

    def __enter__(self) -> RunDirLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if int(os.environ.get("RANK", "0") or 0) > 0:
            return self  # a non-zero rank of a distributed job: rank 0 holds the lock
        key = self.run_dir.resolve()
        pid = os.getpid()
        held = _held.get(key)
        if held is not None and held[0] == pid:
            _held[key] = (pid, held[1], held[2] + 1)
        else:
            fd = os.open(key / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder_pid(fd)
                os.close(fd)
                raise RunDirInUse(
                    f"run directory {self.run_dir} is in use by pid {holder} (another training "
                    "process); wait for it or use another output_dir"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{pid}\n".encode(), 0)
            _held[key] = (pid, fd, 1)
        self._key = key
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._key is None:
            return  # entered as a non-zero distributed rank
        pid, fd, depth = _held[self._key]
        if depth > 1:
            _held[self._key] = (pid, fd, depth - 1)
        else:
            del _held[self._key]
            os.close(fd)  # releases the flock; the file (with the last pid) stays
        self._key = None


def _holder_pid(fd: int) -> str:
    """The pid written by the holder (it writes right after locking, so retry briefly)."""
    for _ in range(20):
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text:
            return text
        time.sleep(0.05)
    return "unknown"
