"""Every YAML under configs/ parses into its dataclass; old key names fail with the new name."""

from __future__ import annotations

from pathlib import Path

import pytest

from karma.config import load_config, read_yaml
from karma.errors import ConfigError
from karma.experiments.grid import GridConfig
from karma.runs import recipe_for
from karma.train.run_config import RunConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ALL_YAML = sorted(CONFIGS.glob("**/*.yaml"))


def config_type(path: Path) -> type:
    """Grids live in configs/experiments; *sasrec.yaml is a SASRecConfig; the rest are RunConfigs."""
    if path.parent.name == "experiments":
        return GridConfig
    if path.stem == "sasrec" or path.stem.endswith("-sasrec"):
        return recipe_for("sasrec").config_type
    return RunConfig


def test_there_are_configs() -> None:
    assert len(ALL_YAML) >= 10


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_config_parses(path: Path) -> None:
    cls = config_type(path)
    config = load_config(cls, path)
    assert isinstance(config, cls)
    if cls is GridConfig:  # and every run of a grid, with its overrides, parses too
        config.resolve_configs([CONFIGS.parent])
        for spec in config.runs:
            recipe = recipe_for(spec.kind)
            extra = [f"feature={spec.feature}"] if spec.feature is not None else []
            assert load_config(recipe.config_type, spec.config, [*spec.overrides, *extra])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.warmup_steps=5", "train.warmup_steps was renamed to train.lr_warmup_steps"),
        (
            "train.warmup_stage_steps=5",
            "train.warmup_stage_steps was renamed to train.semantic_warmup_steps",
        ),
        ("knowledge.flow_sample_steps=8", "knowledge.flow_sample_steps was removed"),
    ],
)
def test_old_key_names_say_what_they_became(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(RunConfig, CONFIGS / "debug" / "tiny.yaml", [override])
    assert message in str(error.value)


def test_no_shipped_config_uses_an_old_key() -> None:
    for path in ALL_YAML:
        text = path.read_text(encoding="utf-8")
        data = read_yaml(path)
        assert "warmup_stage_steps" not in text and "flow_sample_steps" not in text, path
        assert "warmup_steps" not in data.get("train", {}), path
