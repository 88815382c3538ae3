"""Attention metrics on synthetic rows whose answers are worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from karma.diagnostics.attention import ReadoutAttention
from karma.diagnostics.metrics import (
    barcode_score,
    column_mean,
    first_position_mass,
    gini,
    max_position_mass,
    normalized_history_entropy,
    per_layer_markdown,
    right_aligned_lift,
    summarize,
)


def _all_history(users: int, length: int) -> torch.Tensor:
    return torch.ones(users, length, dtype=torch.bool)


def _barcode(weights: torch.Tensor, history: torch.Tensor, width: int) -> float:
    lift, filled = right_aligned_lift(weights, history, width)
    return float(barcode_score(column_mean(lift, filled), filled.any(0)))


def test_uniform_rows_have_entropy_one_and_barcode_zero() -> None:
    weights = torch.full((6, 5), 0.2)  # (U, L)
    history = _all_history(6, 5)
    assert torch.allclose(normalized_history_entropy(weights, history), torch.ones(6))
    assert _barcode(weights, history, 5) == pytest.approx(0.0, abs=1e-6)


def test_uniform_rows_of_different_lengths_still_have_barcode_zero() -> None:
    # user 0 attends uniformly over 4 history items, user 1 over 2 (left-padded)
    weights = torch.tensor([[0.25, 0.25, 0.25, 0.25], [0.0, 0.0, 0.5, 0.5]])
    history = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]], dtype=torch.bool)
    assert _barcode(weights, history, 4) == pytest.approx(0.0, abs=1e-6)


def test_one_hot_on_the_same_column_is_a_full_sink_and_barcode() -> None:
    weights = torch.zeros(4, 5)
    weights[:, 2] = 1.0
    history = _all_history(4, 5)
    assert torch.allclose(max_position_mass(weights), torch.ones(4))
    assert torch.allclose(normalized_history_entropy(weights, history), torch.zeros(4), atol=1e-6)
    assert _barcode(weights, history, 5) == pytest.approx(1.0, abs=1e-6)


def test_one_hot_on_different_columns_has_entropy_zero_but_low_barcode() -> None:
    weights = torch.eye(5)  # user u looks only at position u
    history = _all_history(5, 5)
    assert torch.allclose(normalized_history_entropy(weights, history), torch.zeros(5), atol=1e-6)
    assert _barcode(weights, history, 5) == pytest.approx(0.0, abs=1e-6)
    # 4 users on 2 of 4 columns: q = (1/2, 1/2, 0, 0), barcode = 1 - log 2 / log 4 = 1/2
    two_columns = torch.zeros(4, 4)
    two_columns[[0, 1], 0] = 1.0
    two_columns[[2, 3], 1] = 1.0
    assert _barcode(two_columns, _all_history(4, 4), 4) == pytest.approx(0.5, abs=1e-6)


def test_entropy_of_a_two_item_split_by_hand() -> None:
    # history = positions 1..2 with weights 0.2, 0.6 -> p = (0.25, 0.75)
    weights = torch.tensor([[0.2, 0.2, 0.6]])
    history = torch.tensor([[False, True, True]])
    expected = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)) / math.log(2)
    assert float(normalized_history_entropy(weights, history)[0]) == pytest.approx(expected)
    one_item = torch.tensor([[False, False, True]])
    assert math.isnan(float(normalized_history_entropy(weights, one_item)[0]))


def test_first_position_mass_follows_left_padding() -> None:
    weights = torch.tensor([[0.7, 0.2, 0.1], [0.0, 0.4, 0.6]])  # user 1 is left-padded by one
    mask = torch.tensor([[1, 1, 1], [0, 1, 1]], dtype=torch.bool)
    assert torch.allclose(first_position_mass(weights, mask), torch.tensor([0.7, 0.4]))
    stacked = weights.expand(3, 2, 2, 3)  # (layers, heads, U, L)
    assert first_position_mass(stacked, mask).shape == (3, 2, 2)


def test_right_alignment_puts_the_most_recent_item_last() -> None:
    weights = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.0, 0.0]])
    history = torch.tensor([[0, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)  # user 1: right-padded
    lift, filled = right_aligned_lift(weights, history, width=2)
    # user 0: history (0.2, 0.3, 0.4)/0.9 * 3 -> last two slots 1.0, 1.333; user 1: 1, 1
    assert torch.allclose(lift, torch.tensor([[0.3 / 0.3, 0.4 / 0.3], [1.0, 1.0]]))
    assert filled.all()


def test_gini_by_hand() -> None:
    assert float(gini(torch.ones(7))) == pytest.approx(0.0, abs=1e-6)
    assert float(gini(torch.tensor([0.0, 0.0, 0.0, 1.0]))) == pytest.approx(0.75)
    # x = (1, 2, 3): Σ(2i-4) x_i = -2 + 0 + 6 = 4; n Σx = 18
    assert float(gini(torch.tensor([3.0, 1.0, 2.0]))) == pytest.approx(4 / 18)


def test_summarize_reports_every_layer_and_head() -> None:
    users, length = 5, 6
    rows = torch.zeros(2, users, 3, length)  # (layers, U, heads, L)
    rows[0] = 1.0 / length  # layer 0 uniform
    rows[1, :, :, 0] = 1.0  # layer 1: everything on the first position (a BOS sink)
    history = torch.zeros(users, length, dtype=torch.bool)
    history[:, 1:5] = True
    mask = torch.ones(users, length, dtype=torch.bool)
    summary = summarize(ReadoutAttention(rows, mask, history))
    uniform, sink = summary["layers"]
    assert uniform["history_entropy"] == pytest.approx(1.0)
    assert uniform["barcode"] == pytest.approx(0.0, abs=1e-6)
    assert uniform["history_mass"] == pytest.approx(4 / 6)
    assert sink["sink_mass"] == pytest.approx(1.0)
    assert sink["first_position_mass"] == pytest.approx(1.0)
    assert sink["history_mass"] == pytest.approx(0.0)
    assert len(sink["heads"]["barcode"]) == 3
    table = per_layer_markdown(summary)
    assert table.count("\n") == 4 and "| 1 | 1.000 | 1.000 | 0.000 |" in table
