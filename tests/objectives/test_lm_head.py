"""The head-only-on-labels NLL against hand-computed cross-entropy and the full-logits reference."""

from __future__ import annotations

import pytest
import torch
from knowledge_fixtures import HIDDEN, VOCAB, tiny_llama, tiny_lora_llama

from karma.errors import ConfigError
from karma.objectives.lm_head import (
    IGNORE_INDEX,
    adapters_disabled,
    compact_prefix_and_target,
    decoder_parts,
    full_logits_target_token_nll,
    target_token_nll,
)


def _manual_nll(model, prefix: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-mean_j log p(target_j | prefix, target_<j) for ONE unpadded row, from full logits."""
    embeds = torch.cat([prefix, model.get_input_embeddings()(target)], dim=0)[None]  # (1, P+Y, d)
    log_probs = model(inputs_embeds=embeds).logits[0].log_softmax(-1)  # (P+Y, V)
    p = prefix.shape[0]
    picked = [log_probs[p - 1 + j, target[j]] for j in range(len(target))]
    return -torch.stack(picked).mean()


def test_loss_is_cross_entropy_over_target_tokens_only() -> None:
    model = tiny_llama()
    prefix = torch.randn(4, HIDDEN)
    target = torch.tensor([5, 17, 3])
    loss, n = target_token_nll(
        model, prefix[None], torch.ones(1, 4, dtype=torch.bool), target[None], torch.ones(1, 3)
    )
    assert n == 3
    torch.testing.assert_close(loss, _manual_nll(model, prefix, target))


def test_padding_anywhere_gives_the_token_mean_of_the_unpadded_rows() -> None:
    model = tiny_llama()
    torch.manual_seed(1)
    prefixes = [torch.randn(4, HIDDEN), torch.randn(2, HIDDEN), torch.randn(3, HIDDEN)]
    targets = [torch.tensor([5, 17, 3]), torch.tensor([9]), torch.tensor([1, 2])]
    # Row 0 unpadded, row 1 left-padded prefix, row 2 right-padded prefix; targets right-padded.
    prefix_embeds = torch.randn(3, 4, HIDDEN)  # padding positions hold noise on purpose
    prefix_mask = torch.zeros(3, 4, dtype=torch.bool)
    prefix_embeds[0], prefix_mask[0] = prefixes[0], True
    prefix_embeds[1, 2:], prefix_mask[1, 2:] = prefixes[1], True
    prefix_embeds[2, :3], prefix_mask[2, :3] = prefixes[2], True
    target_ids = torch.full((3, 3), 7)
    target_mask = torch.zeros(3, 3, dtype=torch.bool)
    for row, target in enumerate(targets):
        target_ids[row, : len(target)], target_mask[row, : len(target)] = target, True

    loss, n = target_token_nll(model, prefix_embeds, prefix_mask, target_ids, target_mask)
    per_row = [_manual_nll(model, p, t) * len(t) for p, t in zip(prefixes, targets)]
    assert n == 6
    torch.testing.assert_close(loss, torch.stack(per_row).sum() / 6)


def test_fast_path_equals_full_logits_path_in_value_and_gradient() -> None:
    model = tiny_llama()
    torch.manual_seed(2)
    prefix = torch.randn(3, 5, HIDDEN, requires_grad=True)
    prefix_mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [1, 1, 0, 0, 0]]).bool()
    target_ids = torch.randint(0, VOCAB, (3, 4))
    target_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]]).bool()
    fast, _ = target_token_nll(model, prefix, prefix_mask, target_ids, target_mask)
    (fast_grad,) = torch.autograd.grad(fast, prefix)
    slow = full_logits_target_token_nll(model, prefix, prefix_mask, target_ids, target_mask)
    (slow_grad,) = torch.autograd.grad(slow, prefix)
    torch.testing.assert_close(fast, slow)
    torch.testing.assert_close(fast_grad, slow_grad)


def test_lm_head_sees_only_the_labelled_positions() -> None:
    model = tiny_llama()
    rows_seen: list[int] = []
    _, lm_head, _ = decoder_parts(model)
    handle = lm_head.register_forward_pre_hook(lambda m, args: rows_seen.append(args[0].shape[0]))
    target_mask = torch.tensor([[1, 1, 1], [1, 0, 0]]).bool()
    _, n = target_token_nll(
        model, torch.randn(2, 6, HIDDEN), torch.ones(2, 6), torch.ones(2, 3).long(), target_mask
    )
    handle.remove()
    assert rows_seen == [n] == [4]  # one (N, d) call, never (B, L, d)


def test_compaction_moves_real_tokens_first_and_trims_common_padding() -> None:
    prefix = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]).unsqueeze(-1)  # (2, 3, 1)
    target_embeds = torch.tensor([[10.0, 11.0], [12.0, 13.0]]).unsqueeze(-1)  # (2, 2, 1)
    embeds, mask, labels = compact_prefix_and_target(
        prefix,
        torch.tensor([[0, 1, 1], [0, 0, 1]]),
        target_embeds,
        torch.tensor([[4, 6], [7, 8]]),
        torch.tensor([[1, 0], [1, 1]]),
    )
    # row 0: 2 prefix + 1 target = 3 real; row 1: 1 + 2 = 3 real; width 5 -> 3
    assert embeds[..., 0].tolist() == [[1.0, 2.0, 10.0], [5.0, 12.0, 13.0]]
    assert mask.all()
    assert labels.tolist() == [[IGNORE_INDEX, IGNORE_INDEX, 4], [IGNORE_INDEX, 7, 8]]


def test_no_target_tokens_gives_zero_loss() -> None:
    loss, n = target_token_nll(
        tiny_llama(), torch.randn(1, 2, HIDDEN), torch.ones(1, 2), torch.ones(1, 2).long(),
        torch.zeros(1, 2),
    )  # fmt: skip
    assert n == 0 and float(loss.detach()) == 0.0


def test_adapters_disabled_gives_the_base_model() -> None:
    lora = tiny_lora_llama()
    prefix, mask = torch.randn(1, 3, HIDDEN), torch.ones(1, 3)
    target, target_mask = torch.tensor([[4, 8]]), torch.ones(1, 2)
    with_adapters, _ = target_token_nll(lora, prefix, mask, target, target_mask)
    with adapters_disabled(lora):
        without, _ = target_token_nll(lora, prefix, mask, target, target_mask)
    base, _ = target_token_nll(tiny_llama(), prefix, mask, target, target_mask)
    torch.testing.assert_close(without, base)
    assert not torch.allclose(with_adapters, base)


def test_adapters_disabled_rejects_full_fine_tuning() -> None:
    with (
        pytest.raises(ConfigError, match="reconstruction_decoder"),
        adapters_disabled(tiny_llama()),
    ):
        pass


def test_adapters_disabled_accepts_a_frozen_backbone() -> None:
    model = tiny_llama().requires_grad_(False)
    with adapters_disabled(model):
        pass


def test_manual_reference_is_sensitive_to_the_target() -> None:
    """Guard: the hand-computed reference itself distinguishes targets (the tests can fail)."""
    model = tiny_llama()
    prefix = torch.randn(2, HIDDEN)
    a = _manual_nll(model, prefix, torch.tensor([1, 2]))
    b = _manual_nll(model, prefix, torch.tensor([2, 1]))
    assert not torch.allclose(a, b)


def test_adapters_disabled_with_injected_lora_restores_state() -> None:
    """karma's backbone loader injects LoRA with `inject_adapter_in_model` (no PeftModel)."""
    from peft import LoraConfig, inject_adapter_in_model

    model = tiny_llama()
    inject_adapter_in_model(LoraConfig(r=4, target_modules=["q_proj", "v_proj"]), model)
    for name, param in model.named_parameters():
        param.requires_grad = "lora_" in name
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    prefix, mask = torch.randn(1, 3, HIDDEN), torch.ones(1, 3)
    target, target_mask = torch.tensor([[4, 8]]), torch.ones(1, 2)
    with adapters_disabled(model):
        without, _ = target_token_nll(model, prefix, mask, target, target_mask)
    torch.testing.assert_close(
        without, target_token_nll(tiny_llama(), prefix, mask, target, target_mask)[0]
    )
    with_adapters, _ = target_token_nll(model, prefix, mask, target, target_mask)
    assert not torch.allclose(with_adapters, without)
    assert all(p.requires_grad == ("lora_" in n) for n, p in model.named_parameters())
