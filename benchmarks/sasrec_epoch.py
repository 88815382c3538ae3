"""A SASRec+ training epoch on MovieLens-1m against the arithmetic it must do; before vs after.

    python benchmarks/sasrec_epoch.py --data /work/data-ml1m [--repeats 2] [--threads 1]
        [--batches N] [key=value SASRecConfig overrides]

Times, side by side and interleaved (the CPU is shared, so the two paths see the same load):
- `reference`: the loop as it was before this benchmark (commit 83c1b68), kept below: every
  window right-padded to the batch's longest, the transformer over all (B, T) slots, the (M, N)
  logits written out and `F.cross_entropy` over them; validation in dataset order.
- `fast`: `SASRecTask` as it is now (windows packed into rows, fused chunked full-softmax loss,
  blocks written out with a 16-bit-mask dropout; validation in history-length order through
  causal `scaled_dot_product_attention`).
- `fast-bf16`: the same with `precision: bf16` (what training with it runs: bf16 autocast over
  the transformer, bf16 operands for the full-softmax matmuls, softmax and sums in fp32).
All start from the same initial weights and train the same epoch's windows in the same order
(forward + backward + AdamW step per batch; dropout as configured), then validate on all users
(in fp32). `--paths` picks which of them run.

FLOPs that must be done: the full-softmax logits, 2·M·N·D for the forward matmul and twice that
for the two gradient matmuls (M = target positions of the epoch, N items, D hidden); the
transformer's own FLOPs are reported as the executed total counted by `FlopCounterMode` on a
sample of batches. The fp32 matmul peak is measured in the same run, between the epochs: the best
1024³ matmul and the best logits-shaped (2048, D) @ (D, N) matmul.
Writes benchmarks/results/sasrec_epoch.json.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from bench_record import ROOT, best_of, write_result
from karma.baselines.sasrec import (
    PAD,
    SASRec,
    SASRecBatch,
    SASRecConfig,
    SASRecRetriever,
    SASRecTask,
    right_padded,
)
from karma.config import load_config
from karma.data.dataset import PreparedDataset
from karma.eval.metrics import hit_rate, ndcg
from karma.eval.ranking import rank_targets

# ----------------------------------------------------------------- the reference (before) path


def reference_hidden(model: SASRec, items: torch.Tensor) -> torch.Tensor:
    """`SASRec.forward` at 83c1b68: `nn.TransformerEncoder` over right-padded rows (B, T, D)."""
    length = items.shape[1]
    x = model.item_embedding(items) * model.config.hidden**0.5 + model.position_embedding(
        torch.arange(length)
    )
    x = F.dropout(x, model.config.dropout, model.training)
    causal = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)
    return model.final_norm(model.blocks(x, mask=causal))


def reference_batches(task: SASRecTask, epoch: int) -> Iterator[SASRecBatch]:
    """The batches as `SASRecTask.batches` made them at 83c1b68: right-padded, one window a row."""
    config = task.config
    order = np.random.default_rng(config.seed + epoch).permutation(len(task.sequences))
    for start in range(0, len(order), config.batch_size):
        chosen = [task.sequences[i] for i in order[start : start + config.batch_size]]
        inputs, _ = right_padded([s[:-1] for s in chosen], config.max_len)
        labels, _ = right_padded([s[1:] for s in chosen], config.max_len)
        yield SASRecBatch(inputs, labels)


def reference_loss(task: SASRecTask, batch: SASRecBatch) -> torch.Tensor:
    """`SASRecTask.loss_step` at 83c1b68: unfused logits + `F.cross_entropy`."""
    hidden = reference_hidden(task.model, batch.inputs)  # (B, T, D)
    real = batch.labels != PAD
    logits = hidden[real] @ task.model.catalog_embeddings().T  # (M, N)
    if task.untrainable is not None:
        logits = logits.masked_fill(task.untrainable[None, :], float("-inf"))
    return F.cross_entropy(logits, batch.labels[real] - 1)


def reference_user_vectors(model: SASRec, histories: list[np.ndarray]) -> np.ndarray:
    """`SASRecRetriever.user_vectors` at 83c1b68: batches of 256 users in dataset order."""
    out = np.zeros((len(histories), model.config.hidden), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(histories), 256):
            stop = min(start + 256, len(histories))
            items, lengths = right_padded(histories[start:stop], model.config.max_len)
            hidden = reference_hidden(model, items)
            users = hidden[torch.arange(stop - start), (lengths - 1).clamp(min=0)]
            users[lengths == 0] = 0.0
            out[start:stop] = users.numpy()
    return out


# ------------------------------------------------------------------------------- the timing


def fast_batches(task: SASRecTask, epoch: int) -> Iterator[SASRecBatch]:
    return task.batches(epoch)


def fast_loss(task: SASRecTask, batch: SASRecBatch) -> torch.Tensor:
    return task.loss_step(batch, "joint").loss


def bf16_loss(task: SASRecTask, batch: SASRecBatch) -> torch.Tensor:
    """`fast_loss` as `precision: bf16` trains it (the Trainer's bf16 autocast)."""
    full = task.model.config
    task.model.config = dataclasses.replace(full, precision="bf16")
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return task.loss_step(batch, "joint").loss
    finally:
        task.model.config = full


PATHS: dict[str, tuple[Callable, Callable]] = {
    "reference": (reference_batches, reference_loss),
    "fast": (fast_batches, fast_loss),
    "fast-bf16": (fast_batches, bf16_loss),
}


def train_epoch(task: SASRecTask, path: str, limit: int | None) -> tuple[float, float, float, int]:
    """One epoch (or its first `limit` batches) of `path`: wall seconds, CPU seconds of this
    process (less disturbed by other jobs on a shared machine), mean loss, target positions."""
    make_batches, loss_of = PATHS[path]
    optimizer = torch.optim.AdamW(task.model.parameters(), lr=task.config.lr, betas=(0.9, 0.98))
    task.model.train()
    losses, targets = [], 0
    start, cpu_start = time.perf_counter(), time.process_time()
    for index, batch in enumerate(make_batches(task, 0)):
        if limit is not None and index >= limit:
            break
        loss = loss_of(task, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        targets += int((batch.labels != PAD).sum())
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return wall, cpu, float(np.mean(losses)), targets


def validate(task: SASRecTask, path: str) -> tuple[float, float, float]:
    """Full-ranking validation of all users: seconds, NDCG@10 and HR@10."""
    task.model.eval()
    start = time.perf_counter()
    examples = task.valid_examples
    if path == "reference":
        users = reference_user_vectors(task.model, examples.histories)
    else:
        users = SASRecRetriever(task.model).user_vectors(examples)
    items = task.model.catalog_embeddings().detach().numpy()
    ranks = rank_targets(users, items, examples.targets, examples.histories)
    seconds = time.perf_counter() - start
    task.model.train()
    return seconds, float(ndcg(ranks, 10).mean()), float(hit_rate(ranks, 10).mean())


def executed_gflop(task: SASRecTask, path: str, batches: int) -> float:
    """Forward + backward GFLOP per batch counted by FlopCounterMode over the first batches."""
    make_batches, loss_of = PATHS[path]
    counter = FlopCounterMode(display=False)
    with counter:
        for index, batch in enumerate(make_batches(task, 0)):
            if index >= batches:
                break
            loss_of(task, batch).backward()
    task.model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batches / 1e9


def matmul_peaks(num_items: int, hidden: int) -> tuple[float, float, float]:
    """Best GFLOP/s of an fp32 1024³ matmul, of a logits-shaped (2048, D) @ (D, N) one, and of a
    bf16 1024³ one (the peak the bf16 path is held against)."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    square = 2 * 1024**3 / best_of(10, lambda: a @ b) / 1e9
    h, e = torch.randn(2048, hidden), torch.randn(num_items, hidden)
    shaped = 2 * 2048 * num_items * hidden / best_of(10, lambda: h @ e.T) / 1e9
    a16, b16 = a.bfloat16(), b.bfloat16()
    square_bf16 = 2 * 1024**3 / best_of(10, lambda: a16 @ b16) / 1e9
    return square, shaped, square_bf16


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("/work/data-ml1m"))
    parser.add_argument("--config", type=Path, default=ROOT / "configs/ml-1m/sasrec.yaml")
    parser.add_argument("--repeats", type=int, default=2, help="epochs timed per path")
    parser.add_argument("--batches", type=int, default=None, help="time only this many batches")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (shared CPUs: 1)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/sasrec_epoch.json")
    parser.add_argument(
        "--paths", nargs="+", choices=list(PATHS), default=list(PATHS), help="paths to time"
    )
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not (args.data / "manifest.json").is_file():
        raise SystemExit(f"{args.data}: prepare it first with `karma data prepare ml-1m --out ...`")
    config = load_config(SASRecConfig, args.config, [*args.overrides, "device=cpu"])
    dataset = PreparedDataset(args.data)
    task = SASRecTask(dataset, config)
    initial = copy.deepcopy(task.model.state_dict())
    num_items, dim = dataset.num_items, config.hidden

    paths = list(args.paths)
    gflop = {path: executed_gflop(task, path, 3) for path in paths}
    epochs: dict[str, list[float]] = {path: [] for path in paths}
    cpu_epochs: dict[str, list[float]] = {path: [] for path in paths}
    valids: dict[str, list[float]] = {path: [] for path in paths}
    peaks: list[tuple[float, float, float]] = []
    summary: dict[str, dict[str, float]] = {}
    targets = 0
    for repeat in range(args.repeats):
        for path in paths if repeat % 2 == 0 else reversed(paths):
            peaks.append(matmul_peaks(num_items, dim))
            task.model.load_state_dict(initial)
            torch.manual_seed(config.seed)
            seconds, cpu_seconds, mean_loss, targets = train_epoch(task, path, args.batches)
            valid_seconds, valid_ndcg, valid_hr = validate(task, path)
            epochs[path].append(seconds)
            cpu_epochs[path].append(cpu_seconds)
            valids[path].append(valid_seconds)
            summary[path] = {
                "mean_train_loss": mean_loss,
                "valid_ndcg@10": valid_ndcg,
                "valid_hr@10": valid_hr,
            }
            print(
                f"repeat {repeat} {path:9s}: epoch {seconds:7.1f}s (CPU {cpu_seconds:6.1f}s)  "
                f"loss {mean_loss:.4f}  "
                f"validate {valid_seconds:5.1f}s  ndcg@10 {valid_ndcg:.4f}",
                flush=True,
            )
    fp32_peak = max(p[0] for p in peaks)
    shaped_peak = max(p[1] for p in peaks)
    bf16_peak = max(p[2] for p in peaks)
    required = 6 * targets * num_items * dim / 1e9  # GFLOP of the logits, forward + backward
    batches = args.batches if args.batches is not None else task.num_batches(0)
    figures: dict[str, dict[str, float]] = {}
    for path in paths:
        best = min(epochs[path])
        # each path against the peak of its own arithmetic (bf16 matmuls for the bf16 path)
        square_peak = bf16_peak if path == "fast-bf16" else fp32_peak
        figures[path] = {
            "epoch_seconds_best": best,
            "epoch_seconds_median": statistics.median(epochs[path]),
            "epoch_cpu_seconds_best": min(cpu_epochs[path]),
            "validate_seconds_best": min(valids[path]),
            "logits_gflop_per_s": required / best,
            "logits_fraction_of_square_peak": required / best / square_peak,
            "executed_gflop_per_batch": gflop[path],
            "executed_gflop_per_s": gflop[path] * batches / best,
            "executed_fraction_of_square_peak": gflop[path] * batches / best / square_peak,
            **summary[path],
        }
    base = paths[0]  # speed-ups against the first path (reference, when it ran)
    speedups = {
        path: {
            "wall": figures[base]["epoch_seconds_best"] / figures[path]["epoch_seconds_best"],
            "cpu": figures[base]["epoch_cpu_seconds_best"]
            / figures[path]["epoch_cpu_seconds_best"],
        }
        for path in paths[1:]
    }
    print(
        f"logits: {required:.0f} GFLOP over {batches} batches ({targets:,} targets × {num_items:,}"
        f" items × {dim}); fp32 peak {fp32_peak:.0f} GFLOP/s (1024³), {shaped_peak:.0f} "
        f"GFLOP/s (logits-shaped); bf16 peak {bf16_peak:.0f} GFLOP/s (1024³)"
    )
    for path, row in figures.items():
        print(
            f"{path:9s}: epoch {row['epoch_seconds_best']:.1f}s, logits "
            f"{row['logits_gflop_per_s']:.1f} GFLOP/s = {row['logits_fraction_of_square_peak']:.2f}"
            f" of peak; executed {row['executed_gflop_per_batch']:.1f} GFLOP/batch = "
            f"{row['executed_fraction_of_square_peak']:.2f} of peak; validate "
            f"{row['validate_seconds_best']:.1f}s"
        )
    for path, speedup in speedups.items():
        print(
            f"speed-up of the training epoch, {path} over {base}: {speedup['wall']:.2f}× wall, "
            f"{speedup['cpu']:.2f}× CPU time"
        )
    payload = {
        "data": str(args.data),
        "config": str(args.config.resolve().relative_to(ROOT)),
        "overrides": args.overrides,
        "threads": args.threads,
        "repeats": args.repeats,
        "batches": batches,
        "target_positions": targets,
        "num_items": num_items,
        "required_logits_gflop": required,
        "matmul_peak_gflop_per_s": fp32_peak,
        "logits_shaped_matmul_gflop_per_s": shaped_peak,
        "bf16_matmul_peak_gflop_per_s": bf16_peak,
        "paths_timed": paths,
        "epoch_speedup_over_first": speedups,
        "paths": figures,
        "epoch_seconds_all": epochs,
        "epoch_cpu_seconds_all": cpu_epochs,
        "validate_seconds_all": valids,
    }
    print(f"wrote {write_result('sasrec_epoch', payload, args.out)}")


if __name__ == "__main__":
    main()
