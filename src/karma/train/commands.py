"""`karma train CONFIG [key=value ...] [--section.field VALUE ...] [--resume] [--pause-after-minutes M]`.

Every field of `RunConfig` is an option, generated from the config dataclasses (their docstrings
are the help text), and also a positional `section.field=value` override; both are applied on top
of CONFIG, options last.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from karma.config import add_override_options, defer_options, overrides_from_options
from karma.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a KARMA model from a run config",
        description="Train a KARMA model. Any config field can be overridden as section.field=value "
        "(e.g. train.max_steps=200 data.batch_size=16) or as an option (--train.max_steps 200).",
    )
    parser.add_argument("config", type=Path, help="run config YAML (see configs/)")
    parser.add_argument("overrides", nargs="*", help="section.field=value overrides")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the run directory's last checkpoint"
    )
    parser.add_argument(
        "--output-dir", type=Path, default=None, help="run directory (overrides output_dir)"
    )
    parser.add_argument(
        "--pause-after-minutes",
        type=float,
        default=None,
        metavar="M",
        help="wall-clock allowance of this process: after the step that crosses it, write a "
        "checkpoint and exit 0 unfinished; the same command with --resume continues exactly "
        "(unlike train.time_budget_minutes, which ends the run)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="hide the progress bar (train.progress_bar)"
    )
    defer_options(parser, _add_run_config_options)

    parser.set_defaults(func=train_command)


def _add_run_config_options(parser: argparse.ArgumentParser) -> None:
    from karma.train.run_config import RunConfig  # torch: added when `karma train` runs

    add_override_options(parser, RunConfig, skip=("output_dir",))


def train_command(args: argparse.Namespace) -> int:
    from karma.config import load_config
    from karma.runs import train_run  # torch: kept out of `karma --help`
    from karma.train.run_config import RunConfig

    overrides = list(args.overrides) + overrides_from_options(args)
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    if args.no_progress:
        overrides.append("train.progress_bar=false")
    minutes = args.pause_after_minutes
    if minutes is not None and not minutes > 0:
        raise ConfigError(f"--pause-after-minutes: must be > 0, got {minutes}")
    pause_at = None if minutes is None else time.time() + 60 * minutes  # from the process start
    config = load_config(RunConfig, args.config, overrides)
    result = train_run(config, resume=args.resume, pause_at=pause_at)
    if result["paused"]:
        print(f"paused at step {result['steps']}; run the same command with --resume to continue")
        return 0
    print(json.dumps(result, indent=2, default=str))
    return 0
