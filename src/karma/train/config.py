"""`TrainConfig`: every knob of the generic `Trainer` (optimizer, schedule, stages, checkpoints).

The run config (`karma.train.run_config`) nests it as its `train:` section, so each field below is
also a `train.<field>=value` override on the command line and its docstring is the `--help` text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal


@dataclass
class TrainConfig:
    """Optimizer, schedule, stages, evaluation, checkpoints and devices of one training run."""

    RENAMED_KEYS: ClassVar[dict[str, str]] = {
        "warmup_steps": "lr_warmup_steps",
        "warmup_stage_steps": "semantic_warmup_steps",
    }

    lr: float = 3e-4
    """peak learning rate of AdamW (a task's optimizer_groups may scale it per group)"""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay; by default not applied to biases and norm weights (1-D tensors)"""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW (beta1, beta2)"""
    lr_warmup_steps: int = 100
    """optimizer steps of linear learning-rate warm-up at the start of each stage, then cosine decay"""
    min_lr_ratio: float = 0.0
    """cosine decay ends at lr * min_lr_ratio"""
    max_steps: int = 1000
    """optimizer steps of the joint stage (training ends at max_steps or max_epochs, whichever is first)"""
    max_epochs: int | None = None
    """passes over the training batches per stage; null = no limit (max_steps decides)"""
    time_budget_minutes: float | None = None
    """wall-clock budget for the whole fit; the joint stage stops after the step that crosses it
    (then validates and saves as at a normal end: the run is finished, not resumable); null = no
    budget. To stop for now and continue later, pause instead (the pause option of karma train,
    pause_at of Trainer)"""
    init_from: str | None = None
    """start a fresh run from another run's weights: its run directory (its best model), its best/
    or one of its checkpoints/step_* directories. Tensors with the same name are loaded (their
    shapes must match), the others keep their initialization; the optimizer starts fresh. Ignored
    when resuming (the checkpoint has the weights). null = start from the config's initialization"""
    semantic_warmup_steps: int = 0
    """optimizer steps of the semantic warm-up stage ("warmup": knowledge objectives only, no action
    loss) before the joint stage; 0 = skip it"""
    grad_accum: int = 1
    """batches whose gradients are summed into one optimizer step"""
    clip_norm: float | None = 1.0
    """clip the global gradient norm to this value before each step; null = no clipping"""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto = bf16 autocast on a CUDA device that supports it, else fp32; bf16 = bf16 autocast anywhere"""
    eval_every: int = 500
    """run the task's validation every N optimizer steps of the joint stage (and at its end); 0 = end only"""
    checkpoint_every: int = 500
    """write a resumable checkpoint every N optimizer steps (and at the end of each stage); 0 = ends only"""
    keep_checkpoints: int = 2
    """how many of the latest step checkpoints to keep (the best model is kept apart in run_dir/best)"""
    early_stopping_metric: str = "ndcg@10"
    """validation metric that picks the best model and drives early stopping"""
    early_stopping_mode: Literal["max", "min"] = "max"
    """max = higher metric is better (ndcg, hr); min = lower is better (a loss)"""
    early_stopping_patience: int = 0
    """stop after this many evaluations without improvement; 0 = never stop early"""
    log_every: int = 10
    """write averaged loss parts, lr and throughput to log.jsonl every N optimizer steps"""
    tensorboard: bool = True
    """also write the logged scalars to run_dir/tb (skipped if tensorboard is not installed)"""
    progress_bar: bool = True
    """show a tqdm bar with the loss parts, steps/s and ETA"""
    seed: int = 0
    """seed of python, numpy and torch random generators (dropout, sampling inside the model)"""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto = cuda if available, else cpu"""
    num_threads: int | None = None
    """CPU threads torch may use; null = all cores"""
    distributed: Literal["none", "ddp", "fsdp"] = "none"
    """none = one process; ddp / fsdp = data parallel over processes started by `accelerate launch`"""

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # type: ignore[assignment]  # YAML gives a list
        if not self.lr > 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay: must be >= 0, got {self.weight_decay}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas: must be two numbers in [0, 1), got {list(self.betas)}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio: must be in [0, 1], got {self.min_lr_ratio}")
        for name in ("max_steps", "grad_accum", "keep_checkpoints", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in (
            "lr_warmup_steps",
            "semantic_warmup_steps",
            "eval_every",
            "checkpoint_every",
            "early_stopping_patience",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.time_budget_minutes is not None and not self.time_budget_minutes > 0:
            raise ValueError(
                f"time_budget_minutes: must be > 0 or null, got {self.time_budget_minutes}"
            )
        if self.max_epochs is not None and self.max_epochs < 1:
            raise ValueError(f"max_epochs: must be >= 1 or null, got {self.max_epochs}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"clip_norm: must be > 0 or null, got {self.clip_norm}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads: must be >= 1 or null, got {self.num_threads}")
        if not self.early_stopping_metric:
            raise ValueError("early_stopping_metric: must name a validation metric, e.g. ndcg@10")
        if self.distributed != "none" and self.device == "cpu" and self.distributed == "fsdp":
            raise ValueError(
                "distributed: fsdp needs CUDA devices; use ddp or none with device=cpu"
            )
