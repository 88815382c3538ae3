"""Encoding users batched in the order given vs batched by history length, one run, one process.

    python benchmarks/encode_users_by_length.py RUN_DIR [--data DIR] [--split valid] [--users N]
        [--batch-size 128] [--threads 1] [--repeats 2]

A batch pads every sequence to its longest, so batches of users in dataset order pay for the
longest history on every row; `KarmaEncoder.encode_users` now sorts users by history length
before batching and returns them in the order given. Both are timed here on the same users and
trained weights: "given order" calls `encode_users` once per consecutive slice (each slice is one
batch, so nothing is reordered across batches: the old cost), "by length" calls it once on all
users. Also reported: sequence positions computed (real + padding) for each, and the largest
difference between the two results' vectors. Writes benchmarks/results/encode_users_by_length.json
with the commit, the machine and the date.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from bench_record import best_of, print_and_write
from karma.runs import load_encoder


def padded_positions(lengths: np.ndarray, batch_size: int, extra: int) -> int:
    """Positions the batches compute: each batch pads to its longest sequence (+ fixed tokens)."""
    return sum(
        len(chunk) * (int(chunk.max()) + extra)
        for chunk in (lengths[s : s + batch_size] for s in range(0, len(lengths), batch_size))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", type=Path, help="the run's dataset, if it moved")
    parser.add_argument("--split", choices=["valid", "test"], default="valid")
    parser.add_argument("--users", type=int, default=0, help="first N users (0 = all)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    trained = load_encoder(args.run, args.data)
    encoder = trained.module
    examples = trained.dataset.examples(args.split)
    histories = list(examples.histories[: args.users or None])
    b = args.batch_size
    encoder.eval()

    def given_order() -> torch.Tensor:
        return torch.cat(
            [
                encoder.encode_users(histories[s : s + b], None, b)
                for s in range(0, len(histories), b)
            ]
        )

    def by_length() -> torch.Tensor:
        return encoder.encode_users(histories, None, b)

    with torch.no_grad():
        difference = float((given_order() - by_length()).abs().max())
        seconds_given = best_of(args.repeats, given_order)
        seconds_sorted = best_of(args.repeats, by_length)
    lengths = encoder.history_lengths(histories)
    extra = len(encoder.instruction_ids) + 1  # the instruction and the readout position
    result = {
        "run": str(args.run),
        "split": args.split,
        "users": len(histories),
        "batch_size": b,
        "threads": args.threads,
        "history_length_mean": float(lengths.mean()),
        "history_length_max": int(lengths.max()),
        "positions_real": int((lengths + extra).sum()),
        "positions_given_order": padded_positions(lengths, b, extra),
        "positions_by_length": padded_positions(np.sort(lengths), b, extra),
        "seconds_given_order": seconds_given,
        "seconds_by_length": seconds_sorted,
        "speedup": seconds_given / seconds_sorted,
        "max_abs_difference": difference,
    }
    print_and_write("encode_users_by_length", result)


if __name__ == "__main__":
    main()
