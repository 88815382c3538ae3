"""Time `karma data prepare ml-1m` (1,000,209 interactions) end to end and stage by stage.

Run: python benchmarks/prepare_ml1m.py [--repeats 3]
Writes benchmarks/results/prepare_ml1m.json with the commit, machine and date.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench_record import write_result
from karma.data import schema
from karma.data.config import PrepareConfig
from karma.data.prepare import (
    _write_interactions,
    _write_items,
    build_manifest,
    prepare_dataset,
    read_source,
)
from karma.data.preprocess import prepare_tables


def stage_times(work: Path) -> dict[str, float]:
    """One pass split into the stages `prepare_dataset` runs."""
    config = PrepareConfig()
    times: dict[str, float] = {}
    start = time.perf_counter()
    raw = read_source("ml-1m")
    times["read_atomic_files"] = time.perf_counter() - start
    start = time.perf_counter()
    items, inter, report = prepare_tables(raw, config)
    times["dedup_filter_sort_split_queries"] = time.perf_counter() - start
    start = time.perf_counter()
    build_manifest(raw, config, items, inter, report)
    times["manifest_sha256"] = time.perf_counter() - start
    start = time.perf_counter()
    work.mkdir()
    _write_items(items, work / schema.ITEMS_FILE)
    _write_interactions(inter, work / schema.INTERACTIONS_FILE)
    times["write_parquet"] = time.perf_counter() - start
    return times


def time_prepare(name: str, repeats: int, tmp: Path) -> tuple[list[float], dict]:
    totals = []
    for repeat in range(repeats):
        start = time.perf_counter()
        manifest = prepare_dataset(name, tmp / f"{name}-{repeat}")
        totals.append(time.perf_counter() - start)
        print(f"{name} run {repeat + 1}: {totals[-1]:.2f} s")
    return totals, manifest["counts"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    datasets = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("ml-100k", "ml-1m"):
            totals, counts = time_prepare(name, args.repeats, Path(tmp))
            datasets[name] = {
                "seconds_median": round(statistics.median(totals), 2),
                "seconds_min": round(min(totals), 2),
                "seconds_all": [round(t, 2) for t in totals],
                "counts": {k: counts[k] for k in ("users", "items", "interactions")},
            }
        stages = stage_times(Path(tmp) / "stages")
    result = {
        "load_average_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "repeats": args.repeats,
        "datasets": datasets,
        "ml1m_stage_seconds": {k: round(v, 2) for k, v in stages.items()},
        "target_seconds_ml1m": 30,
    }
    for name, figures in datasets.items():
        counts = figures["counts"]
        print(
            f"{name}: {counts['users']:,} users, {counts['items']:,} items, "
            f"{counts['interactions']:,} interactions; prepare median {figures['seconds_median']} s, "
            f"min {figures['seconds_min']} s over {args.repeats} runs"
        )
    print("ml-1m stages (one pass):")
    for stage, seconds in result["ml1m_stage_seconds"].items():
        print(f"  {stage:<34}{seconds:>7.2f} s")
    print(
        f"1-min load average before/after: {result['load_average_1min']} on {os.cpu_count()} cores"
    )
    print(f"wrote {write_result('prepare_ml1m', result)}")


if __name__ == "__main__":
    main()
