"""Tables and figures of a finished grid: results.csv, results.md, recall@K, paired Δ (forest plot)
and training curves."""

from __future__ import annotations

import csv
import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from karma.data.dataset import PreparedDataset, Split
from karma.errors import KarmaError
from karma.eval.adherence import ADHERENCE_K
from karma.eval.evaluate import LONG_TAIL_FRACTION, SHORT_HISTORY, long_tail_items
from karma.eval.experiment import paired_bootstrap, per_user_differences
from karma.eval.exposure import EXPOSURE_K, EXPOSURE_METRICS
from karma.eval.metrics import DEFAULT_KS, TargetRanks, per_user_metrics
from karma.experiments.grid import GridConfig, RunSpec
from karma.experiments.runner import RunResult, grid_tasks
from karma.runs import Task

TABLE_METRICS = ("hr@10", "ndcg@10", "hr@50", "hr@200", "mrr")
DIAGNOSTIC_COLUMNS = (
    "sink_mass",
    "barcode",
    "category_f1",
    "category_auc",
    "title_auc",
    "text_cosine",
    "text_auc",
)
PAIRED_METRICS = ("hr@10", "hr@200")
HEAD_PERCENT = round(100 * (1 - LONG_TAIL_FRACTION))
COLD_ONLY_METRICS = ("hr@10", "hr@50")
TARGET_SEGMENTS = ("head", "long_tail", "new")
HISTORY_SEGMENTS = ("short_history", "long_history")
SEGMENT_TABLES = {  # segment names -> the table's title and how its users are split
    TARGET_SEGMENTS: (
        "By target segment: where the difference comes from",
        "Users split by their target's training clicks: `head` = among the "
        f"{HEAD_PERCENT} % most-clicked items, `long_tail` = the other clicked items, `new` = "
        "never clicked in training.",
    ),
    HISTORY_SEGMENTS: (
        "By history length",
        "Users split by the length of the history they are ranked from: `short_history` = at "
        f"most {SHORT_HISTORY} items, `long_history` = more.",
    ),
}
ADHERENCE = f"query_adherence@{ADHERENCE_K}"

logger = logging.getLogger(__name__)
Segments = dict[str, set[str]]  # segment name -> the user ids in it


def write_csv(results: list[RunResult], path: Path) -> None:
    """One row per (run, seed) with every metric and diagnostic."""
    metric_keys = sorted({k for r in results for k in r.metrics})
    diag_keys = sorted({k for r in results for k in r.diagnostics})
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["run", "seed", "train_seconds", *metric_keys, *diag_keys])
        for r in results:
            writer.writerow(
                [r.name, r.seed, f"{r.train_seconds:.1f}"]
                + [_fmt(r.metrics.get(k)) for k in metric_keys]
                + [_fmt(r.diagnostics.get(k)) for k in diag_keys]
            )


def paired_delta(
    baseline: list[RunResult],
    candidate: list[RunResult],
    metric: str,
    resamples: int,
    seed: int = 0,
    cold_only: bool = False,
    users: set[str] | None = None,
) -> tuple[float, tuple[float, float]]:
    """Mean per-user difference candidate - baseline over matched (seed, user) pairs, 95% CI.

    `cold_only`: on the new-item segment (cold-target users ranked among the cold items alone)
    instead of the full-catalog ranks; seeds without cold-only ranks on both sides are skipped.
    `users`: only these users (a segment); NaN when none of them is paired."""

    def ranks(r: RunResult) -> tuple[list[str], TargetRanks | None]:
        return (r.cold_only_user_ids, r.cold_only_ranks) if cold_only else (r.user_ids, r.ranks)

    by_seed = {r.seed: r for r in baseline}
    diffs = []
    for cand in candidate:
        base = by_seed.get(cand.seed)
        if base is None:
            continue
        (base_users, base_ranks), (cand_users, cand_ranks) = ranks(base), ranks(cand)
        if users is not None and cand_ranks is not None:
            keep = np.array([i for i, u in enumerate(cand_users) if u in users], dtype=np.int64)
            cand_users, cand_ranks = [cand_users[i] for i in keep], cand_ranks.subset(keep)
        if base_ranks is not None and cand_ranks is not None:
            diffs.append(
                per_user_differences(base_users, base_ranks, cand_users, cand_ranks, metric)
            )
    diff = np.concatenate(diffs) if diffs else np.zeros(0)
    if len(diff) == 0:
        return float("nan"), (float("nan"), float("nan"))
    paired = paired_bootstrap(diff, metric, resamples, seed)
    return paired.difference, paired.ci


