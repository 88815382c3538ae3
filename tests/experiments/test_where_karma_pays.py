"""The study's grid files run through the real runner, every cell shrunk to tiny-model size.

Each cell keeps its own overrides (levers, protocol, item tokens); the smoke only appends
tiny-model settings after them, points every run at a tiny dataset and trains 2 steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from karma.config import load_config
from karma.experiments import runner
from karma.experiments.grid import GridConfig
from karma.experiments.report import gradient_norm_series, term_style, write_report
from karma.testing.datasets import write_tiny_dataset
from karma.train.run_config import RunConfig

ROOT = Path(__file__).resolve().parents[2]
GRIDS = ROOT / "configs" / "experiments"
TINY = [
    "model.backbone.name=tiny",
    "model.backbone.num_layers=0",
    "model.encoder.embedding_dim=16",
    "model.encoder.item_text_tokens=8",
    "data.max_history=5",
    "data.batch_size=4",
    "data.eval_batch_size=16",
    "train.max_steps=2",
    "train.lr_warmup_steps=1",
    "train.eval_every=2",
    "train.checkpoint_every=2",
    "train.log_every=1",
    "train.tensorboard=false",
    "action.num_negatives=8",
]


def shrink(grid: GridConfig, data: Path, out: Path) -> GridConfig:
    """The grid with tiny cells: same runs, names, baselines and levers; tiny data and model."""
    grid.data, grid.output_dir, grid.report_dir = data, out, None
    grid.seeds, grid.bootstrap, grid.threads, grid.diagnostics = [0], 20, 1, False
    for spec in grid.runs:
        if spec.data is not None:
            spec.data = data
        if spec.kind == "frozen":
            spec.feature = "text"
        if spec.kind == "sasrec":
            spec.overrides += ["epochs=1", "hidden=16", "max_len=10", "device=cpu"]
        if spec.kind != "karma":
            continue
        assert spec.config is not None
        spec.config = ROOT / spec.config
        config = load_config(RunConfig, spec.config, list(spec.overrides))
        extra = list(TINY)
        if config.train.semantic_warmup_steps > 0:
            extra.append("train.semantic_warmup_steps=1")
        if config.knowledge.flow_weight > 0:
            extra.append("knowledge.feature_name=text")
        if config.model.encoder.features:
            extra.append("model.encoder.features=text")
        spec.overrides += extra
    return grid


@pytest.mark.parametrize(
    "name",
    [
        "where-karma-pays-pilot-ml-100k.yaml",
        pytest.param("where-karma-pays-ml-100k.yaml", marks=pytest.mark.slow),
    ],
)
def test_study_grid_cells_run_through_the_runner(tmp_path: Path, name: str) -> None:
    data = write_tiny_dataset(tmp_path / "data", feature_dim=6)
    grid = shrink(load_config(GridConfig, GRIDS / name), data, tmp_path / "out")
    results = runner.run_grid(grid, progress=False)
    assert len(results) == len(grid.runs)
    for spec in grid.runs:
        if spec.kind != "karma":
            continue
        run_dir = grid.run_dir(spec, 0)
        saved = load_config(RunConfig, run_dir / "run_config.yaml")
        assert saved.knowledge.log_grad_norms and saved.train.time_budget_minutes is None
        records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
        assert "action" in gradient_norm_series(records)  # both arms log the action's norm
        if saved.knowledge.reconstruction_weight > 0:
            assert "reconstruction" in gradient_norm_series(records)
    paths = write_report(grid, results)
    assert (tmp_path / "out" / "training_curves.png") in paths
    table = (tmp_path / "out" / "results.md").read_text()
    assert all(spec.name in table for spec in grid.runs)


def test_study_grid_pairs_every_run_with_its_protocols_action_only() -> None:
    grid = load_config(GridConfig, GRIDS / "where-karma-pays-ml-100k.yaml")
    assert grid.split == "test" and len(grid.seeds) == 3
    pilot = load_config(GridConfig, GRIDS / "where-karma-pays-pilot-ml-100k.yaml")
    assert pilot.split == "valid"  # λ and levers are chosen on validation only
    for spec in grid.runs:
        protocol = spec.name.split("-")[0]
        assert protocol in ("loo", "cold", "search")
        assert grid.baseline_of(spec).startswith(f"{protocol}-action-only")
        assert (grid.data_of(spec).name == "ml-100k-cold15") == (protocol == "cold")
        if spec.kind == "karma":
            config = load_config(RunConfig, ROOT / str(spec.config), list(spec.overrides))
            assert config.train.max_steps == 1500 and config.train.time_budget_minutes is None
            assert (config.data.mode == "search") == (protocol == "search")
            is_karma = config.knowledge.reconstruction_weight > 0
            assert is_karma == ("karma" in spec.name)
            assert (config.knowledge.grad_control != "none") == is_karma
            assert config.model.encoder.item_id_embedding == spec.name.endswith("+id")


def test_search_pilot_varies_one_lever_per_cell_on_validation() -> None:
    pilot = load_config(GridConfig, GRIDS / "where-karma-pays-search-pilot-ml-100k.yaml")
    assert pilot.split == "valid" and pilot.baseline == "search-action-only+id"
    specs = {spec.name: spec for spec in pilot.runs}
    configs = {
        name: load_config(RunConfig, ROOT / str(spec.config), list(spec.overrides))
        for name, spec in specs.items()
    }
    for config in configs.values():
        assert config.data.mode == "search" and config.model.encoder.item_id_embedding
        assert config.train.max_steps == 1500 and config.train.time_budget_minutes is None
    reference = configs["search-karma+id"]
    assert (
        reference.knowledge.grad_control == "clip_ratio" and reference.knowledge.grad_ratio == 0.5
    )
    lever = {  # name -> its (field, value) overrides on top of search-karma+id's
        "search-karma+id-start750": [("knowledge.start_step", 750)],
        "search-karma+id-nowarmup": [("train.semantic_warmup_steps", 0)],
        "search-karma+id-clip0.1": [("knowledge.grad_ratio", 0.1)],
        "search-karma+id-nowarmup-start750": [
            ("knowledge.start_step", 750),
            ("train.semantic_warmup_steps", 0),
        ],
    }
    assert set(configs) == {"search-action-only+id", "search-karma+id", *lever}
    base = specs["search-karma+id"]
    for name, changes in lever.items():
        expected = load_config(
            RunConfig,
            ROOT / str(base.config),
            [*base.overrides, *(f"{field}={value}" for field, value in changes)],
        )
        assert configs[name] == expected, name


def test_training_curves_give_each_term_its_own_line_style() -> None:
    styles = [term_style(t) for t in ("action", "generation", "reconstruction", "flow")]
    assert styles == ["-", "--", "-.", ":"]
    assert term_style("a_new_term") == "--"
