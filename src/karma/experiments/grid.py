"""The experiment grid file: which runs, on which data, with which seeds.

name: ml-100k-ablation
data: data/ml-100k
output_dir: runs/experiments/ml-100k
seeds: [0, 1, 2]
baseline: action-only          # paired significance is computed against this run
runs:
  - {name: popularity, kind: popularity}
  - {name: cold-popularity, kind: popularity, data: data/ml-100k-cold, baseline: cold-popularity}
  - {name: sasrec, kind: sasrec, config: configs/ml-100k/sasrec.yaml}
  - {name: action-only, kind: karma, config: configs/ml-100k/action-only-smollm2.yaml}
  - {name: karma, kind: karma, config: configs/ml-100k/karma-smollm2.yaml}
  - name: +rec
    kind: karma
    config: configs/ml-100k/karma-smollm2.yaml
    overrides: [knowledge.generation_weight=0, knowledge.flow_weight=0]
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from karma.errors import ConfigError

RunKind = Literal["karma", "sasrec", "popularity", "frozen", "query-floor"]
RESULT_FILE = "result.json"
"""A cell's finished result in its run directory; it appears only once the cell is complete."""


@dataclass
class RunSpec:
    """One row of the grid (trained once per seed)."""

    name: str
    """label of the run in tables and figures; also its directory name"""
    kind: RunKind = "karma"
    """karma (a RunConfig), sasrec (a SASRecConfig), popularity, frozen or query-floor (no
    training; query-floor ranks by the query alone, the floor of personalized search)"""
    config: Path | None = None
    """YAML config of a karma or sasrec run"""
    overrides: list[str] = field(default_factory=list)
    """key=value overrides applied on top of the config (e.g. knowledge.flow_weight=0)"""
    feature: str | None = None
    """frozen baseline: the dataset feature matrix pooled over the history (null = the only one)"""
    data: Path | None = None
    """prepared dataset of this run (null = the grid's data), e.g. a cold-item split of the same
    source; the run trains and is evaluated on it"""
    baseline: str | None = None
    """run this one is compared against with the paired bootstrap (null = the grid's baseline);
    it must use the same data"""
    init_from: str | None = None
    """karma runs: an earlier karma run of the grid (on the same data) whose trained model, same
    seed, this one starts from (train.init_from); null = train from the config's initialization"""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"name: must be a non-empty directory name, got {self.name!r}")
        if self.kind in ("karma", "sasrec") and self.config is None:
            raise ValueError(f"config: a {self.kind} run ({self.name}) needs a config file")
        if self.init_from is not None and self.kind != "karma":
            raise ValueError(f"init_from: only a karma run can start from another ({self.name})")


