"""Evaluation throughput on the GPU: users/s of full-ranking evaluation over ml-1m's whole catalog.

    python benchmarks/gpu/eval_throughput.py [--out DIR] [--run RUN_DIR]
    python benchmarks/gpu/eval_throughput.py --smoke

The encoder (SmolLM2-135M at all 30 layers; random weights unless `--run` names a trained run)
sits on the GPU; `karma.evaluate` ranks all 3,706 items for each of the 6,040 test users (history
masked, no bootstrap). For each eval batch size and precision (bf16 autocast, fp32) it reports
the best of `--repeats`: end-to-end users/s of `evaluate`, and its two halves: encoding (item
vectors + user vectors on the GPU) and ranking + metrics (karma.eval.ranking, on the CPU).
Results: eval_throughput.json.
"""

from __future__ import annotations

import argparse
from typing import Any

import common


def best_of(repeats: int, fn: Any, device: Any) -> float:
    return min(common.timed(fn, device) for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common.add_common_args(parser)
    parser.add_argument("--run", default=None, help="a trained run directory (default: random)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 2048])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    out = common.out_dir(args)

    import numpy as np
    import torch

    from karma import PreparedDataset, build_task, evaluate
    from karma.eval.metrics import ranking_metrics
    from karma.eval.ranking import rank_targets
    from karma.train.karma_task import KarmaRetriever

    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if not args.smoke and device.type != "cuda":
        raise SystemExit("eval_throughput.py measures a CUDA GPU; use --smoke on a CPU")
    if args.smoke:
        args.batch_sizes, args.repeats = [8], 1
    if args.run:
        from karma import load_retriever

        retriever = load_retriever(args.run)
        encoder, source = retriever.encoder, args.run  # type: ignore[attr-defined]
        dataset = PreparedDataset(common.DATA)
    else:
        data = common.smoke_dataset(out) if args.smoke else common.DATA
        config = common.run_config(
            "action-only", data, common.random_smollm2_dir(args.smoke), args.smoke
        )
        task = build_task(config)
        encoder, dataset = task.encoder, task.dataset
        source = "SmolLM2-135M config, all layers, random weights" if not args.smoke else "tiny"
    encoder.to(device).eval()
    examples = dataset.examples("test")
    users = len(examples)
    runs: list[dict[str, Any]] = []
    for precision in ("bf16", "fp32"):
        for batch_size in args.batch_sizes:
            retriever = KarmaRetriever(encoder, batch_size=batch_size)
            vectors: dict[str, np.ndarray] = {}

            def encode(
                r: KarmaRetriever = retriever, v: dict = vectors, p: str = precision
            ) -> None:
                with torch.no_grad(), common.autocast(device, p):
                    v["items"], v["users"] = r.item_vectors(), r.user_vectors(examples)

            def rank(v: dict = vectors) -> None:
                ranking_metrics(
                    rank_targets(v["users"], v["items"], examples.targets, examples.histories)
                )

            def whole(r: KarmaRetriever = retriever, p: str = precision) -> None:
                with torch.no_grad(), common.autocast(device, p):
                    evaluate(r, dataset, "test", bootstrap=0)

            try:
                encode()  # warm-up (kernels, allocator)
                encode_s = best_of(args.repeats, encode, device)
                rank_s = best_of(args.repeats, rank, device)
                whole_s = best_of(args.repeats, whole, device)
            except Exception as exc:
                if not common.is_oom(exc):
                    raise
                runs.append({"precision": precision, "batch_size": batch_size, "oom": True})
                common.free_memory()
                continue
            row = {
                "precision": precision,
                "batch_size": batch_size,
                "evaluate_s": whole_s,
                "evaluate_users_per_s": users / whole_s,
                "encode_s": encode_s,
                "encode_users_per_s": users / encode_s,
                "rank_and_metrics_s": rank_s,
                "peak_memory_gib": common.peak_memory_gib(),
            }
            runs.append(row)
            print(
                f"{precision} batch {batch_size:>5}: evaluate {row['evaluate_users_per_s']:,.0f} users/s "
                f"(encode {row['encode_s']:.2f} s, rank {rank_s:.2f} s)",
                flush=True,
            )
            if common.seconds_left(args) < 30:
                break
    common.write_json(
        out,
        "eval_throughput",
        {
            "smoke": args.smoke,
            "model": source,
            "users": users,
            "items": dataset.num_items,
            "split": "test",
            "repeats": args.repeats,
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
