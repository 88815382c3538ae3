"""`karma evaluate RUN_DIR` and `karma baseline popularity|sasrec --data DIR --out RUN_DIR`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from karma.config import load_config
from karma.errors import ConfigError


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
    sasrec.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    sasrec.add_argument("overrides", nargs="*", help="key=value config overrides")
    # Each kind's options -> its recipe's config, and what to print once the run is saved.
    popularity.set_defaults(
        baseline_config=lambda args, cls: cls(),
        saved="saved popularity baseline to {out}",
    )
    sasrec.set_defaults(
        baseline_config=lambda args, cls: load_config(cls, args.config, args.overrides),
        saved="saved sasrec to {out} (best valid ndcg@10 {best_metric})",
    )
    frozen.set_defaults(
        baseline_config=lambda args, cls: cls(args.feature, args.decay, args.max_history),
        saved="saved frozen-embedding baseline ({feature}) to {out}",
    )


def run_evaluate(args: argparse.Namespace) -> int:
    from karma.data.dataset import PreparedDataset
    from karma.eval.evaluate import evaluate
    from karma.runs import load_retriever, open_run

    run = open_run(args.run_dir)
    data = args.data or run.data
    dataset = PreparedDataset(data)
    retriever = load_retriever(run, data)
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
    from karma.runs import open_run, recipe_for  # torch: kept out of `karma --help`

    recipe = recipe_for(args.kind)
    try:
        config = args.baseline_config(args, recipe.config_type)
    except ValueError as exc:  # a config's __post_init__ names the bad field
        raise ConfigError(f"karma baseline {args.kind}: --{exc}".replace("_", "-")) from None
    recipe.train(
        config,
        args.out,
        args.data,
        resume=getattr(args, "resume", False),
        progress=not getattr(args, "no_progress", False),
    )
    run = open_run(args.out)
    print(args.saved.format(out=args.out, best_metric=run.info.best_metric, **run.options))
    return 0
