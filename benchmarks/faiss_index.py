"""FAISS item index: build time, queries/s and recall@K against exact search on a synthetic catalog.

    python benchmarks/faiss_index.py --num-items 1000000 --dim 64 --threads 2

The catalog is synthetic: unit vectors drawn around `--clusters` Gaussian centres (learned item
embeddings are clustered; pure Gaussian noise is the worst case for any ANN index and says little).
Queries are fresh points from the same mixture. Exact top-K (IndexFlatIP) is the reference; recall@K
= |ANN top-K ∩ exact top-K| / K averaged over queries. Queries/s is measured for one batched search
call of all queries on `--threads` threads. Writes benchmarks/results/faiss_index.json.
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np

from bench_record import write_result
from karma.serve import index as item_index


def synthetic_catalog(n: int, dim: int, clusters: int, seed: int, noise: float) -> np.ndarray:
    """(n, dim) float32 unit vectors around `clusters` centres (always seed 0), generated in chunks."""
    centres = np.random.default_rng(0).normal(size=(clusters, dim)).astype(np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 200_000):
        stop = min(n, start + 200_000)
        x = centres[rng.integers(0, clusters, stop - start)]
        x += noise * rng.standard_normal((stop - start, dim), dtype=np.float32)
        out[start:stop] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument(
        "--noise", type=float, default=0.8, help="per-dimension std around a centre"
    )
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("-k", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kinds", nargs="+", default=["flat", "ivf", "hnsw"])
    parser.add_argument("--nlist", type=int, default=4096)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=64)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[256, 512])
    parser.add_argument(
        "--hnsw-items", type=int, default=0, help="build HNSW on the first N items only (0 = all)"
    )
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.threads)

    start = time.perf_counter()
    items = synthetic_catalog(args.num_items, args.dim, args.clusters, 2, args.noise)
    queries = synthetic_catalog(args.queries, args.dim, args.clusters, 1, args.noise)  # new points
    print(
        f"catalog {items.shape} ({items.nbytes / 2**20:.0f} MiB) in {time.perf_counter() - start:.1f} s"
    )

    start = time.perf_counter()
    reference = item_index.exact_top_k(items, queries, args.k)  # (Q, k) shared by every index
    print(f"exact top-{args.k} of {len(queries)} queries in {time.perf_counter() - start:.1f} s")
    subset = args.hnsw_items if 0 < args.hnsw_items < args.num_items else args.num_items
    hnsw_reference = reference if subset == args.num_items else None

    rows = []
    for kind in args.kinds:
        catalog = items[:subset] if kind == "hnsw" else items
        truth = hnsw_reference if kind == "hnsw" else reference
        if truth is None:
            truth = item_index.exact_top_k(catalog, queries, args.k)
        sweep = {"flat": [None], "ivf": args.nprobe, "hnsw": args.ef_search}[kind]
        config = item_index.IndexConfig(
            kind=kind,
            nlist=args.nlist,
            m=args.m,
            ef_construction=args.ef_construction,
            nprobe=args.nprobe[0],
            ef_search=args.ef_search[0],
        )
        start = time.perf_counter()
        index = item_index.build_index(catalog, config)
        build_s = time.perf_counter() - start
        for value in sweep:
            if kind == "ivf":
                config.nprobe = value
            elif kind == "hnsw":
                config.ef_search = value
            item_index.configure_search(index, config)
            report = item_index.evaluate_index(
                index, catalog, queries, args.k, kind, build_s, reference=truth
            )
            row = {**report.to_dict(), "params": config.to_dict()}
            rows.append(row)
            knob = {"flat": "", "ivf": f" nprobe={value}", "hnsw": f" efSearch={value}"}[kind]
            print(
                f"{kind:>4}{knob:<14} build {build_s:7.1f} s  recall@{report.k} {report.recall:.4f}  "
                f"{report.queries_per_second:9,.0f} queries/s"
            )
        del index

    result = {
        "faiss_version": faiss.__version__,
        "threads": args.threads,
        "num_items": args.num_items,
        "hnsw_items": subset,
        "dim": args.dim,
        "clusters": args.clusters,
        "noise": args.noise,
        "num_queries": args.queries,
        "k": args.k,
        "rows": rows,
    }
    print(f"wrote {write_result('faiss_index', result)}")


if __name__ == "__main__":
    main()
