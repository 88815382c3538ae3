"""Training throughput and model FLOP utilization of SmolLM2-135M (all 30 layers) on ml-1m, bf16.

    python benchmarks/gpu/throughput.py [--out DIR] [--steps 10] [--no-compile]
    python benchmarks/gpu/throughput.py --smoke        # tiny backbone on CPU: checks the script

The backbone is built from SmolLM2-135M's config with random weights (timing needs no real
weights). For the action-only step and the KARMA step (the configs/ml-1m/*-smollm2-gpu.yaml runs,
bf16 autocast over fp32 weights, fused AdamW, gradient clipping: what the Trainer does per step):

1. the largest batch that fits: batch sizes are tried in increasing order (two steps each) until
   one runs out of memory;
2. at that batch and at the config's batch (128), `--steps` timed steps after `--warmup` untimed
   ones, eager and with every decoder layer under `torch.compile`: real (non-padding) tokens/s,
   users/s, step time, peak memory;
3. model FLOPs per step counted by torch's FlopCounterMode over loss + backward, exactly as
   benchmarks/karma_train_step.py counts them (eager, on the same batches), and MFU = achieved
   FLOP/s over the bf16 8192^3 matmul peak measured at the start of the same run.

Also times the KARMA semantic warm-up step at the config's batch, and writes the measured step
times to .gpu/state/quality_plan.json for quality.py to size its runs. Results: throughput.json,
rewritten after each phase so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from functools import partial
from typing import Any

import common

SEARCH_BATCHES = (128, 256, 512, 1024, 2048, 4096)
SMOKE_SEARCH_BATCHES = (2, 4, 8)


class Stepper:
    """One variant's task, optimizer and step, as the Trainer runs them."""

    def __init__(self, kind: str, args: argparse.Namespace, backbone: str | None) -> None:
        import torch

        from karma import build_task

        data = common.smoke_dataset(common.out_dir(args)) if args.smoke else common.DATA
        self.config = common.run_config(kind, data, backbone, args.smoke)
        self.kind = kind
        self.task = build_task(self.config)
        cfg = self.config.train
        self.device = torch.device(
            "cuda" if cfg.device == "cuda" or torch.cuda.is_available() else "cpu"
        )
        if args.smoke:
            self.device = torch.device("cpu")
        self.precision = cfg.precision if cfg.precision != "auto" else "bf16"
        self.task.model.to(self.device).train()
        groups = [dict(g) for g in self.task.optimizer_groups(cfg.lr)]
        for group in groups:
            group.setdefault("weight_decay", cfg.weight_decay)
        self.optimizer = torch.optim.AdamW(
            groups, lr=cfg.lr, betas=cfg.betas, fused=self.device.type == "cuda" or None
        )
        self.params = [p for g in groups for p in g["params"]]
        self.clip = cfg.clip_norm
        self.config_batch = self.config.data.batch_size

    def loss(self, batch: Any, stage: str) -> Any:
        from karma.train.trainer import move_to_device

        if self.device.type != "cpu":
            batch = move_to_device(batch, self.device)
        with common.autocast(self.device, self.precision):
            return self.task.loss_step(batch, stage)

    def step(self, batch: Any, stage: str = "joint") -> None:
        from torch import nn

        self.loss(batch, stage).loss.backward()
        if self.clip is not None:
            nn.utils.clip_grad_norm_(self.params, self.clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def flops(self, batch: Any, stage: str = "joint") -> float:
        """FLOPs of loss + backward, counted as karma_train_step.count_step_flops counts them."""
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            self.loss(batch, stage).loss.backward()
        self.optimizer.zero_grad(set_to_none=True)
        return float(counter.get_total_flops())

    def tokens(self, batch: Any) -> tuple[int, int]:
        """(real tokens, padded tokens) of a batch's LLM input."""
        layout = self.task.encoder.layout(batch.histories, batch.queries)
        return int(layout.attention_mask.sum()), int(layout.attention_mask.numel())

    def compile(self, backend: str) -> float:
        """torch.compile every decoder layer (regional compilation: one graph reused by all)."""
        import torch

        from karma.model.backbone import decoder_layers

        for name in ("recompile_limit", "cache_size_limit"):
            if hasattr(torch._dynamo.config, name):
                setattr(torch._dynamo.config, name, 64)
        start = time.perf_counter()
        for layer in decoder_layers(self.task.encoder.backbone):
            layer.compile(backend=backend, dynamic=True)
        return time.perf_counter() - start


def search_batch(stepper: Stepper, sizes: tuple[int, ...], users: int) -> dict[str, Any]:
    """Largest batch (users) that runs two steps without running out of memory."""
    tried: list[dict[str, Any]] = []
    best = None
    for size in sizes:
        if size > users:
            break
        common.free_memory()
        try:
            batches = common.full_batches(stepper.task, size, start_epoch=1000)
            seconds = [
                common.timed(partial(stepper.step, next(batches)), stepper.device) for _ in range(2)
            ]
        except Exception as exc:  # OOM is the expected end of the search
            if not common.is_oom(exc):
                raise
            stepper.optimizer.zero_grad(set_to_none=True)
            tried.append({"batch_size": size, "fits": False})
            common.free_memory()
            break
        tried.append(
            {
                "batch_size": size,
                "fits": True,
                "second_step_s": seconds[1],
                "peak_memory_gib": common.peak_memory_gib(),
            }
        )
        best = size
    if best is None:
        raise RuntimeError(f"{stepper.kind}: not even batch {sizes[0]} fits")
    return {"largest_batch": best, "tried": tried}


def measure(
    stepper: Stepper,
    batch_size: int,
    args: argparse.Namespace,
    peak: float,
    flops: list[float] | None,
    stage: str = "joint",
    warmup: int | None = None,
) -> tuple[dict[str, Any], list[float]]:
    """Timed steps at `batch_size`; `flops` = per-batch FLOPs already counted (compiled runs
    reuse the eager count of the same timed batches), else they are counted here.

    Warm-up batches come from other epochs than the timed ones, so the timed batches are the
    same whatever the warm-up length. Graphs compiled during the timed steps are counted (a
    recompile there inflates the mean; the median is the figure to read then)."""
    import torch

    common.free_memory()
    warmup = args.warmup if warmup is None else warmup
    warm_batches = common.full_batches(stepper.task, batch_size, start_epoch=500)
    start = time.perf_counter()
    for _ in range(warmup):
        stepper.step(next(warm_batches), stage)
    common.sync(stepper.device)
    warmup_s = time.perf_counter() - start
    batches = common.full_batches(stepper.task, batch_size, start_epoch=0)
    timed_batches = [next(batches) for _ in range(args.steps)]
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    seconds = [common.timed(partial(stepper.step, b, stage), stepper.device) for b in timed_batches]
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs
    memory = common.peak_memory_gib()
    if flops is None:
        flops = [stepper.flops(b, stage) for b in timed_batches]
    tokens = [stepper.tokens(b) for b in timed_batches]
    total = sum(seconds)
    real = sum(t for t, _ in tokens)
    result = {
        "stage": stage,
        "batch_size": batch_size,
        "steps_timed": args.steps,
        "warmup_steps": warmup,
        "warmup_s": warmup_s,
        "mean_step_s": total / args.steps,
        "median_step_s": statistics.median(seconds),
        "tokens_per_s": real / total,
        "users_per_s": batch_size * args.steps / total,
        "mean_tokens_per_user": real / (batch_size * args.steps),
        "padding_fraction": 1 - real / sum(p for _, p in tokens),
        "flops_per_step": sum(flops) / len(flops),
        "achieved_flops_per_s": sum(flops) / total,
        "mfu": sum(flops) / total / peak,
        "median_tokens_per_s": real / args.steps / statistics.median(seconds),
        "median_mfu": sum(flops) / args.steps / statistics.median(seconds) / peak,
        "graphs_compiled_while_timed": graphs,
        "peak_memory_gib": memory,
    }
    print(
        f"  {stepper.kind:<11} {stage:<6} batch {batch_size:>5}: {result['median_step_s'] * 1e3:8.1f} ms/step "
        f"{result['tokens_per_s']:>11,.0f} tok/s  MFU {result['mfu']:.3f}",
        flush=True,
    )
    return result, flops


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common.add_common_args(parser)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile runs")
    parser.add_argument(
        "--compile-warmup", type=int, default=6, help="untimed steps first, compiled (compiles)"
    )
    parser.add_argument(
        "--compile-backend", default=None, help="default: inductor (smoke: eager, no C compiler)"
    )
    parser.add_argument(
        "--batches", type=int, nargs="+", default=None, help="batch sizes the search tries"
    )
    parser.add_argument("--kinds", nargs="+", default=["action-only", "karma"])
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.warmup = min(args.steps, 2), min(args.warmup, 1)
        args.compile_warmup = min(args.compile_warmup, 3)
    backend = args.compile_backend or ("eager" if args.smoke else "inductor")
    sizes = tuple(args.batches or (SMOKE_SEARCH_BATCHES if args.smoke else SEARCH_BATCHES))
    out = common.out_dir(args)

    import torch

    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if not args.smoke and device.type != "cuda":
        raise SystemExit("throughput.py measures a CUDA GPU; use --smoke on a CPU")
    started = time.time()
    backbone = common.random_smollm2_dir(args.smoke)
    peak = common.matmul_peak(device, args.smoke)
    print(f"matmul peak: {peak['flops_per_s'] / 1e12:.1f} TFLOP/s ({peak['dtype']})", flush=True)
    result: dict[str, Any] = {
        "smoke": args.smoke,
        "backbone": "SmolLM2-135M config, all layers, random weights" if backbone else "tiny",
        "matmul_peak": peak,
        "compile_backend": None if args.no_compile else backend,
        "variants": {},
        "plan_step_seconds": {},
    }

    def save() -> None:
        result["elapsed_s"] = time.time() - started
        common.write_json(out, "throughput", result)

    # Phase 1, eager, both steps (what the Trainer runs; also sizes quality.py's runs).
    # Phase 2, compiled, both steps: only with time left, so a slow compile costs no eager figure.
    steppers: dict[str, tuple[Stepper, int, int, dict[int, list[float]]]] = {}
    for kind in args.kinds:
        if common.seconds_left(args) < 60:
            result["variants"][kind] = {"skipped": "out of time"}
            continue
        stepper = Stepper(kind, args, backbone)
        users = len(stepper.task._users)
        variant: dict[str, Any] = {"config": str(common.CONFIGS[kind].relative_to(common.ROOT))}
        result["variants"][kind] = variant
        variant["search"] = search_batch(stepper, sizes, users)
        largest = variant["search"]["largest_batch"]
        config_batch = min(stepper.config_batch, largest)
        eager: dict[str, Any] = {}
        counted: dict[int, list[float]] = {}
        for size in dict.fromkeys([config_batch, largest]):
            eager[str(size)], counted[size] = measure(
                stepper, size, args, peak["flops_per_s"], None
            )
        variant["eager"] = eager
        result["plan_step_seconds"][kind] = eager[str(config_batch)]["median_step_s"]
        if kind == "karma" and common.semantic_warmup_steps(stepper.config.train) > 0:
            warm, _ = measure(stepper, config_batch, args, peak["flops_per_s"], None, "warmup")
            variant["eager_warmup_stage"] = {str(config_batch): warm}
            result["plan_step_seconds"]["karma_warmup"] = warm["median_step_s"]
        steppers[kind] = (stepper, largest, config_batch, counted)
        save()
    write_quality_plan(result, args)
    for kind, (stepper, largest, config_batch, counted) in steppers.items():
        if args.no_compile or common.seconds_left(args) < 120:
            if not args.no_compile:
                result["variants"][kind]["compiled"] = {"skipped": "out of time"}
            continue
        compiled: dict[str, Any] = {}
        try:
            compiled["wrap_s"] = stepper.compile(backend)
            for size in dict.fromkeys([largest, config_batch]):
                compiled[str(size)], _ = measure(
                    stepper,
                    size,
                    args,
                    peak["flops_per_s"],
                    counted[size],
                    warmup=args.compile_warmup,
                )
        except Exception as exc:  # a compile failure is a finding, not a reason to stop
            if common.is_oom(exc):
                common.free_memory()
            compiled["error"] = f"{type(exc).__name__}: {str(exc)[:500]}"
            print(f"  compile failed: {compiled['error']}", flush=True)
        result["variants"][kind]["compiled"] = compiled
        save()
    save()


def write_quality_plan(result: dict[str, Any], args: argparse.Namespace) -> None:
    """The config-batch step times quality.py sizes its equal-step runs with."""
    if len(result["plan_step_seconds"]) < 3 or args.smoke:
        return
    plan = {"batch_size": 128, "step_seconds": result["plan_step_seconds"], "from": "throughput"}
    common.STATE.mkdir(parents=True, exist_ok=True)
    (common.STATE / "quality_plan.json").write_text(json.dumps(plan, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
