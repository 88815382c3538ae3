"""Paired comparisons between evaluation results."""

from __future__ import annotations

import numpy as np
import pytest

from karma.eval.evaluate import EvalResult
from karma.eval.experiment import can_pair, paired_difference
from karma.eval.metrics import TargetRanks


def result(user_ids: list[str], greater: list[int]) -> EvalResult:
    ranks = TargetRanks(np.array(greater), np.zeros(len(greater), dtype=np.int64))
    return EvalResult("x", "test", len(user_ids), 100, {}, user_ids=user_ids, ranks=ranks)


def test_paired_difference_matches_users_by_id() -> None:
    a = result(["u1", "u2", "u3", "u4"], [0, 50, 50, 50])  # HR@10: 1, 0, 0, 0
    b = result(["u4", "u3", "u2"], [0, 0, 50])  # u4 and u3 become hits
    d = paired_difference(a, b, "hr@10", resamples=200)
    assert d.users == 3
    assert d.difference == pytest.approx(2 / 3)  # over u2, u3, u4: (0 + 1 + 1) / 3
    assert d.ci[0] <= d.difference <= d.ci[1]
    with pytest.raises(ValueError, match="share no users"):
        paired_difference(a, result(["z"], [0]), "hr@10")


def test_per_user_values_pair_by_id_and_catalog_figures_refuse() -> None:
    a = result(["u1", "u2", "u3"], [0, 0, 0])
    a.per_user_values["tail_share@10"] = np.array([0.1, 0.5, 0.3])
    b = result(["u3", "u1"], [0, 0])
    b.per_user_values["tail_share@10"] = np.array([0.6, 0.1])
    d = paired_difference(a, b, "tail_share@10", resamples=200)
    assert d.users == 2
    assert d.difference == pytest.approx(0.15)  # u3: 0.6 - 0.3, u1: 0.1 - 0.1
    assert can_pair(a, b, "hr@10") and can_pair(a, b, "mrr")
    assert not can_pair(a, b, "coverage@10")
    with pytest.raises(ValueError, match="coverage@10: not held per user"):
        paired_difference(a, b, "coverage@10")
