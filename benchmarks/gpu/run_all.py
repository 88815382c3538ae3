"""Run the GPU benchmarks piece by piece, each device call under its 10-minute limit.

    python3 benchmarks/gpu/run_all.py --call 1          # setup, throughput, eval, gpu tests, sasrec
    python3 benchmarks/gpu/run_all.py --call 2          # weights, plan, action-only train + test
    python3 benchmarks/gpu/run_all.py --call 3          # KARMA train + test, compare, serve
    python3 benchmarks/gpu/run_all.py --call resume     # whatever is left, in order
    python3 benchmarks/gpu/run_all.py --steps throughput,eval [--budget-s 300]
    python3 benchmarks/gpu/run_all.py --smoke           # every step (--call all), tiny, on the CPU

Every step is a subprocess given the call's `--deadline`; a step already done on this machine
(.gpu/state/) is skipped, so a call can be repeated after a pause. A training step that runs out
of time checkpoints and reports "paused": the steps that need it are skipped, and the same call
(or `--call resume`) continues it. Writes run_all_<call>.json (steps, statuses, seconds, device)
and run_all_<call>.log into the output folder. The exact device calls are in README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import common

SITE = Path(os.environ.get("KARMA_GPU_SITE", "/tmp/karma-site"))
PAUSED = 3  # exit code of `quality.py train` when it stopped at its deadline

CALLS = {
    "1": ["setup", "throughput", "eval", "gpu-tests", "sasrec"],
    "2": ["setup", "weights", "plan", "train-action-only", "evaluate-action-only", "sasrec"],
    "3": ["setup", "train-karma", "evaluate-karma", "compare", "serve", "sasrec"],
    "resume": [
        "setup",
        "weights",
        "plan",
        "train-action-only",
        "evaluate-action-only",
        "train-karma",
        "evaluate-karma",
        "sasrec",
        "compare",
        "serve",
    ],
}
CALLS["all"] = [
    "setup",
    "throughput",
    "eval",
    "gpu-tests",
    *CALLS["resume"][1:],
]  # no 10-minute limit / smoke
BUDGET_S = {"1": 420, "2": 480, "3": 560, "resume": 560, "all": 3600}
# Seconds a step needs at least (it is skipped with less left), and what it leaves for the
# steps after it in the same call (a training step stops early enough for them).
MIN_S = {
    "gpu": 40,
    "train": 90,
    "throughput": 120,
    "eval": 40,
    "sasrec": 60,
    "serve": 150,
    "compare": 10,
}
AFTER_S = {"eval": 60, "evaluate": 60, "compare": 15, "serve": 150}
# Which steps need which: a step is skipped when one it needs paused, failed or was skipped in
# this call (steps done in an earlier call on this machine are not in `statuses`: no block).
NEEDS = {
    "plan": ["weights"],
    "train-action-only": ["weights", "plan"],
    "evaluate-action-only": ["train-action-only"],
    "train-karma": ["weights", "plan"],
    "evaluate-karma": ["train-karma"],
    "compare": ["evaluate-action-only", "evaluate-karma"],
}


def step_command(
    step: str, args: argparse.Namespace, out: Path, deadline: float
) -> list[str] | None:
    """The step's command line; `deadline` leaves time for the steps after it in this call."""
    py = [sys.executable, str(common.HERE / "{}.py")]
    common_args = ["--out", str(out), "--deadline", f"{deadline:.0f}"] + (
        ["--smoke"] if args.smoke else []
    )

    def script(name: str, *rest: str) -> list[str]:
        return [py[0], py[1].format(name), *rest, *common_args]

    if step == "gpu-tests":  # the test suite's CUDA-only tests (pytest -m gpu)
        tests = str(common.ROOT / "tests")
        return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", tests]
    if step == "throughput":
        return script("throughput")
    if step == "eval":
        return script("eval_throughput")
    if step == "serve":
        return script("serve_latency")
    if step in ("weights", "plan", "compare", "sasrec"):
        return script("quality", step)
    action, _, run = step.partition("-")
    if action == "train":
        return script("quality", "train", run)
    if action == "evaluate":
        return script("quality", "evaluate", run)
    return None


def done_already(step: str, args: argparse.Namespace, out: Path) -> bool:
    state = out / "smoke-state" if args.smoke else common.STATE
    action, _, run = step.partition("-")
    if step == "weights":
        return args.smoke or (common.CONVERTED / "config.json").is_file()
    if action == "train":
        return (state / "runs" / run / "done.json").is_file()
    if action == "evaluate" or step == "sasrec":
        return (state / "results" / f"quality_{run or 'sasrec'}.json").is_file()
    return False


def setup(args: argparse.Namespace) -> dict[str, Any]:
    """Install the carried wheels (those not on the machine) into SITE; check the GPU and data."""
    info: dict[str, Any] = {"python": sys.version.split()[0]}
    if args.smoke:
        return info | {"smoke": True}
    import importlib.metadata as metadata

    wheels = sorted(common.PACK.glob("*/whl/*.whl"))
    wanted = []
    for wheel in wheels:
        name, version = wheel.name.split("-")[:2]
        try:
            have = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            have = None
        # Installed packages win, except an older typing_extensions than pydantic needs.
        if have is None or (name == "typing_extensions" and _older(have, version)):
            wanted.append(wheel)
    marker = SITE / ".installed"
    done = set(marker.read_text().split()) if marker.is_file() else set()
    todo = [w for w in wanted if w.name not in done]
    if todo:
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
        pip += ["--no-compile", "--no-cache-dir", "--upgrade", "--target", str(SITE)]
        subprocess.run([*pip, *map(str, todo)], check=True)
        marker.write_text("\n".join(sorted(done | {w.name for w in todo})))
    info["wheels_installed"] = sorted(done | {w.name for w in todo})
    info["data"] = (common.DATA / "manifest.json").is_file()
    import torch

    info["cuda"] = torch.cuda.is_available()
    info["gpu"] = torch.cuda.get_device_name(0) if info["cuda"] else None
    info["torch"] = torch.__version__
    if not info["cuda"]:
        raise SystemExit("no CUDA device: run with --smoke on a CPU")
    if not info["data"]:
        raise SystemExit(
            f"missing {common.DATA}: call 1 carries .gpu/base (made by benchmarks/gpu/pack.sh); "
            "on a later call it means the machine went cold (README: 'If the machine went cold')"
        )
    return info


