"""The shipped karma-*.yaml configs: they load, and differ from action-only only in knowledge."""

from __future__ import annotations

from pathlib import Path

import pytest

from karma.config import load_config, to_dict
from karma.objectives.knowledge import KnowledgeConfig
from karma.train.run_config import RunConfig

CONFIGS = Path(__file__).parents[2] / "configs"
KARMA_CONFIGS = sorted(CONFIGS.glob("**/karma-*.yaml"))


def test_the_knowledge_configs_exist() -> None:
    names = {str(p.relative_to(CONFIGS)) for p in KARMA_CONFIGS}
    assert {"ml-100k/karma-smollm2.yaml", "ml-1m/karma-smollm2.yaml"} <= names
    assert "ml-1m/karma-smollm2-gpu.yaml" in names


@pytest.mark.parametrize("path", KARMA_CONFIGS, ids=lambda p: p.name)
def test_karma_config_differs_from_action_only_only_in_knowledge(path: Path) -> None:
    karma = load_config(RunConfig, path)
    action_only = load_config(
        RunConfig, path.with_name(path.name.replace("karma-", "action-only-"))
    )
    assert isinstance(karma.knowledge, KnowledgeConfig)
    assert karma.knowledge.reconstruction_weight > 0 and karma.train.semantic_warmup_steps > 0
    assert action_only.knowledge == KnowledgeConfig()  # action-only = every weight 0
    if karma.model.backbone.tuning != "lora":
        assert karma.knowledge.reconstruction_decoder == "shared"
    a, b = to_dict(karma), to_dict(action_only)
    for data in (a, b):
        data.pop("knowledge"), data.pop("output_dir"), data["train"].pop("semantic_warmup_steps")
    assert a == b
    assert path.read_text().startswith("# KARMA") and "karma train configs/" in path.read_text()
