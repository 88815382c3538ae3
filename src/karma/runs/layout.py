"""The run directory: the one module that reads and writes its files.

    run_dir/run.json          what the run is (`RunInfo`): kind, dataset, status, best step, options
    run_dir/run_config.yaml   the resolved config of the run's recipe (karma: RunConfig; sasrec:
                              SASRecConfig; frozen: FrozenConfig); absent for popularity
    run_dir/log.jsonl, tb/    training logs (karma.train.run_log)
    run_dir/checkpoints/      resumable checkpoints (karma.train.checkpoint)
    run_dir/best/             best validation weights (model.safetensors + metrics.json)
    run_dir/<kind files>      what a recipe saves besides (popularity.json, sasrec.safetensors, ...)

`run.json` has one schema for every kind, written when training starts (`status: training`) and
completed when it ends (`status: finished`, best step and metric). Recipes (`karma.runs.recipes`)
go through `start_run`, `finish_run` and `Run`; nothing else in karma opens these files.
Older run.json files (`{"kind", "data", **extra}`, no `schema_version`) are still read: their extra
keys become `options`. A directory with `run_config.yaml` and no run.json (a KARMA run written
before run.json existed at training start) reads as a karma run on its config's dataset.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from karma import __version__
from karma.config import load_config, read_yaml, save_config
from karma.data.tables import sha256_of
from karma.errors import KarmaError
from karma.train.checkpoint import MODEL_FILE, latest_checkpoint

RUN_FILE = "run.json"
CONFIG_FILE = "run_config.yaml"
BEST_DIR = "best"
SCHEMA_VERSION = 1
LEGACY_KEYS = {"best_valid": "best_metric"}  # pre-schema run.json keys with a new name

ConfigT = TypeVar("ConfigT")


@dataclass
class RunInfo:
    """The content of `run.json` (the same fields for every kind)."""

    kind: str
    """the recipe that trained the run (karma, sasrec, popularity, frozen)"""
    data: str
    """absolute path of the prepared dataset the run was trained on"""
    status: Literal["training", "finished"] = "training"
    """training while the recipe runs; finished once its weights are final"""
    created: str = ""
    """UTC time training started (ISO 8601)"""
    karma_version: str = __version__
    """karma version that wrote the run"""
    best_step: int | None = None
    """optimizer step of the best validation (recipes trained by the Trainer)"""
    best_metric: float | None = None
    """the early-stopping metric at best_step"""
    train_seconds: float | None = None
    """wall-clock seconds of training, summed over the sessions of a resumed run (recipes trained
    by the Trainer; null = not recorded)"""
    train_steps: dict[str, int] | None = None
    """optimizer steps trained per stage, e.g. {"warmup": 50, "joint": 450} (recipes trained by
    the Trainer; null = not recorded): what reports compare training amounts by"""
    options: dict[str, Any] = field(default_factory=dict)
    """what the recipe needs to rebuild its retriever (e.g. num_items, feature, decay)"""
    schema_version: int = SCHEMA_VERSION
    """version of this schema"""

    @classmethod
    def from_json(cls, data: dict[str, Any], where: Path) -> RunInfo:
        if not isinstance(data, dict) or "kind" not in data or "data" not in data:
            raise KarmaError(f"{where}: run.json needs at least a kind and a data path")
        if "schema_version" not in data:  # written before the schema: extra keys are options
            core = {"kind", "data", "best_step", *LEGACY_KEYS}
            info = cls(kind=str(data["kind"]), data=str(data["data"]), status="finished")
            info.best_step = data.get("best_step")
            info.best_metric = data.get("best_valid")
            info.options = {k: v for k, v in data.items() if k not in core}
            return info
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise KarmaError(f"{where}: unknown run.json keys {unknown} (newer karma version?)")
        return cls(**data)


class Run:
    """A run directory on disk: its `RunInfo` and the paths of its files."""

    def __init__(self, path: Path, info: RunInfo) -> None:
        self.path = Path(path)
        self.info = info

    @property
    def name(self) -> str:
        return self.path.resolve().name

    @property
    def kind(self) -> str:
        return self.info.kind

    @property
    def data(self) -> Path:
        return Path(self.info.data)

    @property
    def options(self) -> dict[str, Any]:
        return self.info.options

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    def read_config(self, cls: type[ConfigT]) -> ConfigT:
        """The run's resolved config as `cls`."""
        if not self.config_path.is_file():
            raise KarmaError(f"{self.path} has no {CONFIG_FILE}; was it trained by karma?")
        return load_config(cls, self.config_path)

    def best_weights(self) -> Path:
        """`best/` if the run validated at least once, else its latest checkpoint."""
        if (self.path / BEST_DIR / MODEL_FILE).is_file():
            return self.path / BEST_DIR
        latest = latest_checkpoint(self.path)
        if latest is None:
            raise KarmaError(f"{self.path} has no best/ model and no checkpoint; train it first")
        return latest

    def file(self, name: str) -> Path:
        """A recipe's own file in the run directory (e.g. popularity.json)."""
        return self.path / name

    def config_hash(self) -> str | None:
        return sha256_of(self.config_path) if self.config_path.is_file() else None


def open_run(run_dir: str | Path) -> Run:
    """The run in `run_dir` (see the module docstring for old layouts)."""
    run_dir = Path(run_dir)
    path = run_dir / RUN_FILE
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise KarmaError(f"{path}: not valid JSON ({exc})") from None
        return Run(run_dir, RunInfo.from_json(data, path))
    if (run_dir / CONFIG_FILE).is_file():
        config = read_yaml(run_dir / CONFIG_FILE)
        data_path = (config.get("data") or {}).get("path", "")
        return Run(run_dir, RunInfo(kind="karma", data=str(Path(data_path).resolve())))
    missing = "it does not exist" if not run_dir.is_dir() else f"no {RUN_FILE}"
    raise KarmaError(
        f"{run_dir} is not a run directory ({missing}); create one with "
        "`karma train` or `karma baseline popularity|sasrec|frozen --data DIR --out RUN_DIR`"
    )


def start_run(
    run_dir: str | Path,
    kind: str,
    data: str | Path,
    config: Any | None = None,
    options: dict[str, Any] | None = None,
) -> Run:
    """Create (or restart) `run_dir`: the resolved config and run.json with `status: training`.

    A resumed run keeps the time it was first created.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    created = datetime.now(UTC).isoformat(timespec="seconds")
    if (run_dir / RUN_FILE).is_file():
        with contextlib.suppress(KarmaError):  # an unreadable run.json is replaced
            created = open_run(run_dir).info.created or created
    if config is not None:
        save_config(config, run_dir / CONFIG_FILE)
    info = RunInfo(
        kind=kind, data=str(Path(data).resolve()), created=created, options=dict(options or {})
    )
    run = Run(run_dir, info)
    write_info(run)
    return run


def finish_run(
    run: Run,
    best_step: int | None = None,
    best_metric: float | None = None,
    train_seconds: float | None = None,
    train_steps: dict[str, int] | None = None,
    **options: Any,
) -> Run:
    """Mark the run finished, recording its best step and metric, its training time and steps per
    stage (and any new options)."""
    run.info.status = "finished"
    run.info.best_step = best_step
    run.info.best_metric = best_metric
    run.info.train_seconds = train_seconds
    run.info.train_steps = train_steps
    run.info.options.update(options)
    write_info(run)
    return run


def write_info(run: Run) -> Path:
    path = run.path / RUN_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(run.info), indent=2), encoding="utf-8")
    tmp.replace(path)
    return path
