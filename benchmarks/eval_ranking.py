"""Full-ranking evaluation cost: ml-1m-sized timing and a 1M-item catalog's peak memory.

    python benchmarks/eval_ranking.py [--huge-users 2000] [--threads 1]

1. ml-1m shape: 6,040 users x 3,706 items, e = 64 random embeddings, random targets and
   ~165-item random histories masked: `rank_targets` + all metrics, and `top_k_items(k=10)`.
2. 1M items x `--huge-users` users, e = 64: `rank_targets` with the default 64 MiB score block;
   peak RSS is read from getrusage before and after (the item matrix itself is 256 MiB).
Writes benchmarks/results/eval_ranking.json.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import torch

from bench_record import ROOT, best_of, write_result
from karma.eval.metrics import ranking_metrics
from karma.eval.ranking import rank_targets, top_k_items


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def random_problem(
    users: int, items: int, dim: int, history: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    user_vecs = rng.standard_normal((users, dim), dtype=np.float32)
    item_vecs = rng.standard_normal((items, dim), dtype=np.float32)
    targets = rng.integers(0, items, size=users)
    histories = [rng.integers(0, items, size=history) for _ in range(users)]
    return user_vecs, item_vecs, targets, histories


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--huge-users", type=int, default=2000)
    parser.add_argument("--huge-items", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (shared machine: 1)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/eval_ranking.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    figures: dict[str, float | int] = {}

    users, items, targets, histories = random_problem(6040, 3706, 64, 165, seed=0)
    figures["ml1m_rank_and_metrics_s"] = best_of(
        3, lambda: ranking_metrics(rank_targets(users, items, targets, histories))
    )
    figures["ml1m_rank_no_mask_s"] = best_of(3, lambda: rank_targets(users, items, targets))
    figures["ml1m_top10_s"] = best_of(3, lambda: top_k_items(users, items, 10, histories))
    print(
        f"ml-1m shape (6040 x 3706, e=64): rank+metrics {figures['ml1m_rank_and_metrics_s']:.2f}s "
        f"(no mask {figures['ml1m_rank_no_mask_s']:.2f}s), top-10 {figures['ml1m_top10_s']:.2f}s"
    )

    users, items, targets, histories = random_problem(
        args.huge_users, args.huge_items, 64, 50, seed=1
    )
    before = peak_rss_mib()
    start = time.perf_counter()
    ranks = rank_targets(users, items, targets, histories)
    figures["huge_rank_s"] = time.perf_counter() - start
    figures["huge_peak_rss_before_mib"] = before
    figures["huge_peak_rss_after_mib"] = peak_rss_mib()
    figures["huge_item_matrix_mib"] = items.nbytes / 2**20
    figures["huge_users"] = args.huge_users
    figures["huge_items"] = args.huge_items
    figures["huge_mean_rank"] = float(ranks.expected_rank.mean())
    print(
        f"{args.huge_items:,} items x {args.huge_users:,} users: {figures['huge_rank_s']:.1f}s, "
        f"peak RSS {before:.0f} -> {figures['huge_peak_rss_after_mib']:.0f} MiB "
        f"(item matrix {figures['huge_item_matrix_mib']:.0f} MiB; a dense score matrix would be "
        f"{args.huge_users * args.huge_items * 4 / 2**30:.1f} GiB)"
    )
    print(f"wrote {write_result('eval_ranking', {'figures': figures}, args.out)}")


if __name__ == "__main__":
    main()
