"""Training-step throughput of the KARMA action path on a run config (default: the ml-100k CPU one).

    python benchmarks/karma_train_step.py [CONFIG] [key=value ...] --steps 8 --threads 2
    python benchmarks/karma_train_step.py [CONFIG] --precision fp32 bf16   # side by side

Times `loss_step + backward + AdamW step` over real batches (after one warm-up step) and reports
real (non-padding) tokens/s, sequences (users)/s and targets/s: means, and the median step (the
figure least disturbed by other jobs on a shared machine). With --lm-head it also times the same
sequences through the causal LM with its vocabulary head (what a generation loss would pay).
Writes benchmarks/results/karma_train_step.json with the commit, machine and date.

`--precision fp32 bf16` instead times each precision on the same batches from the same initial
weights, alternating step by step (bf16 = what `train.precision: bf16` does: bf16 autocast around
the loss and its backward), into benchmarks/results/karma_train_step_precision.json.
`--length-groups 1 4` does the same for `data.length_groups` (the history pass as one padded pass
vs groups of similar length) at the first --precision, into
benchmarks/results/karma_train_step_length_groups.json.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import resource
import statistics
import time
from pathlib import Path

import torch

from bench_record import ROOT, write_result
from karma.config import load_config
from karma.train.run_config import RunConfig, build_task


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "config", nargs="?", default=str(ROOT / "configs/ml-100k/action-only-smollm2.yaml")
    )
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--lm-head", action="store_true", help="also time the LM-head forward/backward"
    )
    parser.add_argument(
        "--precision",
        nargs="+",
        choices=["fp32", "bf16"],
        default=["fp32"],
        help="autocast precision(s); two are timed side by side, alternating step by step",
    )
    parser.add_argument(
        "--length-groups",
        nargs="+",
        type=int,
        default=[],
        help="data.length_groups values timed side by side (e.g. 1 4)",
    )
    args = parser.parse_args()
    if len(args.length_groups) > 1:
        precision = args.precision[0]
        variants = {
            f"length_groups_{g}": (precision, [f"data.length_groups={g}"])
            for g in args.length_groups
        }
        compare_variants(args, variants, "karma_train_step_length_groups")
        return
    if len(args.precision) > 1:
        variants = {p: (p, []) for p in args.precision}
        compare_variants(args, variants, "karma_train_step_precision")
        return
    torch.set_num_threads(args.threads)
    config = load_config(RunConfig, args.config, args.overrides)
    task = build_task(config)
    task.model.train()
    optimizer = torch.optim.AdamW(task.optimizer_groups(config.train.lr))
    batches = iter(task.batches(0))
    tokens = users = targets = 0
    elapsed = 0.0
    step_seconds: list[float] = []
    for step in range(args.steps + 1):
        batch = next(batches)
        start = time.perf_counter()
        optimizer.zero_grad()
        task.loss_step(batch, "joint").loss.backward()
        optimizer.step()
        if step == 0:
            continue  # warm-up: first-call allocations
        step_seconds.append(time.perf_counter() - start)
        elapsed += step_seconds[-1]
        layout = task.encoder.layout(batch.histories, batch.queries)
        tokens += int(layout.attention_mask.sum())
        users += len(batch.histories)
        targets += int((batch.targets >= 0).sum())
    result: dict[str, object] = {
        "config": str(Path(args.config).resolve().relative_to(ROOT))
        if ROOT in Path(args.config).resolve().parents
        else args.config,
        "overrides": args.overrides,
        "backbone": config.model.backbone.name,
        "num_layers": config.model.backbone.num_layers,
        "tuning": config.model.backbone.tuning,
        "batch_size": config.data.batch_size,
        "steps_timed": args.steps,
        "seconds_per_step": elapsed / args.steps,
        # The machine is shared: the median step is the figure least disturbed by other jobs.
        "median_seconds_per_step": statistics.median(step_seconds),
        "median_tokens_per_s": tokens / args.steps / statistics.median(step_seconds),
        "median_sequences_per_s": users / args.steps / statistics.median(step_seconds),
        "tokens_per_s": tokens / elapsed,
        "sequences_per_s": users / elapsed,
        "targets_per_s": targets / elapsed,
        "mean_tokens_per_sequence": tokens / users,
    }
    if args.lm_head:
        result.update(time_lm_head(task, batches, args.steps))
    step_flops = count_step_flops(task, next(batches))
    peak = matmul_peak_flops()
    median_step = statistics.median(step_seconds)
    result.update(
        flops_per_step=step_flops,
        achieved_flops_per_s=step_flops / median_step,
        matmul_peak_flops_per_s=peak,
        fraction_of_matmul_peak=step_flops / median_step / peak,
        peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    print(write_result("karma_train_step", result).read_text(encoding="utf-8"), end="")


def _autocast(precision: str) -> contextlib.AbstractContextManager[object]:
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def compare_variants(
    args: argparse.Namespace, variants: dict[str, tuple[str, list[str]]], name: str
) -> None:
    """Each variant (precision, extra overrides) on the same batches from the same initial
    weights, alternating step by step so that other jobs on a shared machine disturb all alike;
    the loss of each on every step."""
    torch.set_num_threads(args.threads)
    runs = {}
    for label, (precision, extra) in variants.items():
        config = load_config(RunConfig, args.config, [*args.overrides, *extra])
        torch.manual_seed(config.seed)
        task = build_task(config)
        task.model.train()
        optimizer = torch.optim.AdamW(task.optimizer_groups(config.train.lr))
        runs[label] = (task, optimizer, precision, [], [])
    first = next(iter(runs.values()))[0]
    batches = list(itertools.islice(iter(first.batches(0)), args.steps + 1))
    for step, batch in enumerate(batches):
        for task, optimizer, precision, seconds, losses in runs.values():
            torch.manual_seed(config.seed + step)  # the same dropout / sampling draws
            start = time.perf_counter()
            optimizer.zero_grad()
            with _autocast(precision):
                loss = task.loss_step(batch, "joint").loss
            loss.backward()
            optimizer.step()
            if step > 0:  # step 0 warms up (first-call allocations)
                seconds.append(time.perf_counter() - start)
                losses.append(float(loss))
    tokens = sum(
        int(first.encoder.layout(b.histories, b.queries).attention_mask.sum()) for b in batches[1:]
    )
    result: dict[str, object] = {
        "config": args.config,
        "overrides": args.overrides,
        "threads": args.threads,
        "steps_timed": args.steps,
        "batch_size": config.data.batch_size,
        "mean_tokens_per_step": tokens / args.steps,
    }
    for label, (_, _, precision, seconds, losses) in runs.items():
        result[label] = {
            "precision": precision,
            "overrides": variants[label][1],
            "median_seconds_per_step": statistics.median(seconds),
            "mean_seconds_per_step": statistics.fmean(seconds),
            "losses": losses,
        }
    base, other = list(variants)[:2]
    result[f"speedup_{other}_over_{base}"] = (
        result[base]["median_seconds_per_step"] / result[other]["median_seconds_per_step"]  # type: ignore[index]
    )
    print(write_result(name, result).read_text(encoding="utf-8"), end="")


def time_lm_head(task: object, batches: object, steps: int) -> dict[str, float]:
    """The same sequences through the causal LM *with* its vocabulary head (next-token CE on text ids)."""
    encoder = task.encoder  # type: ignore[attr-defined]
    tokens, elapsed = 0, 0.0
    for _ in range(steps):
        batch = next(batches)  # type: ignore[call-overload]
        layout = encoder.layout(batch.histories, batch.queries)
        start = time.perf_counter()
        out = encoder.backbone(
            inputs_embeds=encoder.inputs_embeds(layout), attention_mask=layout.attention_mask
        )
        out.logits.float().logsumexp(-1).mean().backward()  # the (B, T, V) head is the cost
        elapsed += time.perf_counter() - start
        tokens += int(layout.attention_mask.sum())
    return {"lm_head_tokens_per_s": tokens / elapsed}


def count_step_flops(task: object, batch: object) -> float:
    """FLOPs of one training step (forward + backward) counted by torch's FlopCounterMode
    (matmuls, convolutions and attention; elementwise work is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        task.loss_step(batch, "joint").loss.backward()  # type: ignore[attr-defined]
    return float(counter.get_total_flops())


def matmul_peak_flops(size: int = 1024, repeats: int = 10) -> float:
    """Best fp32 FLOP/s of a (size x size) @ (size x size) matmul on this machine, same threads:
    the practical peak the training step is compared against (measured in the same run)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


if __name__ == "__main__":
    main()
