"""`RunConfig`: one YAML file describes a whole training run (data, model, objectives, trainer).

    karma train configs/ml-100k/action-only-smollm2.yaml train.max_steps=200 --resume

Each section mirrors a config dataclass; every field is also a `section.field=value` override.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from karma.model.config import BackboneConfig, EncoderConfig, ModelConfig
from karma.objectives.action import ActionConfig
from karma.objectives.knowledge import KnowledgeConfig
from karma.train.config import TrainConfig
from karma.train.karma_task import DataConfig, KarmaTask

__all__ = [
    "ActionConfig",
    "BackboneConfig",
    "DataConfig",
    "EncoderConfig",
    "KnowledgeConfig",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "build_task",
]


@dataclass
class RunConfig:
    """A KARMA training run."""

    data: DataConfig = field(default_factory=DataConfig)
    """Prepared dataset and batching."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Backbone LLM and encoder."""
    action: ActionConfig = field(default_factory=ActionConfig)
    """Sampled-softmax action objective."""
    knowledge: KnowledgeConfig = field(default_factory=KnowledgeConfig)
    """Knowledge objectives (generation, reconstruction, flow, warm-up) and their weights; all 0 = action-only."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimizer, schedule, stages, evaluation and checkpoints."""
    output_dir: Path = Path("runs/karma")
    """Run directory: resolved config, logs, checkpoints and the best model."""
    seed: int = 0
    """Seed of the model's initialisation and of the batch order (batches of epoch k use seed + k)."""

    def __post_init__(self) -> None:
        knowledge, train = self.knowledge, self.train
        if knowledge.start_step > 0 and knowledge.start_step >= train.max_steps:
            raise ValueError(
                f"knowledge.start_step: {knowledge.start_step} >= train.max_steps "
                f"({train.max_steps}); the knowledge objectives would never run"
            )
        balancing = (
            knowledge.grad_control != "none"
            or knowledge.protect_item_tokens
            or knowledge.log_grad_norms
        )
        if balancing and train.distributed == "fsdp":
            raise ValueError(
                "knowledge.grad_control: gradient control, item-token protection and "
                "gradient-norm logging take per-term gradients of the task's own modules, which "
                "fsdp shards; use ddp"
            )


def build_task(config: RunConfig) -> KarmaTask:
    """The KARMA task a run config describes (loads the dataset and the backbone)."""
    return KarmaTask(config.data, config.model, config.action, config.knowledge, seed=config.seed)
