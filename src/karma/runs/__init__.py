"""karma.runs: the run layer, the only code that reads or writes run directories.

- `layout`: the directory format (`run.json` = `RunInfo`, `run_config.yaml`, `best/`), `open_run`;
- `base`: the `Recipe` protocol (`train`, `load_retriever`, `load_encoder`) and `TrainedEncoder`;
- `recipes/`: one recipe per kind (karma, sasrec, popularity, frozen, query-floor);
- `registry`: kind -> recipe, `load_retriever`, `load_encoder`, `train_run`.

Evaluation, diagnostics, experiments, the demo and export load runs only through this package.
"""

from karma.runs.base import Recipe, Task, TrainedEncoder
from karma.runs.layout import Run, RunInfo, open_run
from karma.runs.registry import KINDS, RECIPES, load_encoder, load_retriever, recipe_for, train_run

__all__ = [
    "KINDS",
    "RECIPES",
    "Recipe",
    "Run",
    "RunInfo",
    "Task",
    "TrainedEncoder",
    "load_encoder",
    "load_retriever",
    "open_run",
    "recipe_for",
    "train_run",
]
