"""Search-mode runs in the grid report: a table of their own, compared only with search runs;
the training note that says whether compared LLM runs trained as long."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from karma.config import load_config
from karma.errors import ConfigError
from karma.eval.metrics import TargetRanks
from karma.experiments.grid import GridConfig
from karma.experiments.report import results_markdown, steps_cell, training_note
from karma.experiments.runner import RunResult, grid_tasks

TINY = Path(__file__).resolve().parents[2] / "configs" / "debug" / "tiny.yaml"
USERS = ["u0", "u1", "u2", "u3"]


def _grid(tmp_path: Path, search_baseline: str | None = "floor") -> GridConfig:
    baseline = f", baseline: {search_baseline}" if search_baseline else ""
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(
        f"""
name: search report
data: {tmp_path}
baseline: action
bootstrap: 50
runs:
  - {{name: pop, kind: popularity}}
  - {{name: action, kind: karma, config: {TINY}}}
  - {{name: karma, kind: karma, config: {TINY}}}
  - {{name: floor, kind: query-floor, baseline: floor}}
  - {{name: search, kind: karma, config: {TINY}, overrides: [data.mode=search]{baseline}}}
""",
        encoding="utf-8",
    )
    return load_config(GridConfig, grid_file)


def _result(name: str, greater: list[int], steps: dict[str, int], adherence: float) -> RunResult:
    ranks = TargetRanks(np.array(greater), np.zeros(len(greater), dtype=np.int64))
    hr10 = float(np.mean(np.array(greater) < 10))
    metrics = {"hr@10": hr10, "query_adherence@10": adherence}
    return RunResult(name, 0, metrics, list(USERS), ranks, train_steps=steps)


def _results(karma_joint: int = 450) -> list[RunResult]:
    return [
        _result("pop", [50, 50, 50, 50], {}, 0.25),
        _result("action", [0, 50, 50, 50], {"joint": 450}, 0.30),
        _result("karma", [0, 0, 50, 50], {"warmup": 50, "joint": karma_joint}, 0.35),
        _result("floor", [5, 50, 50, 50], {}, 1.0),
        _result("search", [0, 0, 0, 50], {"joint": 300}, 0.9),
    ]


def test_search_runs_get_their_own_table_against_the_floor(tmp_path: Path) -> None:
    grid = _grid(tmp_path)
    tasks = grid_tasks(grid)
    assert tasks == {
        "pop": "rec",
        "action": "rec",
        "karma": "rec",
        "floor": "search",
        "search": "search",
    }
    markdown = results_markdown(grid, _results(), tasks=tasks)
    rec_part, search_part = markdown.split("## Personalized search")
    assert "| karma |" in rec_part and "| search |" not in rec_part and "| floor |" not in rec_part
    assert "equal optimizer steps (450 joint steps each" in rec_part
    # The query-blind runs' adherence is quoted beside the search table, not compared.
    assert "pop 0.250, action 0.300, karma 0.350" in search_part
    rows = {line.split("|")[1].strip(): line for line in search_part.splitlines() if "|" in line}
    header = [c.strip() for c in rows["run"].strip("|").split("|")]
    search = [c.strip() for c in rows["search"].strip("|").split("|")]
    assert header[2] == "baseline" and search[2] == "floor"
    at = header.index("query adherence@10")
    assert search[at] == "0.900" and rows["floor"].split("|")[at + 1].strip() == "1.000"
    # HR@10 per user: search 1, 1, 1, 0; floor 1, 0, 0, 0 -> Δ +0.5 against the floor.
    assert search[header.index("Δhr@10 vs its baseline [95% CI]")].startswith("+0.5000 [")
    assert search[header.index("steps")] == "300"
    assert rows["floor"].split("|")[header.index("steps") + 1].strip() == "–"


def test_unequal_training_is_said_in_the_caption(tmp_path: Path) -> None:
    grid = _grid(tmp_path)
    results = _results(karma_joint=333)
    by_run = {r.name: [r] for r in results}
    specs = [s for s in grid.runs if s.name in ("pop", "action", "karma")]
    note = training_note(grid, by_run, specs)
    assert note.startswith("**Unequal training**") and "karma 333 vs action 450 (seed 0)" in note
    assert steps_cell(by_run["karma"]) == "50 + 333"
    # popularity has no steps; a run compared with itself is not a pair
    assert training_note(grid, by_run, specs[:2]) == ""


def test_a_search_run_compared_with_a_recommendation_run_is_refused(tmp_path: Path) -> None:
    grid = _grid(tmp_path, search_baseline=None)  # falls back to the grid's baseline, `action`
    with pytest.raises(ConfigError, match="'search' ranks for search and its baseline 'action'"):
        grid_tasks(grid)
