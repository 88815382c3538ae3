"""Every command of the README's usage block runs as written, in order.

The commands are read from README.md (the first ```bash block under "## Usage"), so a README edit
that breaks one fails here. Only what must change for a test is substituted, and every
substitution is listed below: the dataset becomes a tiny prepared one written in code (the
`data prepare` line itself runs on the real packaged ml-100k), training configs become
configs/debug/tiny.yaml, the experiment grid a two-run tiny grid, outputs go under tmp_path, the
server gets a free port, and the tiny catalog carries the two films `recommend` names. Commands run
in-process through `karma.cli.main` (fast), except `karma serve`, which is started as a
subprocess, probed on /healthz and stopped.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from karma.cli import main
from karma.config import load_config
from karma.testing.datasets import write_tiny_dataset

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "configs" / "debug" / "tiny.yaml"


def usage_commands() -> list[list[str]]:
    """The README's usage block, one argv per line (shell comments dropped)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "\n## Usage\n" in text, "README.md has no '## Usage' section"
    match = re.search(r"```bash\n(.*?)```", text.split("\n## Usage\n", 1)[1], re.S)
    assert match, "README.md's Usage section has no ```bash block"
    return [
        shlex.split(line, comments=True) for line in match.group(1).splitlines() if line.strip()
    ]


def replace(arg: str, table: dict[str, str], used: set[str]) -> str:
    """`arg` from the table; for `key=value` overrides, the value."""
    key, eq, value = arg.rpartition("=") if "=" in arg and arg not in table else ("", "", arg)
    if value in table:
        used.add(value)
        return key + eq + table[value]
    return arg


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_serve(argv: list[str], timeout_s: float = 180.0) -> dict:
    """Start `karma serve` as a subprocess, wait for /healthz, return its JSON, stop the server."""
    port = argv[argv.index("--port") + 1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *sys.path])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "karma", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"karma serve exited with {proc.returncode}:\n{proc.stdout.read()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                    return json.loads(r.read())
            except OSError:
                time.sleep(0.5)
        pytest.fail(f"karma serve did not answer /healthz within {timeout_s:.0f} s")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def test_readme_usage_block_runs_as_written(tmp_path: Path, capsys) -> None:
    commands = usage_commands()
    assert commands and all(argv[0] == "karma" for argv in commands), commands

    data = write_tiny_dataset(tmp_path / "tiny")
    # The README's `recommend` names two ml-100k films by title and year: give the tiny catalog
    # those two titles and a `year` column (MovieLens keeps the year apart from the title).
    items = pd.read_parquet(data / "items.parquet")
    items.loc[:1, "title"] = ["Toy Story", "Heat"]
    items["year"] = "1995"
    items.to_parquet(data / "items.parquet", index=False)
    titles = items["title"].tolist()
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        f"name: readme tiny grid\ndata: {data}\noutput_dir: {tmp_path / 'experiment'}\n"
        "seeds: [0]\nbootstrap: 20\ndiagnostics: false\nruns:\n"
        "  - {name: popularity, kind: popularity}\n"
        f"  - {{name: karma, kind: karma, config: {TINY_CONFIG}, "
        "overrides: [train.max_steps=2, train.eval_every=2, train.checkpoint_every=2]}\n",
        encoding="utf-8",
    )
    runs, artifact = tmp_path / "runs", tmp_path / "artifacts" / "karma"
    # README argument -> what this test runs instead. Each entry must be used (checked below).
    substitute = {
        "data/ml-100k": str(data),  # the tiny prepared dataset (but see `data prepare` below)
        "configs/ml-100k/karma-smollm2.yaml": str(TINY_CONFIG),
        "configs/ml-100k/action-only-smollm2.yaml": str(TINY_CONFIG),
        "runs/ml-100k/karma-smollm2": str(runs / "karma-smollm2"),
        "runs/ml-100k/action-only-smollm2": str(runs / "action-only-smollm2"),
        "runs/sasrec": str(runs / "sasrec"),
        "configs/experiments/ablation-ml-100k.yaml": str(grid),
        "artifacts/karma": str(artifact),
        "8000": str(free_port()),
    }
    # Per command (its first three words): substitutions that differ, and arguments appended.
    per_command = {
        # The real packaged ml-100k (4 s), written next to, not over, the tiny dataset.
        "karma data prepare": {"data/ml-100k": str(tmp_path / "ml-100k")},
    }
    # configs/debug/tiny.yaml writes to runs/debug-tiny: point it where the README's run is, and
    # train 2 steps of its 50 (one validation, one checkpoint: every code path, much faster).
    short = ["train.max_steps=2", "train.eval_every=2", "train.checkpoint_every=2"]
    appended = {
        "configs/ml-100k/karma-smollm2.yaml": [f"output_dir={runs / 'karma-smollm2'}", *short],
        "configs/ml-100k/action-only-smollm2.yaml": [
            f"output_dir={runs / 'action-only-smollm2'}",
            *short,
        ],
        "configs/ml-100k/sasrec.yaml": ["epochs=3"],  # 200 epochs (early-stopped) is not a test
    }
    # The configs that are replaced still load with the README's overrides.
    from karma.baselines.sasrec import SASRecConfig
    from karma.train.run_config import RunConfig

    for name in ("karma-smollm2", "action-only-smollm2"):
        load_config(RunConfig, ROOT / f"configs/ml-100k/{name}.yaml", ["data.path=data/ml-100k"])
    load_config(SASRecConfig, ROOT / "configs/ml-100k/sasrec.yaml")

    used: set[str] = set()
    for argv in commands:
        table = {**substitute, **per_command.get(" ".join(argv[:3]), {})}
        args = [replace(arg, table, used) for arg in argv[1:]]
        for arg in argv[1:]:
            args += appended.get(arg, [])
        shown = shlex.join(argv)
        if argv[1] == "serve":
            health = run_serve(args)
            assert health["status"] == "ok" and health["num_items"] == len(titles), health
            continue
        code = main(args)
        out = capsys.readouterr()
        assert code == 0, f"`{shown}` exited {code}:\n{out.err[-2000:]}"
        if argv[1] == "recommend":
            assert len([line for line in out.out.splitlines() if line.strip()]) >= 10, out.out
    assert used == set(substitute), (
        f"substitutions no README command uses: {set(substitute) - used}"
    )
    assert (tmp_path / "ml-100k" / "manifest.json").is_file()
    assert (artifact / "manifest.json").is_file()
