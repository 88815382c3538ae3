"""Cost of the knowledge regularizers per training step: action-only vs each objective vs all,
at one or several depths of the user-side LLM stack.

    python benchmarks/knowledge_step_cost.py --data DIR [--reps 2] [--threads 2]
    python benchmarks/knowledge_step_cost.py --data DIR --layers 4 8 16 30 --settings action_only all
    python benchmarks/knowledge_step_cost.py --data DIR --settings action_only all all+clip_ratio \
        all+clip_ratio_one_forward --threads 1

Builds the task of configs/ml-100k/karma-smollm2.yaml (SmolLM2-135M truncated to 4 layers, LoRA,
16 users a batch, every prefix trained) once per knowledge setting (and per `--layers` depth:
`model.backbone.num_layers`, 30 = the whole model), and times `loss_step` + backward round-robin
over them (median of --reps after one warm-up round; every task sees the same batch sequence). DIR
is a prepared ml-100k with `minilm` features. `all+clip_ratio` is full KARMA under the study's
gradient control (`knowledge.grad_control=clip_ratio`, ratio 0.5: one backward per term), and
`all+clip_ratio_one_forward` the same with L_rec / L_flow reading e_u from the batch's forward (how
karma did it before `knowledge_inputs.interest_at`), so the two are compared side by side. Writes
benchmarks/results/knowledge_step_cost.json (or `--out NAME`), or knowledge_step_cost_depth.json
when --layers is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

import karma.train.karma_task as karma_task
from bench_record import ROOT, write_result
from karma.config import load_config
from karma.objectives.knowledge import KnowledgeConfig
from karma.train.run_config import RunConfig, build_task

CONFIG = ROOT / "configs" / "ml-100k" / "karma-smollm2.yaml"


def settings(full: KnowledgeConfig) -> dict[str, KnowledgeConfig]:
    off = {"generation_weight": 0.0, "reconstruction_weight": 0.0, "flow_weight": 0.0}
    controlled = dataclasses.replace(full, grad_control="clip_ratio", grad_ratio=0.5)
    return {
        "action_only": KnowledgeConfig(),
        "gen": dataclasses.replace(full, **{**off, "generation_weight": full.generation_weight}),
        "rec": dataclasses.replace(
            full, **{**off, "reconstruction_weight": full.reconstruction_weight}
        ),
        "flow": dataclasses.replace(full, **{**off, "flow_weight": full.flow_weight}),
        "all": full,
        "all+clip_ratio": controlled,
        "all+clip_ratio_one_forward": controlled,  # its own task: timed with the old readout
    }


ONE_FORWARD = {"on": False}  # set while the `_one_forward` task is timed


def _build_knowledge_batch(*args, **kwargs):  # type: ignore[no-untyped-def]
    if ONE_FORWARD["on"]:
        kwargs["separate_readout"] = False
    return BUILD(*args, **kwargs)


BUILD = karma_task.build_knowledge_batch
karma_task.build_knowledge_batch = _build_knowledge_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--layers", type=int, nargs="+", help="user-side decoder layers to compare (default: 4)"
    )
    parser.add_argument("--settings", nargs="+", help="knowledge settings to time (default: all)")
    parser.add_argument("--out", help="result name under benchmarks/results (default: by mode)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tasks = {}
    for layers in args.layers or [None]:
        depth = [f"model.backbone.num_layers={layers}"] if layers else []
        base = load_config(RunConfig, CONFIG, [f"data.path={args.data}", *depth])
        for name, knowledge in settings(base.knowledge).items():
            if args.settings and name not in args.settings:
                continue
            key = f"{name}@{layers}" if layers else name
            tasks[key] = build_task(dataclasses.replace(base, knowledge=knowledge))
    batches = {name: task.batches(0) for name, task in tasks.items()}
    times: dict[str, list[float]] = {name: [] for name in tasks}
    # Round-robin over the settings, so load from other jobs on a shared CPU hits all alike.
    for _ in range(args.reps + 1):  # the first round warms up allocators
        for name, task in tasks.items():
            task.model.train()
            batch = next(batches[name])
            ONE_FORWARD["on"] = name.startswith("all+clip_ratio_one_forward")
            start = time.perf_counter()
            task.backward(task.loss_step(batch, "joint"), 1.0)  # plain backward unless controlled
            times[name].append(time.perf_counter() - start)
            task.model.zero_grad(set_to_none=True)
    seconds = {}
    for name, measured in times.items():
        seconds[name] = round(sorted(measured[1:])[len(measured[1:]) // 2], 3)
        print(f"{name:12s} {seconds[name]:.2f} s/step  (all: {[round(t, 2) for t in measured]})")
    reference = next(iter(seconds))  # the first setting at the first depth
    result = {
        "config": str(CONFIG.relative_to(ROOT)),
        "seconds_per_step": seconds,
        f"relative_to_{reference}": {
            k: round(v / seconds[reference], 2) for k, v in seconds.items()
        },
    }
    name = args.out or ("knowledge_step_cost_depth" if args.layers else "knowledge_step_cost")
    print(write_result(name, result).read_text(encoding="utf-8"), end="")


if __name__ == "__main__":
    main()
