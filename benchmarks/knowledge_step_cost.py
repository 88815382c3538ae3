"""Cost of the knowledge regularizers per training step: action-only vs each objective vs all.

    python benchmarks/knowledge_step_cost.py --data DIR [--reps 2] [--threads 2]

Builds the task of configs/ml-100k/karma-smollm2.yaml (SmolLM2-135M truncated to 4 layers, LoRA,
16 users a batch, every prefix trained) once per knowledge setting, and times `loss_step` +
backward round-robin over the settings (median of --reps after one warm-up round; every setting
sees the same batch sequence). DIR is a prepared ml-100k with `minilm` features.
Writes benchmarks/results/knowledge_step_cost.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from bench_record import ROOT, write_result
from karma.config import load_config
from karma.objectives.knowledge import KnowledgeConfig
from karma.train.run_config import RunConfig, build_task

CONFIG = ROOT / "configs" / "ml-100k" / "karma-smollm2.yaml"


def settings(full: KnowledgeConfig) -> dict[str, KnowledgeConfig]:
    off = {"generation_weight": 0.0, "reconstruction_weight": 0.0, "flow_weight": 0.0}
    return {
        "action_only": KnowledgeConfig(),
        "gen": dataclasses.replace(full, **{**off, "generation_weight": full.generation_weight}),
        "rec": dataclasses.replace(
            full, **{**off, "reconstruction_weight": full.reconstruction_weight}
        ),
        "flow": dataclasses.replace(full, **{**off, "flow_weight": full.flow_weight}),
        "all": full,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = load_config(RunConfig, CONFIG, [f"data.path={args.data}"])
    tasks = {
        name: build_task(dataclasses.replace(base, knowledge=knowledge))
        for name, knowledge in settings(base.knowledge).items()
    }
    batches = {name: task.batches(0) for name, task in tasks.items()}
    times: dict[str, list[float]] = {name: [] for name in tasks}
    # Round-robin over the settings, so load from other jobs on a shared CPU hits all alike.
    for _ in range(args.reps + 1):  # the first round warms up allocators
        for name, task in tasks.items():
            task.model.train()
            batch = next(batches[name])
            start = time.perf_counter()
            task.loss_step(batch, "joint").loss.backward()
            times[name].append(time.perf_counter() - start)
            task.model.zero_grad(set_to_none=True)
    seconds = {}
    for name, measured in times.items():
        seconds[name] = round(sorted(measured[1:])[len(measured[1:]) // 2], 3)
        print(f"{name:12s} {seconds[name]:.2f} s/step  (all: {[round(t, 2) for t in measured]})")
    result = {
        "config": str(CONFIG.relative_to(ROOT)),
        "seconds_per_step": seconds,
        "relative_to_action_only": {
            k: round(v / seconds["action_only"], 2) for k, v in seconds.items()
        },
    }
    print(write_result("knowledge_step_cost", result).read_text(encoding="utf-8"), end="")


if __name__ == "__main__":
    main()
