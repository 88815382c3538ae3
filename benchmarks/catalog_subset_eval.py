"""A trained run evaluated on another preparation of (a subset of) its items, e.g. ml-1m's 5-core.

    python benchmarks/catalog_subset_eval.py RUN_DIR --data OTHER_DATA [--split test] [--name NAME]

The run keeps its own dataset (histories are encoded with its item indices); OTHER_DATA gives
the users' histories and targets, and the candidate catalog: only OTHER_DATA's items are ranked,
matched to the run's items by `item_id`. It answers "what would this model score on that
preparation" without retraining, e.g. karma's ml-1m SASRec+ (3,706 items) on the 5-core ml-1m of
SASRec's original release (3,416 items), the catalog the published SASRec+ figure is measured on.
The model saw the other items' clicks in training, so this is a reading, not a reproduction.
Also a preparation of the same clicks in another order (e.g. same-timestamp clicks ordered
differently): then the users are the same, and the paired per-user difference against the run's
own preparation is reported with how many targets differ.
Writes benchmarks/results/NAME.json (default catalog_subset_eval) with the commit, the machine and
the date.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench_record import write_result
from karma.data.dataset import Examples, PreparedDataset
from karma.eval.bootstrap import bootstrap_ci
from karma.eval.metrics import hit_rate, ndcg
from karma.eval.ranking import rank_targets
from karma.runs import load_retriever
from karma.runs.layout import open_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", type=Path, required=True, help="the other prepared dataset")
    parser.add_argument("--own-data", type=Path, help="the run's own dataset, if it moved")
    parser.add_argument("--split", choices=["valid", "test"], default="test")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--name", default="catalog_subset_eval", help="results file name")
    args = parser.parse_args()
    own = PreparedDataset(args.own_data or open_run(args.run).data)
    other = PreparedDataset(args.data)
    index = own.item_index
    missing = [i for i in other.items["item_id"].astype(str) if i not in index]
    if missing:
        raise SystemExit(
            f"{args.data}: {len(missing)} items unknown to the run, e.g. {missing[0]!r}"
        )
    to_own = np.array([index[i] for i in other.items["item_id"].astype(str)])  # other -> own
    examples = other.examples(args.split)
    in_own = Examples(
        examples.user_ids,
        [to_own[h] for h in examples.histories],
        to_own[examples.targets],
        examples.queries,
    )
    retriever = load_retriever(args.run, own.root)
    users = retriever.user_vectors(in_own)  # (U, e)
    items = retriever.item_vectors()[to_own]  # (N_other, e): only the other catalog competes
    ranks = rank_targets(users, items, examples.targets, examples.histories)
    result: dict[str, object] = {
        "run": str(args.run),
        "run_items": own.num_items,
        "data": str(args.data),
        "data_items": other.num_items,
        "split": args.split,
        "users": len(examples),
    }
    per_user = {"hr@10": hit_rate(ranks, 10), "ndcg@10": ndcg(ranks, 10)}
    record(result, per_user, args.bootstrap, "")
    own_examples = own.examples(args.split)
    if list(own_examples.user_ids) == list(examples.user_ids):  # same users: a paired reading
        own_ranks = rank_targets(
            retriever.user_vectors(own_examples),
            retriever.item_vectors(),
            own_examples.targets,
            own_examples.histories,
        )
        result["targets_differing"] = int((in_own.targets != own_examples.targets).sum())
        print(f"targets differing from the run's own preparation: {result['targets_differing']}")
        own_per_user = {"hr@10": hit_rate(own_ranks, 10), "ndcg@10": ndcg(own_ranks, 10)}
        deltas = {f"delta_{n}": per_user[n] - own_per_user[n] for n in per_user}
        record(result, deltas, args.bootstrap, " vs own preparation")
    print(f"wrote {write_result(args.name, result)}")


def record(
    result: dict[str, object], per_user: dict[str, np.ndarray], bootstrap: int, label: str
) -> None:
    """Each per-user array's mean and bootstrap 95 % CI into `result`, and printed."""
    cis = bootstrap_ci(per_user, bootstrap, seed=0)
    for name, values in per_user.items():
        low, high = cis[name]
        result[name] = float(values.mean())
        result[f"{name}_ci95"] = [low, high]
        print(f"{name}{label}: {values.mean():+.4f} [{low:+.4f}, {high:+.4f}]")


if __name__ == "__main__":
    main()
