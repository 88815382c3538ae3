"""LossMeter: each part is averaged over the steps that reported it."""

from __future__ import annotations

import pytest

from karma.train.run_log import LossMeter


def test_parts_measured_on_some_steps_are_not_diluted() -> None:
    meter = LossMeter()
    meter.add_step({"loss": 2.0, "tokens": 10})
    meter.add_step({"loss": 4.0, "tokens": 30, "gradnorm_action": 5.0})  # a log step only
    summary = meter.summary()
    assert summary["loss"] == pytest.approx(3.0)
    assert summary["gradnorm_action"] == pytest.approx(5.0)  # not 5 / 2
    assert "tokens_per_s" in summary and "tokens" not in summary
