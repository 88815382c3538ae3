"""A tiny regression task implementing `TrainTask`, shared by the trainer and checkpoint tests."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from karma.objectives.base import LossOutput
from karma.train.config import TrainConfig

# A few fast steps on one thread, no tensorboard or progress bar (tests replace() what they need).
FAST = TrainConfig(
    lr=0.02,
    lr_warmup_steps=2,
    max_steps=8,
    eval_every=4,
    checkpoint_every=4,
    log_every=1,
    tensorboard=False,
    progress_bar=False,
    num_threads=1,
    early_stopping_metric="ndcg@10",
)


class ToyTask:
    """y = x·w + noise, fitted by a small MLP with dropout (so resuming must restore torch's RNG)."""

    def __init__(
        self,
        num_batches: int = 5,
        batch_size: int = 8,
        dropout: float = 0.1,
        seed: int = 0,
        init_seed: int | None = None,
        crash_after_calls: int | None = None,
        scripted_metrics: list[float] | None = None,
    ) -> None:
        data = torch.Generator().manual_seed(seed)
        self.x = torch.randn(num_batches * batch_size, 4, generator=data)  # (N, 4)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.01 * torch.randn(
            num_batches * batch_size, generator=data
        )  # (N,)
        torch.manual_seed(seed if init_seed is None else init_seed)  # data stays the same
        self.model = nn.Sequential(
            nn.Linear(4, 16), nn.Tanh(), nn.Dropout(dropout), nn.Linear(16, 1)
        )
        self.model.register_buffer("frozen_scale", torch.ones(1))
        self._num_batches = num_batches
        self.batch_size = batch_size
        self.crash_after_calls = crash_after_calls
        self.scripted_metrics = list(scripted_metrics) if scripted_metrics else None
        self.stages: list[str] = []
        self.epochs: list[int] = []
        self.validated_states: list[dict[str, torch.Tensor]] = []

    def num_batches(self, epoch: int) -> int:
        return self._num_batches

    def batches(self, epoch: int) -> Iterator[dict]:
        order = torch.randperm(len(self.y), generator=torch.Generator().manual_seed(100 + epoch))
        for i in range(self._num_batches):
            index = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield {"x": self.x[index], "y": self.y[index], "epoch": epoch}

    def loss_step(self, batch: dict, stage: str) -> LossOutput:
        if self.crash_after_calls is not None and len(self.stages) >= self.crash_after_calls:
            raise RuntimeError("simulated crash")
        self.stages.append(stage)
        self.epochs.append(batch["epoch"])
        prediction = self.model(batch["x"]).squeeze(-1)  # (B,)
        loss = F.mse_loss(prediction.float(), batch["y"])
        return LossOutput(loss, {"mse": float(loss.detach()), "sequences": float(len(batch["y"]))})

    def validate(self) -> dict[str, float]:
        self.validated_states.append({k: v.clone() for k, v in self.model.state_dict().items()})
        if self.scripted_metrics is not None:
            return {"ndcg@10": self.scripted_metrics.pop(0)}
        with torch.no_grad():
            mse = float(F.mse_loss(self.model(self.x).squeeze(-1).float(), self.y))
        return {"ndcg@10": -mse, "mse": mse}
