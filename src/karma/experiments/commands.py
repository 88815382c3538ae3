"""`karma experiment GRID.yaml [key=value ...]` and `karma compare RUN_DIR RUN_DIR [...]`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "experiment",
        help="train and compare a grid of configs x seeds",
        description="Run every run x seed of a grid file that is not finished yet (a re-run "
        "resumes), then write results.csv, results.md (mean ± std, paired significance against "
        "the baseline, collapse diagnostics) and figures into the grid's output_dir.",
    )
    parser.add_argument("grid", type=Path, help="grid YAML (see configs/experiments/)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. seeds=[0,1]")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="RUN",
        help="train only these runs of the grid (and the baselines they are compared against); "
        "finished cells are shared with full runs of the grid, and the report still covers every "
        "finished cell of the grid (with --report-only: these runs and their baselines alone)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument(
        "--status",
        action="store_true",
        help="print where each run x seed stands (finished, training with its step and time "
        "left, paused, waiting, not started) and exit; trains nothing, locks nothing",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="write results.md/csv and figures from the cells finished so far; train nothing "
        "(unfinished cells are left out, and named)",
    )
    parser.set_defaults(func=experiment_command)

    compare = subparsers.add_parser(
        "compare",
        help="does B beat A: paired per-user differences between run directories",
        description="Evaluate every run on the same split of one dataset (full ranking, history "
        "masked) and print a table: each run's metrics and its paired per-user difference against "
        "the first run, with a bootstrap 95%% CI (a CI excluding 0 is significant). Any run "
        "directories: a grid's cells (RUN/seedN), `karma train` or `karma baseline` output. "
        "Catalog-level figures (coverage@10, auc) have one value per run: their difference is "
        "shown unpaired, marked `not per user`.",
    )
    compare.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="first = A")
    compare.add_argument("--split", choices=("valid", "test"), default="test")
    compare.add_argument(
        "--data", type=Path, default=None, help="prepared dataset (default: the first run's)"
    )
    compare.add_argument(
        "--metrics",
        nargs="+",
        default=["hr@10", "hr@200"],
        help="metrics (default hr@10 hr@200; also ndcg@K, mrr, tail_share@10, gauc, coverage@10, auc)",
    )
    compare.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    compare.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    compare.set_defaults(func=compare_command)


def experiment_command(args: argparse.Namespace) -> int:
    from karma.config import load_config
    from karma.experiments.grid import GridConfig

    # `--only A B key=value` : argparse hands the overrides after --only to it; take them back.
    only = [name for name in args.only or [] if "=" not in name]
    overrides = [*args.overrides, *(item for item in args.only or [] if "=" in item)]
    grid = load_config(GridConfig, args.grid, overrides)
    whole = grid
    if args.only:
        if not only:
            from karma.errors import ConfigError

            raise ConfigError("--only: name at least one run of the grid (key=value are overrides)")
        grid = grid.select(only)
    if args.status:
        from karma.experiments.status import format_status, grid_status

        print(format_status(grid_status(grid)))
        return 0
    from karma.errors import KarmaError
    from karma.experiments.report import write_report
    from karma.experiments.runner import run_grid

    added = [r.name for r in grid.runs if r.name not in only] if args.only else []
    if added and not args.report_only:
        logger.info(
            "--only: also %s, which the named runs are compared with or start from "
            "(their unfinished cells train too)",
            ", ".join(added),
        )
    # Relative run configs: from the current directory, else next to the grid's configs/ tree.
    # (`select` keeps the same run specs, so resolving the whole grid resolves the slice too.)
    whole.resolve_configs([Path.cwd(), args.grid.resolve().parent.parent.parent])
    results = run_grid(grid, progress=not args.no_progress, train=not args.report_only)
    if grid is not whole and not args.report_only:
        # --only picks what trains; the report covers every finished cell of the grid, so a
        # stream that trains a slice never narrows the report the other streams wrote.
        grid, results = whole, run_grid(whole, progress=not args.no_progress, train=False)
    if args.report_only and not results:
        raise KarmaError("no cell of the grid has finished yet: nothing to report")
    paths = write_report(grid, results)
    print(paths[1].read_text(encoding="utf-8"))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def compare_command(args: argparse.Namespace) -> int:
    from karma.data.dataset import PreparedDataset
    from karma.errors import ConfigError
    from karma.experiments.compare import compare_runs
    from karma.runs import open_run

    if len(args.run_dirs) < 2:
        raise ConfigError("karma compare: name at least two run directories (the first is A)")
    if args.bootstrap < 1:
        raise ConfigError("karma compare: --bootstrap must be at least 1")
    runs = [open_run(d) for d in args.run_dirs]  # a bad directory is said before any evaluation
    data = args.data or runs[0].data
    table = compare_runs(
        args.run_dirs, PreparedDataset(data), args.split, args.metrics, args.bootstrap, args.seed
    )
    print(table, end="")
    return 0
