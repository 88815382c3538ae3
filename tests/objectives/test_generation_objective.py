"""L_gen: the objective, per-readout prefixes, and the catalog token table."""

from __future__ import annotations

import torch
from knowledge_fixtures import HIDDEN, tiny_llama

from karma.objectives.generation import GenerationObjective, prefixes_at, tokenize_item_texts
from karma.objectives.lm_head import target_token_nll


def test_generation_loss_is_target_nll_after_the_history_prefix() -> None:
    model = tiny_llama()
    prefix = torch.randn(2, 4, HIDDEN, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]).bool()
    target, target_mask = torch.tensor([[3, 4], [5, 0]]), torch.tensor([[1, 1], [1, 0]]).bool()
    out = GenerationObjective()(model, prefix, mask, target, target_mask)
    expected, n = target_token_nll(model, prefix, mask, target, target_mask)
    torch.testing.assert_close(out.loss, expected)
    assert out.parts["gen_tokens"] == n == 3
    out.loss.backward()
    assert prefix.grad is not None and prefix.grad[0].abs().sum() > 0  # trains the history tokens
    assert prefix.grad[1, 2:].abs().sum() == 0  # masked positions get nothing


def test_prefixes_at_cuts_each_sequence_after_its_readout() -> None:
    embeds = torch.arange(2 * 4, dtype=torch.float32).view(2, 4, 1)
    attention = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    prefix, mask = prefixes_at(embeds, attention, torch.tensor([0, 1, 1]), torch.tensor([1, 0, 3]))
    assert prefix[:, :, 0].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [4, 5, 6, 7]]
    assert mask.int().tolist() == [[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]]


def test_prefix_at_readout_equals_running_the_cut_sequence() -> None:
    """Masking after the readout is the same as cutting the sequence there."""
    model = tiny_llama()
    embeds = torch.randn(1, 5, HIDDEN)
    target, target_mask = torch.tensor([[7, 8]]), torch.ones(1, 2)
    prefix, mask = prefixes_at(embeds, torch.ones(1, 5), torch.tensor([0]), torch.tensor([2]))
    masked, _ = target_token_nll(model, prefix, mask, target, target_mask)
    cut, _ = target_token_nll(model, embeds[:, :3], torch.ones(1, 3), target, target_mask)
    torch.testing.assert_close(masked, cut)


class _WordTokenizer:
    """Each whitespace word is one token: its length; EOS = 99."""

    eos_token_id = 99

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [len(word) for word in text.split()]}


def test_tokenize_item_texts_truncates_ends_with_eos_and_pads() -> None:
    ids, mask = tokenize_item_texts(_WordTokenizer(), ["a bb ccc dddd", "ee"], max_tokens=3)
    assert ids.tolist() == [[1, 2, 99], [2, 99, 0]]
    assert mask.int().tolist() == [[1, 1, 1], [1, 1, 0]]
    ids, _ = tokenize_item_texts(_WordTokenizer(), ["a bb"], max_tokens=3, add_eos=False)
    assert ids.tolist() == [[1, 2]]
