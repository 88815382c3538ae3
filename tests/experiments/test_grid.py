"""The experiment grid: trains each cell once, skips finished cells, reports every run."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import numpy as np
import pytest

from karma.config import load_config
from karma.errors import ConfigError
from karma.experiments import runner
from karma.experiments.grid import GridConfig
from karma.experiments.report import write_report
from karma.runs import load_retriever
from karma.testing.datasets import write_leave_one_out
from karma.train.karma_task import KarmaRetriever
from karma.train.lock import LOCK_FILE

ROOT = Path(__file__).resolve().parents[2]
GENRES = ["comedy", "drama", "horror", "space", "western"]


def _dataset(root: Path) -> Path:
    rng = np.random.default_rng(0)
    num_items = 30
    sequences = []
    for u in range(20):
        pool = [i for i in range(num_items) if i % len(GENRES) == u % len(GENRES)]
        sequences.append(list(rng.choice(pool, size=5, replace=False)))
    titles = [f"Film {i} {GENRES[i % len(GENRES)]}" for i in range(num_items)]
    return write_leave_one_out(root, sequences, num_items, titles=titles)


def _grid(tmp_path: Path) -> GridConfig:
    data = _dataset(tmp_path / "data")
    grid_file = tmp_path / "grid.yaml"
    sasrec = tmp_path / "sasrec.yaml"
    sasrec.write_text(
        "hidden: 16\nnum_blocks: 1\nmax_len: 10\nbatch_size: 8\nepochs: 2\ndevice: cpu\n"
    )
    tiny = ROOT / "configs" / "debug" / "tiny.yaml"
    fast = [
        "train.max_steps=4",
        "train.eval_every=2",
        "train.checkpoint_every=2",
        "train.lr_warmup_steps=1",
    ]
    grid_file.write_text(
        f"""
name: tiny grid
data: {data}
output_dir: {tmp_path / "out"}
seeds: [0]
baseline: action-only
bootstrap: 50
diagnostic_users: 10
threads: 1
runs:
  - {{name: popularity, kind: popularity}}
  - {{name: sasrec, kind: sasrec, config: {sasrec}}}
  - {{name: action-only, kind: karma, config: {tiny}, overrides: {fast}}}
  - name: karma
    kind: karma
    config: {tiny}
    overrides: {[*fast, "knowledge.generation_weight=0.5", "knowledge.reconstruction_weight=0.5"]}
