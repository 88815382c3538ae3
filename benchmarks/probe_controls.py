"""The fidelity probes on a prepared dataset, against controls whose answer is known (CPU).

    python benchmarks/probe_controls.py DATA [RUN_DIR ...] [--split test] [--feature minilm]

The users and targets are the grid diagnostics' (`split`, up to 2,000 users, seed 0); each
embedding matrix goes through the same category, title and text-alignment probes:
- `zeros` (a constant vector, like popularity's): every score must be exactly its chance level;
- `noise` (two N(0, 1) draws, e = 128): must score near chance;
- `own-text`: the target item's own frozen text features (`--feature`), the ceiling a user
  vector cannot exceed without seeing the target;
- each RUN_DIR: that trained run's user vectors.

Writes benchmarks/results/probe_controls.json with the commit, the machine and the date.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench_record import write_result
from karma.data.dataset import PreparedDataset
from karma.diagnostics.commands import sample_examples
from karma.diagnostics.probes import semantic_fidelity
from karma.runs import load_retriever


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="prepared dataset directory")
    parser.add_argument("runs", nargs="*", help="trained run directories")
    parser.add_argument("--split", default="test")
    parser.add_argument("--feature", default="minilm", help="frozen text features of the items")
    parser.add_argument("--users", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = PreparedDataset(args.data)
    examples = sample_examples(dataset.examples(args.split), args.users, 0)
    targets = np.asarray(examples.targets)
    _, features = dataset.features(args.feature)
    rng = np.random.default_rng(0)
    users = len(targets)
    embeddings = {
        "zeros": np.zeros((users, 8), dtype=np.float32),
        "noise (draw 1)": rng.normal(size=(users, 128)).astype(np.float32),
        "noise (draw 2)": rng.normal(size=(users, 128)).astype(np.float32),
        "own-text": np.asarray(features[targets], dtype=np.float32),
    }
    for run in args.runs:
        embeddings[run] = np.asarray(load_retriever(run, dataset.root).user_vectors(examples))
    out: dict[str, object] = {}
    for name, matrix in embeddings.items():
        start = time.perf_counter()
        scores = semantic_fidelity(
            matrix,
            target_categories=[dataset.categories[t] for t in targets],
            target_titles=[dataset.titles[t] for t in targets],
            target_features=features[targets],
        )
        seconds = time.perf_counter() - start
        out[name] = {"seconds": round(seconds, 1), **scores}
        print(
            f"{name:40s} category AUC {scores['category']['macro_auc']:.3f}  title AUC "
            f"{scores['title']['retrieval_auc']:.3f}  text AUC "
            f"{scores['text_alignment']['retrieval_auc']:.3f}  ({seconds:.0f}s)",
            flush=True,
        )
    payload = {"data": args.data, "split": args.split, "users": users, "probes": out}
    print(f"wrote {write_result('probe_controls', payload)}")


if __name__ == "__main__":
    main()
