"""`karma train CONFIG [key=value ...] [--resume]`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a KARMA model from a run config",
        description="Train a KARMA model. Any config field can be overridden as section.field=value "
        "(e.g. train.max_steps=200 data.batch_size=16).",
    )
    parser.add_argument("config", type=Path, help="run config YAML (see configs/)")
    parser.add_argument("overrides", nargs="*", help="section.field=value overrides")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the run directory's last checkpoint"
    )
    parser.add_argument(
        "--output-dir", type=Path, default=None, help="run directory (overrides output_dir)"
    )
    parser.set_defaults(func=train_command)


def train_command(args: argparse.Namespace) -> int:
    from karma.config import load_config
    from karma.runs import train_run
    from karma.train.run_config import RunConfig

    overrides = list(args.overrides) + (
        [f"output_dir={args.output_dir}"] if args.output_dir else []
    )
    config = load_config(RunConfig, args.config, overrides)
    result = train_run(config, resume=args.resume)
    print(json.dumps(result, indent=2, default=str))
    return 0