def results_markdown(
    grid: GridConfig,
    results: list[RunResult],
    segments: dict[Path, Segments] | None = None,
    tasks: dict[str, Task] | None = None,
) -> str:
    """Mean ± std over seeds per run, paired Δ vs the baseline, and the collapse diagnostics;
    with `segments` (per dataset, see `target_segments`) also the paired Δ by target segment.
    `tasks` (`runner.grid_tasks`; null = every run is a recommendation run): search runs get a
    table of their own, with query adherence, and are never set beside recommendation runs."""
    tasks = tasks or {}
    by_run: dict[str, list[RunResult]] = defaultdict(list)
    for r in results:
        by_run[r.name].append(r)
    diag_cols = [c for c in DIAGNOSTIC_COLUMNS if any(c in r.diagnostics for r in results)]
    rec = [s for s in grid.runs if tasks.get(s.name, "rec") == "rec" and by_run.get(s.name)]
    search = [s for s in grid.runs if tasks.get(s.name) == "search" and by_run.get(s.name)]
    lines = [
        f"# {grid.name}",
        "",
        f"Data `{grid.data}`, split `{grid.split}`, full ranking over the catalog with history "
        f"items masked; seeds {grid.seeds} (mean ± std over seeds). Δ is the paired per-user "
        "difference (bootstrap 95% CI over users and seeds); a CI excluding 0 is significant. "
        "Diagnostics: last-layer sink mass and barcode score of the readout attention (LLM runs), "
        "category micro-F1 and macro AUC (chance 0.5), the title probe's AUC (is a held-out title "
        "likelier under its own user's vector than under other users'? chance 0.5), and the "
        "centered text-feature cosine (chance 0) and retrieval AUC (chance 0.5) of the user "
        "vectors on held-out users. Steps: optimizer steps trained (item-text warm-up + joint). "
        f"tail_share@{EXPOSURE_K} and coverage@{EXPOSURE_K} (where every seed of a run has them): the "
        f"share of each user's top {EXPOSURE_K} that is long-tail (outside the {HEAD_PERCENT} % "
        f"most-clicked items) and the share of the catalog found in any user's top {EXPOSURE_K}.",
    ]
    if rec:
        note = training_note(grid, by_run, rec)
        lines += ["", *([note, ""] if note else []), *_run_table(grid, rec, by_run, diag_cols)]
    if search:
        lines += ["", *search_caption(grid, by_run, rec, search)]
        lines += _run_table(grid, search, by_run, diag_cols, adherence=True)
    tables = seed_markdown(grid, by_run) + cold_only_markdown(grid, by_run)
    if segments:
        tables += segment_markdown(grid, by_run, segments)
        tables += segment_markdown(grid, by_run, segments, HISTORY_SEGMENTS)
    return "\n".join(lines) + "\n" + tables


