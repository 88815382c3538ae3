"""`karma evaluate RUN_DIR` and `karma baseline popularity|sasrec --data DIR --out RUN_DIR`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from karma.data.dataset import PreparedDataset


def register(subparsers: Any) -> None:
    evaluate = subparsers.add_parser(
        "evaluate",
        help="full-ranking evaluation of a run (HR/NDCG/MRR@K, CIs, segments, AUC)",
        description="Rank the whole catalog for every user of a split and write "
        "RUN_DIR/metrics.json and RUN_DIR/metrics.md.",
    )
    evaluate.add_argument("run_dir", type=Path, help="run directory holding run.json")
    evaluate.add_argument("--split", choices=("valid", "test"), default="test")
    evaluate.add_argument(
        "--keep-history", action="store_true", help="do not mask the user's history items"
    )
    evaluate.add_argument(
        "--bootstrap", type=int, default=1000, help="bootstrap resamples (0: none)"
    )
    evaluate.add_argument("--seed", type=int, default=0, help="seed of bootstrap and negatives")
    evaluate.add_argument(
        "--data", type=Path, default=None, help="prepared dataset (default: run.json's)"
    )
    evaluate.add_argument("--per-user", action="store_true", help="also store per-user ranks")
    evaluate.set_defaults(func=run_evaluate)

    baseline = subparsers.add_parser(
        "baseline",
        help="train and save a baseline retriever (popularity, sasrec, frozen)",
        description="Train a baseline on a prepared dataset and save it as a run directory that "
        "`karma evaluate` reads.",
    )
    kinds = baseline.add_subparsers(dest="kind", metavar="KIND", required=True)
    popularity = kinds.add_parser("popularity", help="most clicked items in training")
    sasrec = kinds.add_parser(
        "sasrec",
        help="SASRec+ (ID transformer, full-softmax CE)",
        description="Options are key=value overrides of SASRecConfig (e.g. epochs=50 hidden=64) "
        "on top of --config; training uses the generic Trainer (checkpoints, --resume, "
        "RUN_DIR/best).",
    )
    frozen = kinds.add_parser(
        "frozen",
        help="frozen item embeddings (ds.features), user = recency-weighted mean of history",
    )
    frozen.add_argument("--feature", default=None, help="feature name (default: the only one)")
    frozen.add_argument("--decay", type=float, default=1.0, help="recency weight per step back")
    frozen.add_argument("--max-history", type=int, default=50, help="history items averaged")
    for parser in (popularity, sasrec, frozen):
        parser.add_argument("--data", type=Path, required=True, help="prepared dataset directory")
        parser.add_argument("--out", type=Path, required=True, help="run directory to create")
        parser.set_defaults(func=run_baseline)
    sasrec.add_argument("--config", type=Path, default=None, help="YAML SASRecConfig")
    sasrec.add_argument("--resume", action="store_true", help="continue the run in --out")
    sasrec.add_argument("overrides", nargs="*", help="key=value config overrides")


def run_evaluate(args: argparse.Namespace) -> int:
    from karma.data.dataset import PreparedDataset
    from karma.eval.evaluate import evaluate
    from karma.eval.registry import load_retriever, read_run_info

    info = read_run_info(args.run_dir)
    data = args.data or info.get("data")
    if data is None:
        from karma.errors import KarmaError

        raise KarmaError(f"{args.run_dir}/run.json names no dataset; pass --data DIR")
    dataset = PreparedDataset(data)
    retriever = load_retriever(args.run_dir, data)
    result = evaluate(
        retriever,
        dataset,
        split=args.split,
        mask_history=not args.keep_history,
        bootstrap=args.bootstrap,
        seed=args.seed,
    )
    suffix = "" if args.split == "test" else f"_{args.split}"
    (args.run_dir / f"metrics{suffix}.json").write_text(
        result.to_json(with_ranks=args.per_user), encoding="utf-8"
    )
    markdown = result.to_markdown()
    (args.run_dir / f"metrics{suffix}.md").write_text(markdown, encoding="utf-8")
    print(markdown)
    return 0


def run_baseline(args: argparse.Namespace) -> int:
    from karma.data.dataset import PreparedDataset
    from karma.train.lock import RunDirLock

    dataset = PreparedDataset(args.data)
    with RunDirLock(args.out):  # creates args.out; refuses a directory another process trains into
        return _train_baseline(args, dataset)


def _train_baseline(args: argparse.Namespace, dataset: PreparedDataset) -> int:
    from karma.errors import KarmaError
    from karma.eval.registry import write_run_info

    if args.kind == "popularity":
        from karma.baselines.popularity import PopularityRetriever

        PopularityRetriever.from_dataset(dataset).save(args.out)
        write_run_info(args.out, "popularity", args.data)
        print(f"saved popularity baseline to {args.out}")
        return 0
    if args.kind == "frozen":
        from karma.baselines.frozen_llm import FrozenEmbeddingRetriever

        try:
            retriever = FrozenEmbeddingRetriever.from_features(
                dataset, args.feature, decay=args.decay, max_history=args.max_history
            )
        except ValueError as exc:
            raise KarmaError(f"karma baseline frozen: {exc}") from None
        feature = retriever.name.removeprefix("frozen-")
        write_run_info(
            args.out,
            "frozen",
            args.data,
            feature=feature,
            decay=args.decay,
            max_history=args.max_history,
        )
        print(f"saved frozen-embedding baseline ({feature}) to {args.out}")
        return 0
    from karma.baselines.sasrec import SASRecConfig
    from karma.baselines.sasrec_run import train_sasrec
    from karma.config import load_config, save_config

    config = load_config(SASRecConfig, args.config, args.overrides)
    save_config(config, args.out / "baseline_config.yaml")
    train_sasrec(dataset, config, args.out, resume=args.resume)
    info = json.loads((args.out / "run.json").read_text(encoding="utf-8"))
    print(f"saved sasrec to {args.out} (best valid ndcg@10 {info.get('best_valid')})")
    return 0
