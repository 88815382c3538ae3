"""Which retriever a run directory holds: `run_dir/run.json` = {"kind": ..., "data": ...}.

- `popularity`: `popularity.json` (training counts);
- `sasrec`: `sasrec.yaml` + `sasrec.safetensors`, and `num_items` in run.json;
- `frozen`: no weights; `feature` (a `ds.features` name), `decay` and `max_history` in run.json,
  the item matrix is re-read from the dataset;
- `karma`: delegated to `karma.train.runs.load_retriever(run_dir)` (the KARMA run format is
  owned by the training package).

`data` is the prepared dataset the run was trained on; `karma evaluate` uses it unless `--data`
overrides it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from karma.errors import KarmaError
from karma.eval.retriever import Retriever

RUN_FILE = "run.json"
KINDS = ("popularity", "sasrec", "frozen", "karma")


def write_run_info(run_dir: str | Path, kind: str, data: str | Path, **extra: Any) -> Path:
    """Create `run_dir/run.json` describing a saved retriever."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    path = Path(run_dir) / RUN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"kind": kind, "data": str(Path(data).resolve()), **extra}
    path.write_text(json.dumps(info, indent=2), encoding="utf-8")
    return path


def read_run_info(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise KarmaError(
            f"{run_dir} is not a run directory (no {RUN_FILE}); create one with "
            "`karma train` or `karma baseline popularity|sasrec --data DIR --out RUN_DIR`"
        )
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise KarmaError(f"{path}: not valid JSON ({exc})") from None
    if info.get("kind") not in KINDS:
        raise KarmaError(
            f"{path}: kind must be one of {', '.join(KINDS)}, got {info.get('kind')!r}"
        )
    return info


def load_retriever(run_dir: str | Path, data: str | Path | None = None) -> Retriever:
    """The retriever saved in `run_dir`, dispatching on run.json's `kind`.

    `data` overrides run.json's dataset (only the `frozen` kind reads it).
    """
    info = read_run_info(run_dir)
    kind = info["kind"]
    if kind == "frozen":
        from karma.baselines.frozen_llm import FrozenEmbeddingRetriever
        from karma.data.dataset import PreparedDataset

        return FrozenEmbeddingRetriever.from_features(
            PreparedDataset(data or info["data"]),
            info.get("feature"),
            decay=float(info.get("decay", 1.0)),
            max_history=int(info.get("max_history", 50)),
        )
    if kind == "popularity":
        from karma.baselines.popularity import PopularityRetriever

        return PopularityRetriever.load(run_dir)
    if kind == "sasrec":
        from karma.baselines.sasrec import SASRecRetriever

        if "num_items" not in info:
            raise KarmaError(f"{Path(run_dir) / RUN_FILE}: a sasrec run needs num_items")
        return SASRecRetriever.load(run_dir, int(info["num_items"]))
    from karma.train.runs import load_retriever as load_karma_retriever

    return load_karma_retriever(run_dir, data)