def _older(have: str, want: str) -> bool:
    def key(v: str) -> tuple[int, ...]:
        return tuple(int(p) for p in v.split(".")[:3] if p.isdigit())

    return key(have) < key(want)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--call", choices=sorted(CALLS), default=None)
    parser.add_argument("--steps", default=None, help="comma-separated steps instead of --call")
    parser.add_argument("--budget-s", type=float, default=None, help="seconds this call may run")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    started = time.time()
    label = args.call or ("smoke" if args.smoke and not args.steps else "steps")
    call = args.call or ("all" if args.smoke else "resume")
    steps = args.steps.split(",") if args.steps else CALLS[call]
    budget = args.budget_s or BUDGET_S.get(call, 560)
    if args.smoke and args.budget_s is None:
        budget = 1800
    deadline = started + budget
    out = args.out or Path(os.environ.get("OUT") or common.ROOT / "out" / "gpu")
    out.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(SITE), str(common.ROOT / "src"), os.environ.get("PYTHONPATH", "")]
        ).rstrip(os.pathsep),
        "PYTHONUNBUFFERED": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "KARMA_CACHE": str(common.STATE / "cache"),
    }
    if args.smoke:
        env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "1")
    record: dict[str, Any] = {"call": label, "budget_s": budget, "steps": []}
    statuses: dict[str, str] = {}
    log_path = out / f"run_all_{label}.log"
    with log_path.open("a", encoding="utf-8") as log:

        def say(text: str) -> None:
            print(text, flush=True)
            log.write(text + "\n")
            log.flush()

        for index, step in enumerate(steps):
            left = deadline - time.time()
            entry: dict[str, Any] = {"step": step}
            record["steps"].append(entry)
            blocked = [
                n for n in NEEDS.get(step, []) if statuses.get(n) in ("paused", "failed", "skipped")
            ]
            if step == "setup":
                try:
                    record["setup"] = setup(args)
                    statuses[step] = entry["status"] = "ok"
                except (SystemExit, subprocess.CalledProcessError) as exc:
                    statuses[step] = entry["status"] = "failed"
                    entry["error"] = str(exc)
                    say(f"[setup] failed: {exc}")
                    break
                say(f"[setup] {json.dumps(record['setup'])}")
                continue
            if blocked:
                statuses[step] = entry["status"] = "skipped"
                entry["reason"] = f"needs {', '.join(blocked)}"
                say(f"[{step}] skipped: needs {', '.join(blocked)}")
                continue
            if done_already(step, args, out):
                statuses[step] = entry["status"] = "done before"
                say(f"[{step}] already done on this machine")
                continue
            base = step.split("-")[0]
            if left < MIN_S.get(base, 30):
                statuses[step] = entry["status"] = "skipped"
                entry["reason"] = f"{left:.0f} s left"
                say(f"[{step}] skipped: only {left:.0f} s left of this call")
                continue
            reserve = sum(AFTER_S.get(s.split("-")[0], 0) for s in steps[index + 1 :])
            step_deadline = deadline - reserve
            command = step_command(step, args, out, step_deadline)
            if command is None:
                raise SystemExit(f"unknown step {step!r}")
            say(f"[{step}] {' '.join(command)}")
            begin = time.time()
            with subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            ) as proc:
                # A step that overruns (a silent compile, say) is killed 30 s past its own
                # deadline, output or not: the steps after it keep their time, and the call ends
                # inside the 10-minute limit.
                kill_at = min(step_deadline + 30, deadline + 20)
                watchdog = threading.Timer(max(1.0, kill_at - time.time()), proc.kill)
                watchdog.start()
                assert proc.stdout is not None
                for line in proc.stdout:
                    if "%|" in line:  # progress bars: keep the log readable
                        continue
                    say(line.rstrip())
                code = proc.wait()
                if not watchdog.is_alive():
                    say(f"[{step}] killed: past its deadline")
                watchdog.cancel()
            entry["seconds"] = round(time.time() - begin, 1)
            status = "ok" if code == 0 else "paused" if code == PAUSED else "failed"
            statuses[step] = entry["status"] = status
            entry["exit_code"] = code
            say(f"[{step}] {status} in {entry['seconds']} s")
    record["elapsed_s"] = round(time.time() - started, 1)
    record["commit"] = common.commit()
    left_over = [
        s["step"] for s in record["steps"] if s["status"] in ("paused", "failed", "skipped")
    ]
    record["next"] = (
        "all steps of this call done"
        if not left_over
        else f"not done: {', '.join(left_over)}; continue with --call resume (same warm machine)"
    )
    (out / f"run_all_{label}.json").write_text(json.dumps(record, indent=2))
    print(json.dumps({k: record[k] for k in ("call", "elapsed_s", "next")}), flush=True)


if __name__ == "__main__":
    main()
