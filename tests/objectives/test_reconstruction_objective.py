"""L_rec (decoded from e_u alone) and the warm-up item-text loss (decoded from x_i alone)."""

from __future__ import annotations

import pytest
import torch
from knowledge_fixtures import HIDDEN, tiny_llama, tiny_lora_llama

from karma.errors import ConfigError
from karma.objectives.lm_head import target_token_nll
from karma.objectives.reconstruction import (
    InterestToPrefix,
    ItemTextObjective,
    ReconstructionObjective,
)

EMBED = 8
TARGET = torch.tensor([[4, 5, 6], [7, 8, 0]])
TARGET_MASK = torch.tensor([[1, 1, 1], [1, 1, 0]]).bool()


def test_prefix_map_shape() -> None:
    assert InterestToPrefix(EMBED, HIDDEN, 3)(torch.randn(5, EMBED)).shape == (5, 3, HIDDEN)


def test_reconstruction_is_target_nll_after_g_of_e_u_only() -> None:
    model = tiny_llama()
    objective = ReconstructionObjective(EMBED, HIDDEN, prefix_tokens=2)
    interest = torch.randn(2, EMBED)
    out = objective(model, interest, TARGET, TARGET_MASK)
    prefix = objective.to_prefix(interest)
    expected, _ = target_token_nll(model, prefix, torch.ones(2, 2), TARGET, TARGET_MASK)
    torch.testing.assert_close(out.loss, expected)
    assert out.parts["rec_tokens"] == 5


@pytest.mark.parametrize("decoder_mode", ["shared", "frozen_base"])
def test_gradient_reaches_the_interest_embedding(decoder_mode: str) -> None:
    model = tiny_lora_llama()
    objective = ReconstructionObjective(EMBED, HIDDEN, decoder_mode=decoder_mode)  # type: ignore[arg-type]
    interest = torch.randn(2, EMBED, requires_grad=True)
    objective(model, interest, TARGET, TARGET_MASK).loss.backward()
    assert interest.grad is not None and interest.grad.abs().sum() > 0
    assert all(p.grad is not None for p in objective.parameters())


def test_frozen_base_leaves_lora_without_gradient_and_shared_trains_it() -> None:
    for mode, expect_grad in (("frozen_base", False), ("shared", True)):
        model = tiny_lora_llama()
        objective = ReconstructionObjective(EMBED, HIDDEN, decoder_mode=mode)  # type: ignore[arg-type]
        objective(model, torch.randn(2, EMBED), TARGET, TARGET_MASK).loss.backward()
        lora = [p for name, p in model.named_parameters() if "lora_" in name]
        assert lora
        has_grad = [p.grad is not None and p.grad.abs().sum() > 0 for p in lora]
        assert all(has_grad) if expect_grad else not any(has_grad), mode
        # adapters are back on after the frozen_base call
        assert not model.base_model.model.model.layers[0].self_attn.q_proj.disable_adapters


def test_frozen_base_with_full_fine_tuning_is_a_config_error() -> None:
    objective = ReconstructionObjective(EMBED, HIDDEN, decoder_mode="frozen_base")
    with pytest.raises(ConfigError, match="frozen_base"):
        objective(tiny_llama(), torch.randn(2, EMBED), TARGET, TARGET_MASK)


def test_bad_decoder_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="decoder_mode"):
        ReconstructionObjective(EMBED, HIDDEN, decoder_mode="copy")  # type: ignore[arg-type]


def test_item_text_loss_uses_x_i_as_a_one_token_prefix() -> None:
    model = tiny_llama()
    item_tokens = torch.randn(2, HIDDEN, requires_grad=True)
    out = ItemTextObjective()(model, item_tokens, TARGET, TARGET_MASK)
    expected, _ = target_token_nll(
        model, item_tokens[:, None], torch.ones(2, 1), TARGET, TARGET_MASK
    )
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    assert item_tokens.grad is not None and item_tokens.grad.abs().sum() > 0
