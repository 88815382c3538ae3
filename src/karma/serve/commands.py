"""`karma export | index | add-items | serve | recommend`: the serving subcommands.

The options of `karma serve` and `karma index` are generated from `ServeConfig` and `IndexConfig`
(`karma.serve.config`): one place for their defaults and help.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from karma.config import add_config_options
from karma.errors import KarmaError
from karma.serve.config import IndexConfig, ServeConfig

if TYPE_CHECKING:
    import pandas as pd

ConfigT = TypeVar("ConfigT")
API_KEY_ENV = "KARMA_API_KEY"  # where `karma serve` reads the API key when --api-key is absent


def _quiet_faiss_loader() -> None:
    # faiss logs each SIMD library it fails to find at INFO; the CLI's INFO logging would show them.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)


def _config_from_options(
    command: str, config_type: Callable[..., ConfigT], args: argparse.Namespace, names: list[str]
) -> ConfigT:
    """`config_type` from the CLI options `names`; its ValueError (naming a field) names the option."""
    try:
        return config_type(**{name: getattr(args, name) for name in names})
    except ValueError as exc:
        raise KarmaError(f"karma {command}: --{str(exc).replace('_', '-')}") from None


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    _quiet_faiss_loader()
    p = subparsers.add_parser("export", help="write a serving artifact from a training run")
    p.add_argument("run_dir", type=Path, help="training run directory")
    p.add_argument("--out", type=Path, required=True, help="artifact directory to create")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.set_defaults(func=cmd_export)

    p = subparsers.add_parser(
        "index", help="build a FAISS index in an artifact and check its recall"
    )
    p.add_argument("artifact", type=Path, help="serving artifact directory")
    p.set_defaults(config_fields=add_config_options(p, IndexConfig), func=cmd_index)
    p.add_argument("-k", type=int, default=100, help="recall@k against exact search")
    p.add_argument("--queries", type=int, default=1000, help="sampled queries for the recall check")

    p = subparsers.add_parser("add-items", help="append items to an artifact from their text alone")
    p.add_argument("artifact", type=Path, help="serving artifact directory")
    p.add_argument(
        "items", type=Path, help=".parquet/.csv/.jsonl with item_id, title[, text, categories]"
    )
    p.set_defaults(func=cmd_add_items)

    p = subparsers.add_parser("serve", help="serve an artifact over HTTP (FastAPI + uvicorn)")
    p.add_argument("artifact", type=Path, help="serving artifact directory")
    p.set_defaults(config_fields=add_config_options(p, ServeConfig), func=cmd_serve)
    # How the process loads and runs the model (not service settings, so not in ServeConfig).
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads of the encoder (default: torch's)"
    )
    p.add_argument(
        "--quantize",
        choices=("int8",),
        default=None,
        help="int8 dynamic quantization of the LLM's linear layers: ~2x faster on CPU, embeddings "
        "approximate (docs/benchmarks.md measures the top-10 agreement); default: exact fp32",
    )

    p = subparsers.add_parser("recommend", help="top-k items for one history, printed as a table")
    p.add_argument("artifact", type=Path, help="serving artifact directory")
    p.add_argument(
        "--history",
        nargs="+",
        required=True,
        help="item ids or titles (any case, optionally with the year: 'Toy Story (1995)'), "
        "oldest first",
    )
    p.add_argument("--query", default=None, help="optional search query")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--include-seen", action="store_true", help="do not exclude history items")
    p.add_argument("--index", choices=("flat", "ivf", "hnsw"), default="flat")
    p.set_defaults(func=cmd_recommend)


def cmd_export(args: argparse.Namespace) -> int:
    from karma.serve.export import export_run

    manifest = export_run(args.run_dir, args.out, overwrite=args.overwrite)
    enc = manifest["encoder"]
    print(
        f"wrote {args.out}: {manifest['num_items']} items, e={manifest['embedding_dim']}, "
        f"{enc['parameter_count']:,} serving parameters ({enc['lora_adapters_merged']} LoRA merged)"
    )
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    import numpy as np
    from safetensors.numpy import load_file as load_numpy_file

    from karma.serve import index as item_index
    from karma.serve.artifact import (
        ITEM_EMBEDDINGS_FILE,
        ITEM_EMBEDDINGS_KEY,
        read_manifest,
        write_manifest,
    )

    manifest = read_manifest(args.artifact)
    config = _config_from_options("index", IndexConfig, args, args.config_fields)
    embeddings = load_numpy_file(args.artifact / ITEM_EMBEDDINGS_FILE)[ITEM_EMBEDDINGS_KEY]
    start = time.perf_counter()
    index = item_index.build_index(embeddings, config)
    build_s = time.perf_counter() - start
    item_index.save_index(index, args.artifact, args.kind)
    # Queries: item embeddings of random items, a stand-in for user vectors in the same space.
    rng = np.random.default_rng(0)
    sample = rng.choice(len(embeddings), min(args.queries, len(embeddings)), replace=False)
    report = item_index.evaluate_index(
        index, embeddings, embeddings[sample], args.k, args.kind, build_s
    )
    manifest.setdefault("indexes", {})[args.kind] = {
        "config": config.to_dict(),
        "num_items": int(index.ntotal),
        "report": report.to_dict(),
    }
    write_manifest(args.artifact, manifest)
    print(
        f"{args.kind} index over {report.num_items} items: recall@{report.k} vs exact = "
        f"{report.recall:.4f} on {report.num_queries} queries, {report.queries_per_second:,.0f} "
        f"queries/s, built in {build_s:.2f} s"
    )
    return 0


def read_items_file(path: Path) -> pd.DataFrame:
    import pandas as pd

    if not path.is_file():
        raise KarmaError(f"{path} does not exist")
    if path.suffix == ".parquet":
        table = pd.read_parquet(path)
    elif path.suffix == ".csv":
        table = pd.read_csv(path, dtype={"item_id": str})
    elif path.suffix in (".jsonl", ".json"):
        table = pd.read_json(path, lines=path.suffix == ".jsonl", dtype={"item_id": str})
    else:
        raise KarmaError(f"{path}: use a .parquet, .csv or .jsonl file")
    for column in ("item_id", "title"):
        if column not in table.columns:
            raise KarmaError(f"{path}: missing column {column!r}")
    if "text" not in table.columns:
        # The same text layout the data package gives the LLM: `title | cat, cat`.
        cats = table["categories"] if "categories" in table.columns else [None] * len(table)
        table["text"] = [
            f"{t} | {', '.join(c)}" if c is not None and len(c) else str(t)
            for t, c in zip(table["title"], cats)
        ]
    return table


def cmd_add_items(args: argparse.Namespace) -> int:
    from karma.serve.artifact import load_artifact, save_catalog

    model = load_artifact(args.artifact)
    if model.manifest["encoder"]["kind"] == "karma":  # feature rows for new items, as at training
        from karma.serve.item_features import new_item_features
        from karma.serve.karma_encoder import KarmaInterestEncoder

        if isinstance(model.encoder, KarmaInterestEncoder):
            model.encoder.feature_encoder = new_item_features
    new = read_items_file(args.items)
    indices = model.add_items(new)
    save_catalog(model)
    print(f"added {len(indices)} items to {args.artifact} (now {model.num_items})")
    return 0


def api_key_from(option: str | None) -> str | None:
    """--api-key if given, else $KARMA_API_KEY (unset or empty: no key)."""
    if option is not None:
        return option
    return os.environ.get(API_KEY_ENV) or None


def cmd_serve(args: argparse.Namespace) -> int:
    # Idle OpenMP threads sleep instead of spinning: on a shared CPU spinning workers steal the
    # cores the next request needs (set before torch starts its thread pool).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if args.threads is not None and args.threads < 1:
        raise KarmaError(f"karma serve: --threads must be >= 1, got {args.threads}")
    args.api_key = api_key_from(args.api_key)

    from karma.serve.app import serve
    from karma.serve.artifact import load_artifact

    config = _config_from_options("serve", ServeConfig, args, args.config_fields)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    serve(load_artifact(args.artifact, index=args.index, quantize=args.quantize), config)
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from karma.serve.artifact import load_artifact
    from karma.serve.recommend import format_table, recommend

    if args.k < 1:
        raise KarmaError(f"-k must be >= 1, got {args.k}")
    model = load_artifact(args.artifact, index=args.index)
    rows = recommend(model, args.history, args.query, args.k, exclude_seen=not args.include_seen)
    print(format_table(rows))
    return 0
