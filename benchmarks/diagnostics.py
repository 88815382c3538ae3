"""How long the semantic-collapse diagnostics take, on synthetic inputs of realistic size (CPU).

    python benchmarks/diagnostics.py [--users 1000] [--dim 128] [--threads 1]

- fidelity probes on `--users` synthetic interest embeddings that encode one of 20 categories
  (and, as the floor, on random embeddings): time and scores of each probe;
- `summarize` on readout attention shaped like SmolLM2-135M (30 layers, 9 heads) over 500 users;
- readout attention collection (eager) with a random 4-layer Llama (hidden 64) for 200 users.

Writes benchmarks/results/diagnostics.json with the commit, the machine and the date.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from bench_record import write_result
from karma.diagnostics.attention import ReadoutAttention, ReadoutInputs, collect_batched
from karma.diagnostics.metrics import summarize
from karma.diagnostics.probes import (
    ProbeConfig,
    category_matrix,
    category_probe,
    single_thread,
    text_alignment,
    title_probe,
)

WORDS = [f"w{i}" for i in range(200)]


def synthetic_users(users: int, dim: int, seed: int = 0) -> dict[str, object]:
    """Embeddings that encode the target's category (+ noise), random ones, and the targets."""
    rng = np.random.default_rng(seed)
    category = rng.integers(0, 20, users)
    labels, _ = category_matrix([[f"c{c}"] for c in category])
    encoded = labels @ rng.normal(size=(labels.shape[1], dim)) + rng.normal(size=(users, dim))
    # titles: 2 words fixed by the category, then 3 random words (undecodable from anything)
    titles = [
        " ".join([WORDS[2 * c], WORDS[2 * c + 1], *rng.choice(WORDS[40:], 3)]) for c in category
    ]
    features = encoded @ rng.normal(size=(dim, 384)) + 3 * rng.normal(size=(users, 384))
    return {
        "labels": labels,
        "titles": titles,
        "features": features,
        "encoded": encoded.astype(np.float32),
        "random": rng.normal(size=(users, dim)).astype(np.float32),
    }


def time_probes(users: int, dim: int) -> dict[str, object]:
    data = synthetic_users(users, dim)
    out: dict[str, object] = {}
    config = ProbeConfig()
    with single_thread():
        for kind in ("encoded", "random"):
            embeddings = data[kind]
            for name, run in (
                ("category", lambda e: category_probe(e, data["labels"], config)),
                ("title", lambda e: title_probe(e, data["titles"], config)),
                ("text_alignment", lambda e: text_alignment(e, data["features"], config)),
            ):
                start = time.perf_counter()
                scores = run(embeddings)
                seconds = time.perf_counter() - start
                out[f"{kind}/{name}"] = {"seconds": round(seconds, 2), **scores}
                print(f"{kind:8s} {name:15s} {seconds:6.2f}s  {scores}")
    return out


def time_summarize(layers: int = 30, users: int = 500, heads: int = 9, length: int = 64) -> float:
    weights = torch.rand(layers, users, heads, length).softmax(-1)
    history = torch.zeros(users, length, dtype=torch.bool)
    history[:, 10:60] = True
    attention = ReadoutAttention(weights, torch.ones(users, length, dtype=torch.bool), history)
    start = time.perf_counter()
    summarize(attention)
    seconds = time.perf_counter() - start
    print(f"summarize {tuple(weights.shape)}: {seconds:.2f}s")
    return seconds


def time_collection(users: int = 200, length: int = 64, batch: int = 8) -> float:
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=100,
    )
    model = LlamaForCausalLM(config)
    batches = [
        ReadoutInputs(
            torch.randn(batch, length, 64),
            torch.ones(batch, length, dtype=torch.long),
            torch.full((batch,), length - 1),
            torch.ones(batch, length, dtype=torch.bool),
        )
        for _ in range(users // batch)
    ]
    start = time.perf_counter()
    collect_batched(model, batches, progress=False)
    seconds = time.perf_counter() - start
    print(f"collect {users} users x {length} positions (4-layer Llama, eager): {seconds:.2f}s")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = {
        "users": args.users,
        "dim": args.dim,
        "torch_threads": args.threads,
        "probes": time_probes(args.users, args.dim),
        "summarize_seconds_30x500x9x64": round(time_summarize(), 3),
        "collect_seconds_200_users_tiny_llama": round(time_collection(), 3),
    }
    print(f"wrote {write_result('diagnostics', result)}")


if __name__ == "__main__":
    main()
