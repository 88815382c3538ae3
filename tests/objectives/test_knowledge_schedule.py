"""Knowledge-weight schedules: s(t) at hand-computed steps, and weights that follow it."""

from __future__ import annotations

import math

import pytest

from karma.objectives.knowledge import KnowledgeConfig

# start_step 10, T = 31 joint steps (0..30): p = (t - 10) / 20, r = final_ratio = 0.2.
CASES = [
    ("constant", 5, 0.0),  # before start_step: off
    ("constant", 10, 1.0),
    ("constant", 30, 1.0),
    ("linear", 9, 0.0),
    ("linear", 10, 1.0),
    ("linear", 20, 1 - 0.8 * 0.5),  # 0.6
    ("linear", 25, 1 - 0.8 * 0.75),  # 0.4
    ("linear", 30, 0.2),
    ("linear", 40, 0.2),  # past the end: clamped
    ("cosine", 10, 1.0),
    ("cosine", 15, 0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi / 4))),  # 0.88284
    ("cosine", 20, 0.6),
    ("cosine", 30, 0.2),
]


@pytest.mark.parametrize(("schedule", "step", "expected"), CASES)
def test_schedule_factor_by_hand(schedule: str, step: int, expected: float) -> None:
    config = KnowledgeConfig(schedule=schedule, final_ratio=0.2, start_step=10)  # type: ignore[arg-type]
    assert config.schedule_factor(step, 31) == pytest.approx(expected)


def test_joint_weights_follow_the_schedule_and_warmup_weights_do_not() -> None:
    config = KnowledgeConfig(
        generation_weight=0.5,
        reconstruction_weight=1.0,
        warmup_item_text_weight=2.0,
        schedule="linear",
        final_ratio=0.0,
    )
    # T = 11: p = t / 10; at t = 4 the factor is 0.6.
    weights = config.weights("joint", 4, 11)
    assert weights["generation"] == pytest.approx(0.3)
    assert weights["reconstruction"] == pytest.approx(0.6)
    assert config.weights("joint", 10, 11)["reconstruction"] == 0.0  # decayed to 0 = off
    assert config.weights("joint") == {  # no step given: the configured λ
        "item_text": 0.0,
        "generation": 0.5,
        "reconstruction": 1.0,
        "flow": 0.0,
    }
    assert config.weights("warmup", 4, 11)["item_text"] == 2.0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("schedule", "exponential"),
        ("final_ratio", 1.5),
        ("start_step", -1),
        ("grad_control", "mgda"),
        ("grad_ratio", 0.0),
    ],
)
def test_bad_lever_values_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        KnowledgeConfig(**{field: value})  # type: ignore[arg-type]
