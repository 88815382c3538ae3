"""How far `karma serve --quantize int8` is from the exact fp32 serving pass, and how much faster.

    python benchmarks/serve_int8_agreement.py ARTIFACT [--users 1000] [--history-len 20]

Loads the artifact twice (fp32, int8), encodes the same random histories of catalog items with
both, and reports the cosine between the two interest embeddings, the overlap of their top-10 and
top-100 items (history excluded), and the in-process encode time of one user (p50/p99, 1 thread,
interleaved). Writes benchmarks/results/serve_int8_agreement.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from bench_record import print_and_write


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--timed", type=int, default=200, help="single-user encodes timed")
    parser.add_argument("--history-len", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from karma.serve.artifact import load_artifact

    exact = load_artifact(args.artifact)
    fast = load_artifact(args.artifact, quantize="int8")
    rng = np.random.default_rng(0)
    histories = [
        rng.choice(exact.num_items, args.history_len, replace=False).tolist()
        for _ in range(args.users)
    ]
    a = np.concatenate([exact.encode(histories[i : i + 64]) for i in range(0, args.users, 64)])
    b = np.concatenate([fast.encode(histories[i : i + 64]) for i in range(0, args.users, 64)])
    cosine = (a * b).sum(1)  # both unit vectors
    overlap = {}
    for k in (10, 100):
        top_a = exact.search_embeddings(a, k, histories)
        top_b = exact.search_embeddings(b, k, histories)
        overlap[f"top{k}_overlap"] = float(
            np.mean(
                [
                    len(set(x.item_indices.tolist()) & set(y.item_indices.tolist())) / k
                    for x, y in zip(top_a, top_b)
                ]
            )
        )
    times: dict[str, list[float]] = {"fp32": [], "int8": []}
    for n, history in enumerate(histories[: args.timed + 10]):
        for name, model in (
            (("fp32", exact), ("int8", fast))
            if n % 2
            else (
                ("int8", fast),
                ("fp32", exact),
            )
        ):
            start = time.perf_counter()
            model.encode([history])
            if n >= 10:
                times[name].append((time.perf_counter() - start) * 1000)
    timing = {
        name: {"p50_ms": float(np.percentile(v, 50)), "p99_ms": float(np.percentile(v, 99))}
        for name, v in times.items()
    }
    result = {
        "artifact": str(args.artifact),
        "users": args.users,
        "history_len": args.history_len,
        "threads": args.threads,
        "cosine_min": float(cosine.min()),
        "cosine_mean": float(cosine.mean()),
        **overlap,
        "encode_one_user": timing,
    }
    print_and_write("serve_int8_agreement", result)


if __name__ == "__main__":
    main()
