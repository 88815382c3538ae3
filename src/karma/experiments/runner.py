"""Run a grid: train each (run, seed) that is not finished, evaluate it, measure its diagnostics.

A finished run leaves `result.json` (metrics, per-user ranks, diagnostics) in its directory; a
re-run of the grid loads it instead of training again, and a half-trained run resumes from its
last checkpoint. So `karma experiment GRID.yaml` can be interrupted and started again at will.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from karma.config import load_config
from karma.data.dataset import PreparedDataset
from karma.diagnostics.commands import LoadedRun, diagnose_run, sample_examples, write_report
from karma.errors import ConfigError, KarmaError
from karma.eval.cold import flat_cold_metrics
from karma.eval.evaluate import EvalResult, evaluate
from karma.eval.exposure import EXPOSURE_METRICS
from karma.eval.metrics import TargetRanks
from karma.eval.retriever import Retriever
from karma.experiments.grid import RESULT_FILE, GridConfig, RunSpec
from karma.runs import Task, load_retriever, open_run, recipe_for
from karma.train.checkpoint import delete_checkpoints
from karma.train.lock import RunDirInUse, RunDirLock

logger = logging.getLogger(__name__)
DIAGNOSTICS_VERSION = 2
"""Bumped when a probe changes meaning (2: the title probe's retrieval AUC replaced its token
accuracy); a finished result with an older version is diagnosed again from its saved model."""


@dataclass
class RunResult:
    """One (run, seed): its metrics, per-user ranks (for paired tests) and diagnostics."""

    name: str
    seed: int
    metrics: dict[str, float]
    user_ids: list[str]
    ranks: TargetRanks
    diagnostics: dict[str, float] = field(default_factory=dict)
    train_seconds: float = 0.0
    cold_only_user_ids: list[str] = field(default_factory=list)
    cold_only_ranks: TargetRanks | None = None
    """New-item splits: the cold-target users' ranks among the cold items alone (paired tests)."""
    diagnostics_version: int = DIAGNOSTICS_VERSION
    train_steps: dict[str, int] = field(default_factory=dict)
    """Optimizer steps per training stage ({"warmup": 50, "joint": 450}; empty: not trained by
    the Trainer, or not recorded)."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "seed": self.seed,
            "metrics": self.metrics,
            "diagnostics": self.diagnostics,
            "diagnostics_version": self.diagnostics_version,
            "train_seconds": self.train_seconds,
            "train_steps": self.train_steps,
            "per_user": _ranks_to_dict(self.user_ids, self.ranks),
        }
        if self.cold_only_ranks is not None:
            out["cold_only_per_user"] = _ranks_to_dict(
                self.cold_only_user_ids, self.cold_only_ranks
            )
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        per_user = data["per_user"]
        cold = data.get("cold_only_per_user")
        return cls(
            name=data["name"],
            seed=int(data["seed"]),
            metrics={k: float(v) for k, v in data["metrics"].items() if v is not None},
            user_ids=list(per_user["user_id"]),
            ranks=_ranks_from_dict(per_user),
            diagnostics={k: float(v) for k, v in data.get("diagnostics", {}).items()},
            train_seconds=float(data.get("train_seconds", 0.0)),
            cold_only_user_ids=list(cold["user_id"]) if cold else [],
            cold_only_ranks=_ranks_from_dict(cold) if cold else None,
            diagnostics_version=int(data.get("diagnostics_version", 1)),
            train_steps={k: int(v) for k, v in (data.get("train_steps") or {}).items()},
        )


def _ranks_to_dict(user_ids: list[str], ranks: TargetRanks) -> dict[str, list]:
    return {"user_id": user_ids, "greater": ranks.greater.tolist(), "ties": ranks.ties.tolist()}


def _ranks_from_dict(data: dict[str, list]) -> TargetRanks:
    return TargetRanks(np.asarray(data["greater"]), np.asarray(data["ties"]))


def run_grid(grid: GridConfig, progress: bool = True, train: bool = True) -> list[RunResult]:
    """Every run x seed of the grid, training only what is not finished yet. A cell another
    process is training (it holds the cell's `RunDirLock`) is skipped, so several streams can
    share one grid. `train=False`: only the finished cells (a report of the grid so far); the
    others are left out, untouched."""
    grid_tasks(grid)  # a search run compared with a recommendation run stops here, not at the end
    if grid.threads is not None:
        import torch

        torch.set_num_threads(grid.threads)
    datasets: dict[Path, PreparedDataset] = {}
    results = []
    skipped: list[str] = []
    total = len(grid.runs) * len(grid.seeds)
    for n, (seed, spec) in enumerate(((s, r) for s in grid.seeds for r in grid.runs), start=1):
        run_dir = grid.run_dir(spec, seed)
        done = run_dir / RESULT_FILE
        data = grid.data_of(spec)
        if not train and not done.is_file():
            skipped.append(f"{spec.name} seed {seed}")
            continue
        with ExitStack() as held:
            try:  # the trainer takes the same (re-entrant) lock; here it also covers evaluation
                held.enter_context(RunDirLock(run_dir))
            except RunDirInUse as busy:
                logger.warning("[%d/%d] %s seed %d: skipped, %s", n, total, spec.name, seed, busy)
                skipped.append(f"{spec.name} seed {seed}")
                continue
            if done.is_file():
                logger.info(
                    "[%d/%d] %s seed %d: finished earlier, loading %s",
                    n,
                    total,
                    spec.name,
                    seed,
                    done,
                )
                results.append(
                    _load_finished(grid, spec, done, partial(_open, datasets, data), progress)
                )
                continue
            source = _unfinished_source(grid, spec, seed)
            if source is not None:
                logger.warning(
                    "[%d/%d] %s seed %d: skipped, it starts from %s seed %d, which has not finished",
                    n,
                    total,
                    spec.name,
                    seed,
                    source,
                    seed,
                )
                skipped.append(f"{spec.name} seed {seed}")
                continue
            logger.info("[%d/%d] %s seed %d -> %s", n, total, spec.name, seed, run_dir)
            result = run_one(grid, spec, seed, _open(datasets, data), progress)
            _write_result(result, done)  # the marker appears only once everything succeeded
            # nothing resumes a finished cell; its best model stays in best/
            if not grid.keep_checkpoints and delete_checkpoints(run_dir):
                logger.info("%s: deleted its checkpoints (keep_checkpoints: false)", run_dir)
            results.append(result)
    if skipped:
        logger.warning(
            "%d cell(s) %s (%s): the report leaves them out; run the same command again once "
            "they finish",
            len(skipped),
            "are not finished" if not train else "were left to other processes",
            ", ".join(skipped),
        )
    return results


def _unfinished_source(grid: GridConfig, spec: RunSpec, seed: int) -> str | None:
    """The run `spec` starts from (`init_from`) when its cell of `seed` has not finished (another
    process holds it, or it failed), else None."""
    source = grid.init_dir(spec, seed)
    return None if source is None or (source / RESULT_FILE).is_file() else spec.init_from


def _load_finished(
    grid: GridConfig,
    spec: RunSpec,
    done: Path,
    dataset_of: Callable[[], PreparedDataset],
    progress: bool,
) -> RunResult:
    """A finished cell's result, brought up to date (and written back) if an older karma wrote it.

    The result takes the name of the grid row it sits under: a cell directory moved to another
    row (e.g. kept under a new name when its row changed) is reported as that row, not pooled
    with the row it was trained as."""
    result = RunResult.from_dict(json.loads(done.read_text(encoding="utf-8")))
    changed = _bring_up_to_date(grid, result, dataset_of, done.parent, progress)
    if result.name != spec.name:
        logger.warning("%s: trained as %r, reported as %r", done, result.name, spec.name)
        result.name, changed = spec.name, True
    if changed:
        _write_result(result, done)
    return result


def _open(datasets: dict[Path, PreparedDataset], data: Path) -> PreparedDataset:
    """The prepared dataset at `data`, opened once per grid run."""
    if data not in datasets:
        datasets[data] = PreparedDataset(data)
    return datasets[data]


def _write_result(result: RunResult, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result.to_dict()), encoding="utf-8")
    tmp.replace(path)


def _bring_up_to_date(
    grid: GridConfig,
    result: RunResult,
    dataset_of: Callable[[], PreparedDataset],
    run_dir: Path,
    progress: bool = True,
) -> bool:
    """Fill in what a result finished by an older karma lacks, from its saved model (loaded once,
    never retrained): cold-only ranks on a new-item split, so the report's paired new-item Δ
    covers every seed, the exposure metrics (`karma.eval.exposure`), and diagnostics of the
    current version. True when `result` changed."""
    stale_cold = result.cold_only_ranks is None and len(dataset_of().cold_items) > 0
    stale_exposure = any(m not in result.metrics for m in EXPOSURE_METRICS)
    stale_diagnostics = grid.diagnostics and result.diagnostics_version < DIAGNOSTICS_VERSION
    if not (stale_cold or stale_exposure or stale_diagnostics):
        return False
    dataset = dataset_of()
    retriever = load_retriever(run_dir, dataset.root, _bar(progress))  # once for all
    if stale_cold or stale_exposure:
        missing = [
            what
            for what, stale in (
                ("cold-only ranks", stale_cold),
                ("exposure metrics", stale_exposure),
            )
            if stale
        ]
        logger.info(
            "%s seed %d: adding its %s (evaluation only)",
            result.name,
            result.seed,
            " and ".join(missing),
        )
        evaluated = evaluate(retriever, dataset, grid.split, bootstrap=0, seed=result.seed)
        if stale_cold:
            result.cold_only_user_ids = evaluated.cold_only_user_ids
            result.cold_only_ranks = evaluated.cold_only_ranks
        result.metrics.update({m: evaluated.metrics[m] for m in EXPOSURE_METRICS})
    if stale_diagnostics:
        logger.info(
            "%s seed %d: diagnostics of version %d, diagnosing again (no training)",
            result.name,
            result.seed,
            result.diagnostics_version,
        )
        result.diagnostics = run_diagnostics(
            grid, retriever, dataset, run_dir, result.seed, progress
        )
        result.diagnostics_version = DIAGNOSTICS_VERSION
    return True


def run_one(
    grid: GridConfig, spec: RunSpec, seed: int, dataset: PreparedDataset, progress: bool = True
) -> RunResult:
    """Train (or build) one retriever, evaluate it on the grid's split, add diagnostics."""
    run_dir = grid.run_dir(spec, seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    retriever = train_retriever(grid, spec, seed, dataset, run_dir, progress)
    seconds = _train_seconds(run_dir, time.monotonic() - start)
    steps = _train_steps(run_dir)
    result = evaluate(retriever, dataset, grid.split, bootstrap=grid.bootstrap, seed=seed)
    (run_dir / "metrics.json").write_text(result.to_json(), encoding="utf-8")
    (run_dir / "metrics.md").write_text(result.to_markdown(), encoding="utf-8")
    diagnostics = (
        run_diagnostics(grid, retriever, dataset, run_dir, seed, progress)
        if grid.diagnostics
        else {}
    )
    out = _run_result(spec.name, seed, result, diagnostics, seconds)
    out.train_steps = steps
    return out


def _bar(progress: bool) -> bool | None:
    """`load_retriever`'s progress setting for the grid's: a bar on a terminal, or never."""
    return None if progress else False


def _train_seconds(run_dir: Path, measured: float) -> float:
    """The run's own training time, summed over the sessions of a resumed run, where its recipe
    recorded it; else `measured` (this process's time, which misses earlier sessions)."""
    try:
        recorded = open_run(run_dir).info.train_seconds
    except KarmaError:  # a kind without a run directory of its own
        return measured
    return measured if recorded is None else float(recorded)


def _train_steps(run_dir: Path) -> dict[str, int]:
    """The run's optimizer steps per stage where its recipe recorded them, else {}."""
    try:
        recorded = open_run(run_dir).info.train_steps
    except KarmaError:
        return {}
    return dict(recorded or {})


def run_task(spec: RunSpec) -> Task:
    """What `spec` ranks for, as its recipe reads its config (a karma run: `data.mode`)."""
    recipe = recipe_for(spec.kind)
    return recipe.task(load_config(recipe.config_type, spec.config, list(spec.overrides)))


def grid_tasks(grid: GridConfig) -> dict[str, Task]:
    """Each run's task by name. A run compared with a baseline of another task is a
    `ConfigError`: a search model read the query, a recommendation model did not, so their paired
    Δ measures the query, not the method."""
    tasks = {spec.name: run_task(spec) for spec in grid.runs}
    for spec in grid.runs:
        base = grid.baseline_of(spec)
        if tasks[base] != tasks[spec.name]:
            raise ConfigError(
                f"runs: {spec.name!r} ranks for {tasks[spec.name]} and its baseline {base!r} for "
                f"{tasks[base]}; give it a `baseline:` of its own task (for search: a search-mode "
                "twin, or a `kind: query-floor` run)"
            )
    return tasks


def _run_result(
    name: str, seed: int, result: EvalResult, diagnostics: dict[str, float], seconds: float
) -> RunResult:
    assert result.ranks is not None
    metrics = {**result.metrics, **flat_cold_metrics(result.cold_items)}  # new-item segments
    return RunResult(
        name,
        seed,
        metrics,
        result.user_ids,
        result.ranks,
        diagnostics,
        seconds,
        result.cold_only_user_ids,
        result.cold_only_ranks,
    )


def train_retriever(
    grid: GridConfig,
    spec: RunSpec,
    seed: int,
    dataset: PreparedDataset,
    run_dir: Path,
    progress: bool = True,
) -> Retriever:
    """The trained retriever of one grid cell (resuming a half-trained run)."""
    recipe = recipe_for(spec.kind)
    overrides = [
        *spec.overrides,
        *([f"feature={spec.feature}"] if spec.feature is not None else []),
        *recipe.run_overrides(seed, progress, grid.threads, grid.time_budget_minutes),
    ]
    if (source := grid.init_dir(spec, seed)) is not None:
        overrides.append(f"train.init_from={source.resolve()}")
    config = load_config(recipe.config_type, spec.config, overrides)
    data = grid.data_of(spec)
    recipe.train(config, run_dir, data, progress=progress)
    return load_retriever(run_dir, data, _bar(progress))


def run_diagnostics(
    grid: GridConfig,
    retriever: Retriever,
    dataset: PreparedDataset,
    run_dir: Path,
    seed: int,
    progress: bool = True,
) -> dict[str, float]:
    """Sink mass and barcode (LLM runs) and semantic fidelity (every run) as flat numbers."""
    all_examples = dataset.examples(grid.split)
    examples = sample_examples(all_examples, grid.diagnostic_users, seed)
    probe_examples = sample_examples(all_examples, grid.probe_users, seed)
    run = LoadedRun(retriever.name, retriever, Path(dataset.root))
    diagnosed = diagnose_run(
        run, dataset, examples, seed=seed, probe_examples=probe_examples, progress=progress
    )
    write_report([diagnosed], run_dir / "diagnostics")
    return flat_diagnostics(diagnosed.summary, diagnosed.fidelity)


def flat_diagnostics(
    summary: dict[str, Any] | None, fidelity: dict[str, dict[str, float]]
) -> dict[str, float]:
    """The table columns: last-layer sink mass and barcode (mean over heads), fidelity scores."""
    out: dict[str, float] = {}
    if summary and summary.get("layers"):
        last = summary["layers"][-1]
        for key in ("sink_mass", "barcode", "history_entropy"):
            value = last.get(key)
            if value is not None:
                out[key] = float(value)
    for probe, key, column in (
        ("category", "micro_f1", "category_f1"),
        ("category", "macro_auc", "category_auc"),
        ("title", "retrieval_auc", "title_auc"),
        ("text_alignment", "cosine", "text_cosine"),
        ("text_alignment", "retrieval_auc", "text_auc"),
    ):
        value = fidelity.get(probe, {}).get(key)
        if value is not None:
            out[column] = float(value)
    return out
