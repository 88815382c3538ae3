"""Loading a trained KARMA run for inference: the encoder alone vs the whole training task.

    python benchmarks/run_loading.py [--data /tmp/ml100k] [--config configs/ml-100k/karma-smollm2.yaml]

Writes a run directory whose best/ holds the whole KarmaModel of `--config` (untrained weights:
only the loading cost is measured), then times, each `--repeats` times:

- `task`: what inference did before the run layer: build the whole `KarmaTask` (encoder, action
  loss, knowledge heads, tokenized knowledge catalog, scan of every user's training clicks) and
  load the checkpoint strictly;
- `encoder`: `karma.runs.load_encoder` (the encoder alone, `encoder.` keys read strictly).

Prepares ml-100k into --data if it is not there. Writes benchmarks/results/run_loading.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench_record import ROOT, write_result
from karma.config import load_config
from karma.runs import load_encoder
from karma.runs.layout import start_run
from karma.train.checkpoint import load_model_weights, save_model_weights
from karma.train.run_config import RunConfig, build_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("/tmp/ml100k"))
    parser.add_argument("--config", type=Path, default=ROOT / "configs/ml-100k/karma-smollm2.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="key=value RunConfig overrides")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not (args.data / "manifest.json").is_file():
        from karma.data.prepare import prepare_dataset

        prepare_dataset("ml-100k", args.data)
    run_dir = Path(tempfile.mkdtemp(prefix="karma-run-loading-"))
    overrides = [f"data.path={args.data}", f"output_dir={run_dir}", *args.overrides]
    config = load_config(RunConfig, args.config, overrides)
    task = build_task(config)
    start_run(run_dir, "karma", args.data, config)
    (run_dir / "best").mkdir()
    save_model_weights(task.model.state_dict(), run_dir / "best")
    keys = {
        "encoder": sum(1 for k in task.model.state_dict() if k.startswith("encoder.")),
        "all": len(task.model.state_dict()),
    }
    del task

    def whole_task() -> None:
        loaded = build_task(config)
        load_model_weights(loaded.model, run_dir / "best")

    def encoder_only() -> None:
        load_encoder(run_dir)

    times: dict[str, list[float]] = {"task": [], "encoder": []}
    for _ in range(args.repeats):
        for name, load in (("task", whole_task), ("encoder", encoder_only)):
            start = time.perf_counter()
            load()
            times[name].append(time.perf_counter() - start)
    result = {
        "config": str(args.config.relative_to(ROOT))
        if args.config.is_relative_to(ROOT)
        else str(args.config),
        "overrides": args.overrides,
        "threads": args.threads,
        "checkpoint_keys": keys,
        "seconds": {name: statistics.median(values) for name, values in times.items()},
        "all_seconds": times,
    }
    for name, seconds in result["seconds"].items():
        print(f"{name:8s} median {seconds:.2f} s over {args.repeats}")
    print(f"wrote {write_result('run_loading', result)}")


if __name__ == "__main__":
    main()
