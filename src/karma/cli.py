"""The `karma` command line.

Each area of the package owns its subcommands in a `commands` module exposing
`register(subparsers)`; handlers are plain functions taking the parsed namespace. Heavy imports
(torch, transformers) happen inside handlers so `karma --help` and `karma data stats` stay quick.
A `KarmaError` is printed as one line with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import sys

from karma import __version__
from karma.config import DeferredOptionsParser
from karma.errors import KarmaError

COMMAND_MODULES = (
    "karma.data.commands",
    "karma.train.commands",
    "karma.eval.commands",
    "karma.diagnostics.commands",
    "karma.serve.commands",
    "karma.experiments.commands",
    "karma.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="karma",
        description="Train, evaluate, diagnose and serve knowledge-action regularized LLM retrievers.",
    )
    parser.add_argument("--version", action="version", version=f"karma {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=DeferredOptionsParser
    )
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(name) is None:
            continue
        importlib.import_module(name).register(subparsers)
    return parser


def quiet_library_progress_bars() -> None:
    """`--no-progress` hides the libraries' bars too (transformers' "Loading weights", a hub
    download), which would otherwise fill a grid's log. Both libraries read the variable when first
    imported, which the handlers do later; one already imported is told directly."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].utils.disable_progress_bars()
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if getattr(args, "no_progress", False):
        quiet_library_progress_bars()
    handler = getattr(args, "func", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        result = handler(args)
    except KarmaError as exc:
        print(f"karma: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("karma: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `karma ... | head` closed the pipe: stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush cannot fail too
        return 141  # 128 + SIGPIPE, what a shell reports for a tool the pipe stopped
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
