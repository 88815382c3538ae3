"""One forest plot of the paired Δ of several grids' finished cells against their baselines.

    python benchmarks/study_deltas.py GRID [GRID ...] [--set key=value ...] [--runs RUN ...]
        [--title TEXT] --out FIGURE.png

Each grid is read the way `karma experiment GRID --report-only` reads it (the overrides in
`--set` apply to every grid, e.g. `output_dir=...`); nothing is trained, unfinished cells are
left out. Every run's paired Δ against its own baseline (HR@10 and HR@200, over all users and,
on new-item splits, among the new items alone) goes into one figure (`karma.experiments.report.
plot_deltas`), limited to `--runs` when given. The numbers go to benchmarks/results/
study_deltas.json with the commit, the machine and the date.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from bench_record import ROOT, write_result
from karma.config import load_config
from karma.experiments.grid import GridConfig
from karma.experiments.report import paired_deltas, plot_deltas
from karma.experiments.runner import run_grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grids", nargs="+", type=Path, help="grid YAML files")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", dest="overrides")
    parser.add_argument("--runs", nargs="*", help="only these runs (default: every compared run)")
    parser.add_argument("--title", default="Where KARMA pays")
    parser.add_argument("--out", type=Path, required=True, help="the figure (PNG)")
    args = parser.parse_args()
    deltas = []
    for path in args.grids:
        grid = load_config(GridConfig, path, args.overrides)
        grid.resolve_configs([Path.cwd(), ROOT])
        found = paired_deltas(grid, run_grid(grid, progress=False, train=False))
        deltas += [d for d in found if args.runs is None or d.run in args.runs]
    if not plot_deltas(args.title, deltas, args.out):
        raise SystemExit("no finished run has a finished baseline: nothing to plot")
    for d in deltas:
        where = "among new items" if d.cold_only else "all users"
        print(
            f"{d.run:40s} vs {d.baseline:24s} {where:16s} Δ{d.metric} {d.difference:+.4f} "
            f"[{d.ci[0]:+.4f}, {d.ci[1]:+.4f}]"
        )
    payload = {"grids": [str(g) for g in args.grids], "deltas": [asdict(d) for d in deltas]}
    print(f"wrote {args.out} and {write_result('study_deltas', payload)}")


if __name__ == "__main__":
    main()
