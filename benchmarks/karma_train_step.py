"""Training-step throughput of the KARMA action path on a run config (default: the ml-100k CPU one).

    python benchmarks/karma_train_step.py [CONFIG] [key=value ...] --steps 8 --threads 2

Times `loss_step + backward + AdamW step` over real batches (after one warm-up step) and reports
real (non-padding) tokens/s, sequences (users)/s and targets/s: means, and the median step (the
figure least disturbed by other jobs on a shared machine). With --lm-head it also times the
same sequences through the causal LM with its vocabulary head (what a generation loss would pay).
Writes benchmarks/results/karma_train_step.json with the commit, machine and date.
"""

from __future__ import annotations

import argparse
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
    args = parser.parse_args()
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
