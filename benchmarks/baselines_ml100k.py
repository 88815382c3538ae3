"""Popularity and SASRec+ on MovieLens-100K: full-ranking test metrics (leave-one-out).

    python benchmarks/baselines_ml100k.py [--data /tmp/ml100k] [key=value SASRecConfig overrides]

Prepares ml-100k into --data with `karma.data.prepare.prepare_dataset` if it is not there yet,
trains SASRec+ with configs/ml-100k/sasrec.yaml (the sasrec recipe, into --run-dir), evaluates both baselines on the test split
(history masked, ties as random tie-breaking) and writes benchmarks/results/baselines_ml100k.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bench_record import ROOT, write_result
from karma.baselines.popularity import PopularityRetriever
from karma.baselines.sasrec import SASRecConfig
from karma.config import load_config, to_dict
from karma.data.dataset import PreparedDataset
from karma.eval.evaluate import evaluate
from karma.runs import load_retriever, open_run
from karma.runs.recipes.sasrec import SASRecRecipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("/tmp/ml100k"))
    parser.add_argument("--config", type=Path, default=ROOT / "configs/ml-100k/sasrec.yaml")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/baselines_ml100k.json"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (shared CPUs: 1)")
    parser.add_argument("--run-dir", type=Path, default=Path("/tmp/karma-bench/sasrec-ml100k"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not (args.data / "manifest.json").is_file():
        from karma.data.prepare import prepare_dataset

        prepare_dataset("ml-100k", args.data)
    dataset = PreparedDataset(args.data)
    results: dict[str, dict] = {}
    popularity = evaluate(PopularityRetriever.from_dataset(dataset), dataset, bootstrap=1000)
    results["popularity"] = popularity.to_dict()
    print(popularity.to_markdown())

    config = load_config(SASRecConfig, args.config, args.overrides)
    start = time.perf_counter()
    summary = SASRecRecipe().train(config, args.run_dir, args.data, resume=False)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    sasrec = evaluate(load_retriever(args.run_dir), dataset, bootstrap=1000)
    eval_seconds = time.perf_counter() - start
    info = open_run(args.run_dir).info
    results["sasrec"] = sasrec.to_dict() | {
        "config": to_dict(config),
        "best_step": info.best_step,
        "steps_run": summary.get("steps"),
        "best_valid_ndcg@10": info.best_metric,
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
    }
    print(sasrec.to_markdown())
    print(
        f"sasrec: {summary.get('steps')} steps in {train_seconds:.0f}s, best step {info.best_step}"
    )
    payload = {
        "dataset": {
            "name": dataset.name,
            "users": len(dataset.examples("test")),
            "items": dataset.num_items,
        },
        "results": results,
    }
    print(f"wrote {write_result('baselines_ml100k', payload, args.out)}")


if __name__ == "__main__":
    main()
