"""Linear warm-up + cosine decay against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from karma.train.schedule import warmup_cosine_factor, warmup_cosine_schedule


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, 0.25),  # (0 + 1) / 4
        (1, 0.5),
        (3, 1.0),  # last warm-up step reaches the peak
        (4, 1.0),  # cosine starts at the peak: progress 0
        (7, 0.5),  # progress (7 - 4) / (10 - 4) = 1/2 -> (1 + cos(pi/2)) / 2
        (10, 0.0),  # end of the schedule
        (25, 0.0),  # clamped past the end
    ],
)
def test_warmup_cosine_factor(step: int, expected: float) -> None:
    assert warmup_cosine_factor(step, warmup_steps=4, total_steps=10) == pytest.approx(expected)


def test_min_lr_ratio_and_no_warmup() -> None:
    # W = 0, T = 4, r = 0.1: step 1 -> progress 1/4 -> 0.1 + 0.9 * (1 + cos(pi/4)) / 2
    expected = 0.1 + 0.9 * (1 + math.sqrt(0.5)) / 2
    assert warmup_cosine_factor(1, 0, 4, min_lr_ratio=0.1) == pytest.approx(expected)
    assert warmup_cosine_factor(4, 0, 4, min_lr_ratio=0.1) == pytest.approx(0.1)


def test_scheduler_scales_each_group_and_caps_warmup_at_stage_length() -> None:
    weight = torch.nn.Parameter(torch.zeros(1))
    bias = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([{"params": [weight], "lr": 1.0}, {"params": [bias], "lr": 0.1}])
    scheduler = warmup_cosine_schedule(optimizer, warmup_steps=100, total_steps=2)
    seen = []
    for _ in range(2):
        seen.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    # W = min(100, 2) = 2: the whole 2-step stage is warm-up, factors 1/2 then 2/2
    assert seen == [pytest.approx([0.5, 0.05]), pytest.approx([1.0, 0.1])]