@dataclass
class GridConfig:
    """A grid of runs x seeds evaluated on one prepared dataset."""

    data: Path = Path("data/ml-100k")
    """prepared dataset every run trains and is evaluated on (overrides each config's data path)"""
    runs: list[RunSpec] = field(default_factory=list)
    """the runs to compare"""
    name: str = "experiment"
    """title of the report"""
    output_dir: Path = Path("runs/experiment")
    """where run directories, results.csv, results.md and figures go"""
    report_dir: Path | None = None
    """where results.csv, results.md and the figures go (null = output_dir); grids that share an
    output_dir to reuse finished cells keep their reports apart with it"""
    seeds: list[int] = field(default_factory=lambda: [0])
    """every run is trained once per seed"""
    split: Literal["valid", "test"] = "test"
    """split the table reports (early stopping always uses valid)"""
    baseline: str | None = None
    """run name the others are compared against with a paired bootstrap (null = the first run)"""
    bootstrap: int = 1000
    """bootstrap resamples for confidence intervals and paired differences"""
    diagnostics: bool = True
    """add sink mass, barcode score and semantic fidelity columns"""
    diagnostic_users: int = 200
    """users sampled for the attention diagnostics"""
    probe_users: int = 2000
    """users sampled for the semantic-fidelity probes (at least 500 of them are held out where
    the sample allows)"""
    time_budget_minutes: float | None = None
    """per-run training budget applied to karma runs (train.time_budget_minutes); null = configs decide"""
    threads: int | None = None
    """torch CPU threads (null = torch's default)"""
    keep_checkpoints: bool = False
    """keep a finished cell's resumable checkpoints (run_dir/checkpoints); by default they are
    deleted once its result is written (hundreds of MB per LLM cell; its best model stays in best/,
    which evaluation, diagnostics, export and init_from read)"""

    def __post_init__(self) -> None:
        if not self.runs:
            raise ValueError("runs: the grid has no runs")
        names = [r.name for r in self.runs]
        if len(set(names)) != len(names):
            raise ValueError(f"runs: run names must be unique, got {names}")
        if not self.seeds:
            raise ValueError("seeds: give at least one seed")
        if self.baseline is not None and self.baseline not in names:
            raise ValueError(f"baseline: {self.baseline!r} is not one of the runs {names}")
        by_name = {r.name: r for r in self.runs}
        for spec in self.runs:
            if spec.baseline is not None and spec.baseline not in by_name:
                raise ValueError(
                    f"runs: baseline {spec.baseline!r} of run {spec.name!r} is not one of {names}"
                )
            base = by_name[self.baseline_of(spec)]
            if base is not spec and self.data_of(base) != self.data_of(spec):
                raise ValueError(
                    f"runs: {spec.name!r} ({self.data_of(spec)}) and its baseline {base.name!r} "
                    f"({self.data_of(base)}) use different data; give it a baseline on its data"
                )
        for position, spec in enumerate(self.runs):
            if spec.init_from is None:
                continue
            source = by_name.get(spec.init_from)
            earlier = [r.name for r in self.runs[:position] if r.kind == "karma"]
            if source is None or source.name not in earlier:
                raise ValueError(
                    f"runs: init_from {spec.init_from!r} of run {spec.name!r} must name a karma "
                    f"run listed before it (trained first); candidates: {earlier}"
                )
            if self.data_of(source) != self.data_of(spec):
                raise ValueError(
                    f"runs: {spec.name!r} ({self.data_of(spec)}) cannot start from "
                    f"{source.name!r} ({self.data_of(source)}): they use different data"
                )
        if self.diagnostic_users < 10:
            raise ValueError(f"diagnostic_users: need at least 10, got {self.diagnostic_users}")
        if self.probe_users < 10:
            raise ValueError(f"probe_users: need at least 10, got {self.probe_users}")

    @property
    def baseline_name(self) -> str:
        return self.baseline or self.runs[0].name

    def baseline_of(self, spec: RunSpec) -> str:
        """The run `spec` is compared against: its own baseline, else the grid's."""
        return spec.baseline or self.baseline_name

    def data_of(self, spec: RunSpec) -> Path:
        """The prepared dataset `spec` trains and is evaluated on."""
        return spec.data if spec.data is not None else self.data

    def resolve_configs(self, roots: list[Path]) -> None:
        """Make each relative run `config` path absolute: the first of `roots` it exists under
        (e.g. the current directory, then the karma checkout holding `configs/`)."""
        for spec in self.runs:
            if spec.config is None or spec.config.is_absolute():
                continue
            found = next(
                (root / spec.config for root in roots if (root / spec.config).is_file()), None
            )
            if found is None:
                raise ConfigError(
                    f"runs: config {spec.config} of run {spec.name!r} not found under "
                    + ", ".join(str(r) for r in roots)
                )
            spec.config = found

    def select(self, names: list[str]) -> GridConfig:
        """The grid cut to the runs `names`, the baselines they are compared against (each
        run's `baseline_of`) and the runs they start from (`init_from`), transitively, in the
        grid's order; unknown names are an error."""
        by_name = {r.name: r for r in self.runs}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ConfigError(
                f"--only: no run named {unknown} in the grid; its runs are {list(by_name)}"
            )
        keep: set[str] = set()
        todo = list(names)
        while todo:
            name = todo.pop()
            if name not in keep:
                keep.add(name)
                todo.append(self.baseline_of(by_name[name]))
                if by_name[name].init_from is not None:
                    todo.append(by_name[name].init_from)
        baseline = self.baseline if self.baseline in keep else None
        return replace(self, runs=[r for r in self.runs if r.name in keep], baseline=baseline)

    def run_dir(self, spec: RunSpec, seed: int) -> Path:
        return self.output_dir / spec.name / f"seed{seed}"

    def init_dir(self, spec: RunSpec, seed: int) -> Path | None:
        """The run directory, same seed, of the run `spec` starts from (`init_from`), or None."""
        if spec.init_from is None:
            return None
        source = next(r for r in self.runs if r.name == spec.init_from)
        return self.run_dir(source, seed)
