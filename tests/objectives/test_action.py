"""The action loss against values worked out by hand on 2-d embeddings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from karma.objectives.action import ActionConfig, ActionLoss, NegativeSampler, candidate_log_q

E0 = [1.0, 0.0]
E1 = [0.0, 1.0]


def make_loss(counts: list[int], **overrides: object) -> ActionLoss:
    fields = {
        "temperature": 1.0,
        "logq_correction": False,
        "sampler": "uniform",
        "num_negatives": 1,
    }
    fields.update(overrides)
    return ActionLoss(ActionConfig(**fields), np.asarray(counts))  # type: ignore[arg-type]


def t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows)


def test_in_batch_softmax_matches_hand_value() -> None:
    loss = make_loss([5, 5])
    out = loss(t([E0, E1]), t([E0, E1]), torch.tensor([0, 1]))
    # each row: logits [1, 0] for (positive, other row's target) -> log(1 + e^-1)
    assert out.loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    assert out.parts["candidates"] == 2


def test_temperature_divides_the_logits() -> None:
    loss = make_loss([5, 5], temperature=0.5)
    out = loss(t([E0, E1]), t([E0, E1]), torch.tensor([0, 1]))
    assert out.loss.item() == pytest.approx(math.log(1 + math.exp(-2)), abs=1e-6)


def test_logq_correction_and_sampled_negative_masking() -> None:
    # counts + 1 = [2, 4] -> p = [1/3, 2/3]; uniform q = [1/2, 1/2]; B = 2, M = 1
    loss = make_loss([1, 3], logq_correction=True)
    log_q0 = math.log(2 * (1 / 3) + 1 * 0.5)
    log_q1 = math.log(2 * (2 / 3) + 1 * 0.5)
    out = loss(t([E0, E1]), t([E0, E1]), torch.tensor([0, 1]), t([E1]), torch.tensor([1]))
    row0 = [1 - log_q0, 0 - log_q1, 0 - log_q1]  # sampled item 1 is a true negative for row 0
    row1 = [0 - log_q0, 1 - log_q1]  # sampled item 1 is row 1's positive: masked
    expected0 = -row0[0] + math.log(sum(math.exp(x) for x in row0))
    expected1 = -row1[1] + math.log(sum(math.exp(x) for x in row1))
    assert out.loss.item() == pytest.approx((expected0 + expected1) / 2, abs=1e-6)
    assert out.loss.item() != pytest.approx(
        make_loss([1, 3])(
            t([E0, E1]), t([E0, E1]), torch.tensor([0, 1]), t([E1]), torch.tensor([1])
        ).loss.item()
    )


def test_candidate_log_q_formula() -> None:
    target_probs, sampler_probs = torch.tensor([0.25, 0.75]), torch.tensor([0.5, 0.5])
    got = candidate_log_q(
        torch.tensor([1, 0]), target_probs, sampler_probs, num_in_batch=4, num_sampled=2
    )
    assert got.tolist() == pytest.approx([math.log(4 * 0.75 + 1), math.log(4 * 0.25 + 1)])


def test_same_target_in_batch_is_not_a_negative() -> None:
    loss = make_loss([5, 5])
    # both rows target item 0: the other row's column is the same item, so it is masked -> loss 0
    out = loss(t([E0, E1]), t([E0, E0]), torch.tensor([0, 0]))
    assert out.loss.item() == pytest.approx(0.0, abs=1e-6)


def test_without_in_batch_negatives_only_sampled_compete() -> None:
    loss = make_loss([5, 5], in_batch_negatives=False)
    out = loss(t([E0]), t([E0]), torch.tensor([0]), t([E1]), torch.tensor([1]))
    assert out.loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    two_rows = loss(t([E0, E1]), t([E0, E1]), torch.tensor([0, 1]), t([E0]), torch.tensor([2]))
    # row 0: [1 (pos), 1 (sampled item 2)] -> log 2; row 1: [1 (pos), 0] -> log(1 + e^-1)
    assert two_rows.loss.item() == pytest.approx(
        (math.log(2) + math.log(1 + math.exp(-1))) / 2, abs=1e-6
    )


def test_hard_negatives_join_the_softmax_and_padding_is_masked() -> None:
    loss = make_loss([5, 5, 5], in_batch_negatives=False)
    hard_emb = torch.tensor([[E1, E0, E1]])  # (B=1, H=3, e)
    hard_ids = torch.tensor([[2, 0, -1]])  # item 2 counts; item 0 is the positive; -1 is padding
    out = loss(t([E0]), t([E0]), torch.tensor([0]), hard_embeddings=hard_emb, hard_ids=hard_ids)
    assert out.loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)


def test_learned_temperature_is_clamped_and_trained() -> None:
    loss = make_loss(
        [5, 5], temperature=0.5, learn_temperature=True, min_temperature=0.1, max_temperature=2.0
    )
    out = loss(t([E0, E1]), t([E0, E1]), torch.tensor([0, 1]))
    out.loss.backward()
    assert loss.log_temperature.grad is not None and loss.log_temperature.grad.item() != 0
    with torch.no_grad():
        loss.log_temperature.fill_(math.log(50.0))
    assert loss.temperature.item() == pytest.approx(2.0)


def test_sampler_probabilities() -> None:
    popular = NegativeSampler(np.array([0, 3]), "popularity", alpha=1.0)
    assert popular.probs.tolist() == pytest.approx([0.2, 0.8])
    uniform = NegativeSampler(np.array([0, 3, 9]), "uniform")
    assert uniform.probs.tolist() == pytest.approx([1 / 3] * 3)
    draws = popular.sample(4000, torch.Generator().manual_seed(0))
    assert (draws == 1).float().mean().item() == pytest.approx(0.8, abs=0.03)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="temperature"):
        ActionConfig(temperature=0.0)
    with pytest.raises(ValueError, match="num_negatives"):
        ActionConfig(num_negatives=-1)


def test_full_softmax_matches_hand_computed_cross_entropy() -> None:
    loss_fn = make_loss([5, 1, 1], temperature=0.5, negatives="full")
    users = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    catalog = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    targets = torch.tensor([2, 1])
    out = loss_fn.full_softmax(users, catalog, targets)
    # Row 0 logits /0.5: [2, 0, 1.2], target 2; row 1: [0, 2, 1.6], target 1. No logQ term.
    row0 = -1.2 + math.log(math.exp(2) + math.exp(0) + math.exp(1.2))
    row1 = -2.0 + math.log(math.exp(0) + math.exp(2) + math.exp(1.6))
    assert out.loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    assert out.parts["candidates"] == 3 and out.parts["action_accuracy"] == pytest.approx(0.5)


def test_full_softmax_ignores_cold_items() -> None:
    # Item 2 is cold: logit -inf, so row 0's loss is -log softmax([1, 0])[0] = log(1 + e^-1)
    # whatever item 2's embedding, and it gets no gradient.
    loss_fn = ActionLoss(
        ActionConfig(temperature=1.0, negatives="full"),
        np.array([5, 1, 0]),
        trainable_items=np.array([True, True, False]),
    )
    users = torch.tensor([[1.0, 0.0]])
    for cold_row in ([1.0, 0.0], [0.0, -1.0], [5.0, 5.0]):
        catalog = torch.tensor([[1.0, 0.0], [0.0, 1.0], cold_row], requires_grad=True)
        out = loss_fn.full_softmax(users, catalog, torch.tensor([0]))
        assert out.loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
        out.loss.backward()
        assert catalog.grad is not None and catalog.grad[2].abs().sum() == 0
    unmasked = make_loss([5, 1, 0], negatives="full")
    catalog = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    out = unmasked.full_softmax(users, catalog, torch.tensor([0]))
    assert out.loss.item() == pytest.approx(math.log(1 + math.exp(-1) + 1), abs=1e-6)


def test_sampler_never_draws_cold_items() -> None:
    # popularity, alpha 1: (counts + 1) = [2, 4, 6] with item 2 cold -> [2, 4, 0] / 6.
    sampler = NegativeSampler(np.array([1, 3, 5]), "popularity", 1.0, np.array([1, 1, 0], bool))
    assert sampler.probs.tolist() == pytest.approx([1 / 3, 2 / 3, 0.0])
    uniform = NegativeSampler(np.array([1, 3, 5]), "uniform", 0.0, np.array([0, 1, 1], bool))
    assert uniform.probs.tolist() == pytest.approx([0.0, 0.5, 0.5])
    loss_fn = ActionLoss(
        ActionConfig(num_negatives=500), np.array([9, 0, 9, 0]), np.array([1, 0, 1, 0], bool)
    )
    drawn = loss_fn.sample_negatives(torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) == {0, 2}