def _run_table(
    grid: GridConfig,
    specs: list[RunSpec],
    by_run: dict[str, list[RunResult]],
    diag_cols: list[str],
    adherence: bool = False,
) -> list[str]:
    """One row per run of `specs`: metrics, paired Δ against its baseline, diagnostics, steps."""
    per_run = adherence or any(s.baseline is not None or s.data is not None for s in specs)
    shown = [  # after TABLE_METRICS, where a run has them
        m for m in EXPOSURE_METRICS if any(m in r.metrics for s in specs for r in by_run[s.name])
    ]
    metrics = [*TABLE_METRICS, *shown]
    header = ["run", "data", "baseline", *metrics] if per_run else ["run", *metrics]
    if adherence:
        header.append(f"query adherence@{ADHERENCE_K}")
    against = "its baseline" if per_run else grid.baseline_name
    header += [f"Δ{m} vs {against} [95% CI]" for m in PAIRED_METRICS]
    header += [*diag_cols, "steps", "train min"]
    lines = _table_head(header)
    for spec in specs:
        runs = by_run[spec.name]
        base_name = grid.baseline_of(spec)
        baseline = by_run.get(base_name, [])
        cells = [spec.name, f"`{grid.data_of(spec)}`", base_name] if per_run else [spec.name]
        for m in TABLE_METRICS:
            cells.append(_mean_std([r.metrics.get(m) for r in runs]))
        for m in shown:  # over all seeds or not at all: a mean over some seeds would mislead
            every = all(m in r.metrics for r in runs)
            cells.append(_mean_std([r.metrics[m] for r in runs], digits=3) if every else "–")
        if adherence:
            cells.append(_mean_std([r.metrics.get(ADHERENCE) for r in runs], digits=3))
        for m in PAIRED_METRICS:
            same = spec.name == base_name
            cells.append("" if same else _delta_cell(baseline, runs, m, grid.bootstrap))
        for c in diag_cols:
            cells.append(_mean_std([r.diagnostics.get(c) for r in runs], digits=3))
        cells.append(steps_cell(runs))
        cells.append(f"{np.mean([r.train_seconds for r in runs]) / 60:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def steps_cell(runs: list[RunResult]) -> str:
    """Optimizer steps of a run's seeds, `warm-up + joint` ("50 + 450"); "–" where none were
    recorded; distinct counts over seeds joined by " / "."""
    counts = []
    for r in runs:
        cell = " + ".join(str(n) for n in r.train_steps.values()) if r.train_steps else "–"
        if cell not in counts:
            counts.append(cell)
    return " / ".join(counts)


def training_note(
    grid: GridConfig, by_run: dict[str, list[RunResult]], specs: list[RunSpec]
) -> str:
    """One sentence on whether the LLM runs of `specs` trained as long as the LLM baselines they
    are compared with (joint-stage optimizer steps, seed by seed); empty without such a pair."""
    unequal, equal = [], []
    for spec in specs:
        base = grid.baseline_of(spec)
        base_spec = next(s for s in grid.runs if s.name == base)
        if base == spec.name or spec.kind != "karma" or base_spec.kind != "karma":
            continue
        base_steps = {r.seed: r.train_steps.get("joint") for r in by_run.get(base, [])}
        for r in by_run[spec.name]:
            theirs, ours = base_steps.get(r.seed), r.train_steps.get("joint")
            if theirs is None or ours is None:
                continue
            (equal if theirs == ours else unequal).append((spec.name, ours, base, theirs, r.seed))
    if unequal:
        listed = "; ".join(
            f"{name} {ours} vs {base} {theirs} (seed {seed})"
            for name, ours, base, theirs, seed in unequal
        )
        return (
            f"**Unequal training** (joint-stage optimizer steps): {listed}. Their Δ mixes the "
            "method with the amount of training."
        )
    if equal:
        steps = sorted({ours for _, ours, _, _, _ in equal})
        return (
            "The LLM runs compared here trained for equal optimizer steps "
            f"({' / '.join(str(s) for s in steps)} joint steps each, fixed, no time budget cut "
            "them; KARMA's item-text warm-up comes before, column steps)."
        )
    return ""


def search_caption(
    grid: GridConfig,
    by_run: dict[str, list[RunResult]],
    rec: list[RunSpec],
    search: list[RunSpec],
) -> list[str]:
    """The search table's heading and caption, with the query-blind rankings' adherence on the
    same users for comparison (recommendation runs never read the query)."""
    blind = [
        f"{s.name} {_mean_std([r.metrics.get(ADHERENCE) for r in by_run[s.name]], digits=3)}"
        for s in rec
        if any(ADHERENCE in r.metrics for r in by_run[s.name])
    ]
    lines = [
        "## Personalized search: the model reads the query",
        "",
        "Search-mode runs rank the catalog for the target's query (ml-100k's synthetic queries are "
        "the target's genre words) and are compared only with search-mode runs: a search-mode twin, "
        "or the query-only floor (`kind: query-floor`: items ranked by how many query words their "
        "genres contain, ties by training popularity). Query adherence: the share of each user's "
        "top 10 whose genres contain a query word.",
    ]
    if blind:
        lines[-1] += (
            " Query-blind rankings on the same users (the recommendation runs above, which never "
            f"see the query): {', '.join(blind)}."
        )
    note = training_note(grid, by_run, search)
    return [*lines, *(["", note] if note else []), ""]


def history_segments(dataset: PreparedDataset, split: Split) -> Segments:
    """The users of `split` by the length of the history they are ranked from: `short_history`
    (at most `SHORT_HISTORY` items, as `karma.eval.evaluate`'s segment) and `long_history`."""
    examples = dataset.examples(split)
    out: Segments = {name: set() for name in HISTORY_SEGMENTS}
    for user, history in zip(examples.user_ids, examples.histories):
        out["short_history" if len(history) <= SHORT_HISTORY else "long_history"].add(str(user))
    return out


def target_segments(dataset: PreparedDataset, split: Split) -> Segments:
    """The users of `split` by their target's training clicks: `head` (a target among the 20 %
    most-clicked items, as `karma.eval.evaluate`'s long-tail cut), `long_tail` (clicked, but not
    in the head) and `new` (never clicked in training: a new item, or one only seen outside it)."""
    examples = dataset.examples(split)
    counts = dataset.train_item_counts()
    tail = long_tail_items(counts, LONG_TAIL_FRACTION)
    out: Segments = {name: set() for name in TARGET_SEGMENTS}
    for user, target in zip(examples.user_ids, examples.targets):
        clicks = counts[int(target)]
        name = "new" if clicks == 0 else "long_tail" if tail[int(target)] else "head"
        out[name].add(str(user))
    return out


def segment_markdown(
    grid: GridConfig,
    by_run: dict[str, list[RunResult]],
    segments: dict[Path, Segments],
    names: tuple[str, ...] = TARGET_SEGMENTS,
) -> str:
    """Each run's paired Δ against its baseline within each segment of `names` (users pooled
    over seeds): the target segments (`target_segments`) or the history-length ones
    (`history_segments`), titled by `SEGMENT_TABLES`. Empty when no run has a baseline of its own
    to compare with, and a history table also when every user falls in one segment (it would
    repeat the main table)."""
    rows = [
        s
        for s in grid.runs
        if s.name != grid.baseline_of(s) and by_run.get(s.name) and by_run.get(grid.baseline_of(s))
    ]
    used = [
        name for name in names if any(segments.get(grid.data_of(s), {}).get(name) for s in rows)
    ]
    if not rows or not used or (names == HISTORY_SEGMENTS and len(used) < len(names)):
        return ""
    header = ["run", "baseline"]
    for name in used:
        header += [f"{name} users"] + [f"{name} Δ{m} [95% CI]" for m in PAIRED_METRICS]
    title, split_by = SEGMENT_TABLES[names]
    lines = [
        "",
        f"## {title}",
        "",
        f"{split_by} Δ is paired per user against the run's baseline over the full catalog, "
        "pooled over seeds (users counted once per seed). A breakdown, not a pre-registered "
        "test: read a segment's CI with the number of segments in mind.",
        "",
        *_table_head(header),
    ]
    for spec in rows:
        runs, baseline = by_run[spec.name], by_run[grid.baseline_of(spec)]
        of_data = segments.get(grid.data_of(spec), {})
        cells = [spec.name, grid.baseline_of(spec)]
        base_users = {r.seed: set(r.user_ids) for r in baseline}
        for name in used:
            users = of_data.get(name, set())
            paired = sum(  # the (seed, user) pairs the Δ is over: both sides have the seed
                len(users.intersection(r.user_ids, base_users[r.seed]))
                for r in runs
                if r.seed in base_users
            )
            cells.append(str(paired))
            for m in PAIRED_METRICS:
                cells.append(_delta_cell(baseline, runs, m, grid.bootstrap, users=users))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def seed_markdown(grid: GridConfig, by_run: dict[str, list[RunResult]]) -> str:
    """Each run's paired Δ against its baseline seed by seed: does a pooled difference hold on
    every seed, or does one seed carry it? Empty unless some run shares two or more seeds with its
    baseline (one seed would repeat the main table)."""

    def seeds_of(name: str) -> set[int]:
        return {r.seed for r in by_run.get(name, [])}

    shared = {  # run -> the seeds it shares with its baseline, where there are two or more
        s.name: both
        for s in grid.runs
        if s.name != grid.baseline_of(s)
        and len(both := seeds_of(s.name) & seeds_of(grid.baseline_of(s))) > 1
    }
    rows = [s for s in grid.runs if s.name in shared]
    if not rows:
        return ""
    seeds = sorted(set().union(*shared.values()))
    header = ["run", "baseline"]
    header += [f"seed {seed} Δ{m} [95% CI]" for seed in seeds for m in PAIRED_METRICS]
    lines = [
        "",
        "## By seed: does the difference replicate?",
        "",
        "Δ paired per user against the run's baseline within each seed alone (the main table "
        "pools the seeds); empty where one of the two lacks the seed.",
        "",
        *_table_head(header),
    ]
    for spec in rows:
        base_name = grid.baseline_of(spec)
        cells = [spec.name, base_name]
        for seed in seeds:
            runs = [r for r in by_run[spec.name] if r.seed == seed]
            baseline = [r for r in by_run[base_name] if r.seed == seed]
            for m in PAIRED_METRICS:
                cells.append(_delta_cell(baseline, runs, m, grid.bootstrap))  # "" if one lacks it
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def cold_only_markdown(grid: GridConfig, by_run: dict[str, list[RunResult]]) -> str:
    """New-item splits: the cold-target users ranked among the cold items alone, per run (mean ±
    std over seeds) with the paired Δ against its baseline; empty when no run has such ranks."""
    rows = [
        s for s in grid.runs if any(r.cold_only_ranks is not None for r in by_run.get(s.name, []))
    ]
    if not rows:
        return ""
    header = ["run", "baseline", "users", *COLD_ONLY_METRICS]
    header += [f"Δ{m} vs its baseline [95% CI]" for m in COLD_ONLY_METRICS]
    lines = [
        "",
        "## New items: cold-target users ranked among the cold items alone",
        "",
        "Users whose target is a new (cold) item, ranked among the cold items only (a model "
        "that scores them all alike gets HR@K = K / number of cold items); Δ paired per user "
        "over the seeds where both runs have these ranks.",
        "",
        *_table_head(header),
    ]
    for spec in rows:
        runs = [r for r in by_run.get(spec.name, []) if r.cold_only_ranks is not None]
        base_name = grid.baseline_of(spec)
        users = sorted({len(r.cold_only_user_ids) for r in runs})
        cells = [spec.name, base_name, "/".join(str(u) for u in users)]
        for m in COLD_ONLY_METRICS:
            cells.append(_mean_std([_cold_only_metric(r, m) for r in runs]))
        baseline = by_run.get(base_name, [])
        for m in COLD_ONLY_METRICS:
            same = spec.name == base_name
            cells.append("" if same else _delta_cell(baseline, runs, m, grid.bootstrap, True))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _table_head(header: list[str]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]


def excludes_zero(ci: tuple[float, float]) -> bool:
    """A difference is significant when its 95% CI lies wholly on one side of 0."""
    return ci[0] > 0 or ci[1] < 0


def _delta_cell(
    baseline: list[RunResult],
    runs: list[RunResult],
    metric: str,
    resamples: int,
    cold_only: bool = False,
    users: set[str] | None = None,
) -> str:
    """`Δ [lo, hi]` of `paired_delta`, starred when the CI excludes 0; empty without a baseline
    (or, within a segment, without a paired user)."""
    if not baseline:
        return ""
    delta, (lo, hi) = paired_delta(
        baseline, runs, metric, resamples, cold_only=cold_only, users=users
    )
    if np.isnan(delta):
        return ""
    mark = " *" if excludes_zero((lo, hi)) else ""
    return f"{delta:+.4f} [{lo:+.4f}, {hi:+.4f}]{mark}"


def _cold_only_metric(result: RunResult, metric: str) -> float:
    assert result.cold_only_ranks is not None
    k = int(metric.split("@")[1])
    return float(per_user_metrics(result.cold_only_ranks, [k])[metric].mean())


def plot_recall_curves(grid: GridConfig, results: list[RunResult], path: Path) -> None:
    """HR@K against K (log scale), mean over seeds, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for spec in grid.runs:
        runs = [r for r in results if r.name == spec.name]
        if not runs:
            continue
        ks = [k for k in DEFAULT_KS if f"hr@{k}" in runs[0].metrics]
        values = [np.mean([r.metrics[f"hr@{k}"] for r in runs]) for k in ks]
        ax.plot(ks, values, marker="o", label=spec.name)
    ax.set_xscale("log")
    ax.set_xlabel("K")
    ax.set_ylabel(f"HR@K ({grid.split})")
    ax.set_title(f"{grid.name}: recall@K, full ranking")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def gradient_norm_series(records: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """Per-objective gradient norms on the shared parameters (`gradnorm_<term>` of the joint
    stage's train lines, before any control) as {term: (steps, norms)}; empty if not logged."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for record in records:
        if record.get("kind") != "train" or record.get("stage") != "joint":
            continue
        for key, value in record.items():
            if key.startswith("gradnorm_") and not key.endswith("_controlled"):
                steps, values = series.setdefault(key.removeprefix("gradnorm_"), ([], []))
                steps.append(int(record["step"]))
                values.append(float(value))
    return series


TERM_STYLES = {"action": "-", "generation": "--", "reconstruction": "-.", "flow": ":"}
"""Line style of each objective's gradient norm in the training-curves figure (others: dashed)."""


def term_style(term: str) -> str:
    """The line style `plot_training_curves` draws a term's gradient norm with."""
    return TERM_STYLES.get(term, "--")


def _term_order(term: str) -> tuple[int, str]:
    return (list(TERM_STYLES).index(term) if term in TERM_STYLES else len(TERM_STYLES), term)


def plot_training_curves(grid: GridConfig, path: Path) -> bool:
    """Training loss and validation NDCG@10 against step (first seed of each trained run), plus
    the per-objective gradient norms on the shared parameters when the runs logged them
    (`knowledge.log_grad_norms`) in each run's colour, one line style per term (`TERM_STYLES`);
    that panel's legend names the terms only, the loss panel's names the runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    logs = {}
    for spec in grid.runs:
        log = grid.run_dir(spec, grid.seeds[0]) / "log.jsonl"
        if log.is_file():
            logs[spec.name] = _read_log(log)
    norms = {name: gradient_norm_series(records) for name, records in logs.items()}
    with_norms = any(norms.values())
    fig, axes = plt.subplots(1, 3 if with_norms else 2, figsize=(16 if with_norms else 11, 4))
    ax_loss, ax_valid = axes[0], axes[1]
    drawn = False
    for name, records in logs.items():
        train = [r for r in records if r.get("kind") == "train" and "loss" in r]
        evals = [r for r in records if r.get("kind") == "eval" and "ndcg@10" in r]
        if train:
            (line,) = ax_loss.plot(
                [r["step"] for r in train], [r["loss"] for r in train], label=name
            )
            drawn = True
            if norms[name]:
                for term, (steps, values) in norms[name].items():
                    axes[2].plot(
                        steps,
                        values,
                        color=line.get_color(),
                        linestyle=term_style(term),
                        linewidth=1.0,
                    )
        if evals:
            ax_valid.plot(
                [r["step"] for r in evals], [r["ndcg@10"] for r in evals], marker="o", label=name
            )
    if not drawn:
        plt.close(fig)
        return False
    ax_loss.set(xlabel="optimizer step", ylabel="training loss (total)", title="training loss")
    ax_valid.set(xlabel="optimizer step", ylabel="NDCG@10 (valid)", title="validation")
    if with_norms:
        axes[2].set(
            xlabel="optimizer step",
            ylabel="||gradient|| on shared parameters",
            title="per-objective gradient norm (joint)",
            yscale="log",
        )
    for ax in axes[:2]:
        ax.grid(alpha=0.3)
        ax.legend()
    if with_norms:
        terms = sorted({t for series in norms.values() for t in series}, key=_term_order)
        axes[2].grid(alpha=0.3)
        axes[2].legend(
            handles=[
                Line2D([], [], color="black", linestyle=term_style(t), label=t) for t in terms
            ],
            fontsize=8,
            title="term (colour = run)",
            title_fontsize=8,
        )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


@dataclass(frozen=True)
class PairedDelta:
    """One run's paired difference against its baseline (`paired_delta`) on one metric."""

    run: str
    baseline: str
    metric: str
    cold_only: bool
    """True: cold-target users ranked among the new items alone; False: all users, full catalog"""
    difference: float
    ci: tuple[float, float]

    @property
    def significant(self) -> bool:
        return excludes_zero(self.ci)


def paired_deltas(grid: GridConfig, results: list[RunResult]) -> list[PairedDelta]:
    """Every run's paired Δ against its baseline: on `PAIRED_METRICS` over all users and, where
    both runs have cold-only ranks, on `COLD_ONLY_METRICS` among the new items alone (HR@200 among
    a few hundred new items says little). Grid order; baselines and runs without a finished
    baseline are left out."""
    by_run: dict[str, list[RunResult]] = defaultdict(list)
    for r in results:
        by_run[r.name].append(r)
    deltas = []
    for spec in grid.runs:
        base_name = grid.baseline_of(spec)
        runs, baseline = by_run.get(spec.name, []), by_run.get(base_name, [])
        if spec.name == base_name or not runs or not baseline:
            continue
        for cold_only, metrics in ((False, PAIRED_METRICS), (True, COLD_ONLY_METRICS)):
            for metric in metrics:
                diff, ci = paired_delta(baseline, runs, metric, grid.bootstrap, cold_only=cold_only)
                if not np.isnan(diff):
                    deltas.append(PairedDelta(spec.name, base_name, metric, cold_only, diff, ci))
    return deltas


def plot_deltas(title: str, deltas: list[PairedDelta], path: Path) -> bool:
    """Forest plot: one row per run (and per run among new items), one panel per metric (a row
    without that metric stays empty there), the paired Δ against the run's baseline with its 95%
    CI; filled where the CI excludes 0. False (nothing written) without any delta."""
    if not deltas:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rows = list(dict.fromkeys((d.run, d.baseline, d.cold_only) for d in deltas))
    metrics = list(dict.fromkeys(d.metric for d in deltas))
    at = {(d.run, d.baseline, d.cold_only, d.metric): d for d in deltas}
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(5 * len(metrics) + 3, 0.45 * len(rows) + 1.6), squeeze=False
    )
    for ax, metric in zip(axes[0], metrics, strict=True):
        for y, row in enumerate(rows):
            d = at.get((*row, metric))
            if d is not None:
                lo, hi = d.ci
                colour = "tab:grey" if not d.significant else "tab:green" if lo > 0 else "tab:red"
                ax.errorbar(
                    d.difference,
                    y,
                    xerr=[[d.difference - lo], [hi - d.difference]],
                    fmt="o",
                    color=colour,
                    mfc=colour if d.significant else "white",
                    capsize=3,
                )
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set(xlabel=f"Δ{metric} vs baseline (paired, 95% CI)", ylim=(len(rows) - 0.5, -0.5))
        ax.grid(axis="x", alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6))
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(
            [
                f"{run} vs {base}" + (" (among new items)" if cold else "")
                for run, base, cold in rows
            ]
            if ax is axes[0][0]
            else []
        )
    fig.suptitle(f"{title}: paired Δ against the baseline (filled: CI excludes 0)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_report(grid: GridConfig, results: list[RunResult]) -> list[Path]:
    """results.csv, results.md, recall_at_k.png, deltas.png (paired Δ against the baselines)
    and training_curves.png in the grid's report dir."""
    out = grid.report_dir or grid.output_dir
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.csv", out / "results.md", out / "recall_at_k.png"]
    write_csv(results, written[0])
    segments = _segments_of(grid, {r.name for r in results})
    markdown = results_markdown(grid, results, segments, grid_tasks(grid))
    written[1].write_text(markdown, encoding="utf-8")
    plot_recall_curves(grid, results, written[2])
    if plot_deltas(grid.name, paired_deltas(grid, results), out / "deltas.png"):
        written.append(out / "deltas.png")
    if plot_training_curves(grid, out / "training_curves.png"):
        written.append(out / "training_curves.png")
    return written


def _segments_of(grid: GridConfig, names: set[str]) -> dict[Path, Segments]:
    """`target_segments` and `history_segments` of each dataset the reported runs use (a dataset
    that cannot be opened any more is left out of the segment tables, with a warning)."""
    out: dict[Path, Segments] = {}
    for spec in grid.runs:
        data = grid.data_of(spec)
        if spec.name not in names or data in out:
            continue
        try:
            dataset = PreparedDataset(data)
            out[data] = {
                **target_segments(dataset, grid.split),
                **history_segments(dataset, grid.split),
            }
        except KarmaError as error:
            logger.warning("no user segments for %s: %s", data, error)
    return out


def _mean_std(values: list[float | None], digits: int = 4) -> str:
    present = [v for v in values if v is not None and not np.isnan(v)]
    if not present:
        return "–"
    if len(present) == 1:
        return f"{present[0]:.{digits}f}"
    return f"{np.mean(present):.{digits}f} ± {np.std(present, ddof=1):.{digits}f}"


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"