"""
    )
    return load_config(GridConfig, grid_file)


def test_grid_runs_reports_and_skips_finished_cells(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    grid = _grid(tmp_path)
    loaded = []

    def recording_load_retriever(*args: object, **kwargs: object) -> object:
        retriever = load_retriever(*args, **kwargs)  # type: ignore[arg-type]
        loaded.append(retriever)
        return retriever

    monkeypatch.setattr(runner, "load_retriever", recording_load_retriever)
    results = runner.run_grid(grid, progress=False)
    assert [r.name for r in results] == ["popularity", "sasrec", "action-only", "karma"]
    # --no-progress silences the users bar of the test evaluation too, even on a terminal
    karma_retrievers = [r for r in loaded if isinstance(r, KarmaRetriever)]
    assert len(karma_retrievers) == 2
    assert all(r.progress is False for r in karma_retrievers)
    for r in results:
        assert 0.0 <= r.metrics["hr@10"] <= 1.0
        assert len(r.user_ids) == 20
        assert (
            grid.run_dir(grid.runs[[s.name for s in grid.runs].index(r.name)], 0) / "result.json"
        ).is_file()
    for cell in (grid.run_dir(spec, 0) for spec in grid.runs[2:]):  # the two karma cells
        assert (cell / "best").is_dir()  # a finished cell keeps its best model ...
        assert not (cell / "checkpoints").exists()  # ... and drops what only a resume reads
    karma = results[3]
    assert {"sink_mass", "barcode"} <= set(karma.diagnostics)  # LLM runs get attention metrics
    assert "sink_mass" not in results[0].diagnostics  # popularity has no attention

    paths = write_report(grid, results)
    table = (grid.output_dir / "results.md").read_text()
    for name in ("popularity", "sasrec", "action-only", "karma", "sink_mass", "Δhr@10"):
        assert name in table
    assert all(p.is_file() for p in paths)
    assert grid.output_dir / "deltas.png" in paths  # three runs against the baseline
    assert (grid.output_dir / "results.csv").read_text().count("\n") == 5

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(runner, "train_retriever", no_training)
    again = runner.run_grid(grid, progress=False)
    assert [r.metrics for r in again] == [r.metrics for r in results]

    # a result diagnosed by an older karma is diagnosed again from its saved model, once
    assert results[0].diagnostics["title_auc"] == 0.5  # popularity's constant vector: chance
    done = grid.run_dir(grid.runs[3], 0) / runner.RESULT_FILE
    old = json.loads(done.read_text())
    old["diagnostics"] = {"title_token_acc": 0.3}
    del old["diagnostics_version"]  # as written before the version existed
    done.write_text(json.dumps(old))
    updated = runner.run_grid(grid, progress=False)
    assert updated[3].diagnostics == results[3].diagnostics
    assert json.loads(done.read_text())["diagnostics_version"] == runner.DIAGNOSTICS_VERSION

    # a result evaluated before the exposure metrics existed gets them, by evaluation only
    done = grid.run_dir(grid.runs[1], 0) / runner.RESULT_FILE
    old = json.loads(done.read_text())
    for name in ("tail_share@10", "coverage@10"):
        del old["metrics"][name]
    done.write_text(json.dumps(old))
    updated = runner.run_grid(grid, progress=False)
    assert updated[1].metrics == results[1].metrics
    assert "coverage@10" in json.loads(done.read_text())["metrics"]


def test_grid_validation_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "grid.yaml"
    path.write_text("runs: [{name: a, kind: popularity}]\nbaseline: nope\n")
    with pytest.raises(ConfigError, match="baseline"):
        load_config(GridConfig, path)
    path.write_text("runs: [{name: a, kind: karma}]\n")
    with pytest.raises(ConfigError, match="config"):
        load_config(GridConfig, path)


@pytest.mark.parametrize(
    "grid_file", sorted((ROOT / "configs" / "experiments").glob("*.yaml")), ids=lambda p: p.name
)
def test_shipped_grids_parse_and_name_existing_configs(grid_file: Path) -> None:
    from karma.baselines.sasrec import SASRecConfig
    from karma.train.run_config import RunConfig

    assert grid_file.read_text().startswith("#"), "a shipped grid starts with what it reproduces"
    grid = load_config(GridConfig, grid_file)
    for spec in grid.runs:
        if spec.config is None:
            continue
        path = ROOT / spec.config
        assert path.is_file(), f"{grid_file.name}: {spec.name} names missing {spec.config}"
        load_config(RunConfig if spec.kind == "karma" else SASRecConfig, path, list(spec.overrides))


def test_per_run_data_needs_a_baseline_on_the_same_data(tmp_path: Path) -> None:
    path = tmp_path / "grid.yaml"
    path.write_text(
        "data: d/loo\nbaseline: a\nruns:\n"
        "  - {name: a, kind: popularity}\n"
        "  - {name: b, kind: popularity, data: d/cold}\n"
    )
    with pytest.raises(ConfigError, match="different data"):
        load_config(GridConfig, path)
    path.write_text(
        "data: d/loo\nbaseline: a\nruns:\n"
        "  - {name: a, kind: popularity}\n"
        "  - {name: b, kind: popularity, data: d/cold}\n"
        "  - {name: c, kind: popularity, data: d/cold, baseline: b}\n"
        "  - {name: d, kind: popularity, data: d/cold, baseline: b}\n"
    )
    with pytest.raises(ConfigError, match="different data"):  # b itself still compares with a
        load_config(GridConfig, path)
    path.write_text(
        path.read_text().replace(
            "{name: b, kind: popularity, data: d/cold}",
            "{name: b, kind: popularity, data: d/cold, baseline: b}",
        )
    )
    grid = load_config(GridConfig, path)
    assert [grid.baseline_of(s) for s in grid.runs] == ["a", "b", "b", "b"]
    assert [str(grid.data_of(s)) for s in grid.runs] == ["d/loo", "d/cold", "d/cold", "d/cold"]


def test_select_keeps_the_named_runs_and_their_baselines_in_grid_order(tmp_path: Path) -> None:
    path = tmp_path / "grid.yaml"
    path.write_text(
        "data: d/loo\nbaseline: a\nruns:\n"
        "  - {name: a, kind: popularity}\n"
        "  - {name: b, kind: popularity}\n"
        "  - {name: c, kind: popularity, data: d/cold, baseline: d}\n"
        "  - {name: d, kind: popularity, data: d/cold, baseline: d}\n"
        "  - {name: e, kind: popularity, data: d/cold, baseline: c}\n"
    )
    grid = load_config(GridConfig, path)
    assert [r.name for r in grid.select(["b"]).runs] == ["a", "b"]
    # e -> c -> d: transitive; the grid's baseline a is dropped when nothing is compared with it
    cut = grid.select(["e"])
    assert [r.name for r in cut.runs] == ["c", "d", "e"]
    assert cut.baseline is None and cut.baseline_of(cut.runs[2]) == "c"
    assert cut.run_dir(cut.runs[0], 0) == grid.run_dir(grid.runs[2], 0)  # cells are shared
    with pytest.raises(ConfigError, match="no run named \\['zz'\\]"):
        grid.select(["zz"])


def test_flat_diagnostics_take_the_title_probe_auc() -> None:
    fidelity = {"title": {"retrieval_auc": 0.625, "token_accuracy": 0.375}}
    assert runner.flat_diagnostics(None, fidelity) == {"title_auc": 0.625}


def test_init_from_names_an_earlier_karma_run_on_the_same_data(tmp_path: Path) -> None:
    path = tmp_path / "grid.yaml"
    head = "data: d/loo\nruns:\n  - {name: pop, kind: popularity}\n"
    cases = {
        "  - {name: a, kind: karma, config: c.yaml}\n"
        "  - {name: b, kind: karma, config: c.yaml, init_from: zz}\n": "init_from 'zz'",
        "  - {name: b, kind: karma, config: c.yaml, init_from: a}\n"
        "  - {name: a, kind: karma, config: c.yaml}\n": "listed before it",
        "  - {name: a, kind: karma, config: c.yaml}\n"
        "  - {name: b, kind: karma, config: c.yaml, init_from: pop}\n": "candidates: \\['a'\\]",
        "  - {name: a, kind: karma, config: c.yaml, data: d/cold, baseline: a}\n"
        "  - {name: b, kind: karma, config: c.yaml, init_from: a}\n": "different data",
        "  - {name: b, kind: popularity, init_from: pop}\n": "only a karma run",
    }
    for runs, message in cases.items():
        path.write_text(head + runs)
        with pytest.raises(ConfigError, match=message):
            load_config(GridConfig, path)
    path.write_text(
        head + "  - {name: a, kind: karma, config: c.yaml}\n"
        "  - {name: b, kind: karma, config: c.yaml, baseline: a}\n"
        "  - {name: c, kind: karma, config: c.yaml, baseline: pop, init_from: b}\n"
    )
    grid = load_config(GridConfig, path)
    assert [r.name for r in grid.select(["c"]).runs] == ["pop", "a", "b", "c"]  # b via init_from


def test_a_run_starts_from_its_source_cell_once_that_one_finished(tmp_path: Path) -> None:
    grid = _grid(tmp_path)
    grid.keep_checkpoints = True
    source, warm = grid.runs[2], grid.runs[3]  # action-only, karma
    warm.init_from = source.name
    grid.runs = [grid.runs[0], source, warm]
    busy = grid.run_dir(source, 0)
    busy.mkdir(parents=True)
    fd = os.open(busy / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another stream trains the source
    try:
        first = runner.run_grid(grid, progress=False)
    finally:
        os.close(fd)
    assert [r.name for r in first] == ["popularity"]  # karma waits for its source
    assert not (grid.run_dir(warm, 0) / "checkpoints").exists()
    again = runner.run_grid(grid, progress=False)
    assert [r.name for r in again] == ["popularity", "action-only", "karma"]
    assert (grid.run_dir(source, 0) / "checkpoints").is_dir()  # kept when the grid asks
    saved = (grid.run_dir(warm, 0) / "run_config.yaml").read_text()
    assert f"init_from: {grid.run_dir(source, 0).resolve()}" in saved
    # "train min" is the training time the run recorded (summed over resumed sessions)
    from karma.runs import open_run

    recorded = open_run(grid.run_dir(warm, 0)).info.train_seconds
    assert recorded is not None and recorded > 0 and again[2].train_seconds == recorded


def test_a_moved_cell_is_reported_under_the_row_it_sits_in(tmp_path: Path) -> None:
    # A finished cell kept under a new row name (its directory moved) must not be pooled with
    # the row it was trained as: the report names it after the row it now sits under.
    data = _dataset(tmp_path / "data")
    grid_file = tmp_path / "grid.yaml"
    head = f"name: moved\ndata: {data}\noutput_dir: {tmp_path / 'out'}\nbootstrap: 10\n"
    grid_file.write_text(head + "runs:\n  - {name: a, kind: popularity}\n")
    runner.run_grid(load_config(GridConfig, grid_file), progress=False)
    (tmp_path / "out" / "a").rename(tmp_path / "out" / "a-old")
    grid_file.write_text(head + "runs:\n  - {name: a-old, kind: popularity}\n")
    results = runner.run_grid(load_config(GridConfig, grid_file), progress=False, train=False)
    assert [r.name for r in results] == ["a-old"]
    stored = json.loads((tmp_path / "out" / "a-old" / "seed0" / "result.json").read_text())
    assert stored["name"] == "a-old"  # written back
