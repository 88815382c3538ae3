"""Readout attention collection on a tiny random Llama (eager only for the call)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from karma.data.dataset import Examples
from karma.diagnostics.attention import (
    ReadoutAttention,
    ReadoutInputs,
    collect_readout_attention,
    eager_attention,
    readout_attention,
)


def _tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=50,
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(config)


def _left_padded_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1]])
    embeds = torch.randn(3, 6, 32)  # (B, L, d)
    readout = torch.tensor([5, 5, 4])  # user 2 reads out before its last token
    return embeds, mask, readout


def test_rows_sum_to_one_over_real_causal_positions() -> None:
    model = _tiny_llama()
    embeds, mask, readout = _left_padded_batch()
    rows = readout_attention(model, embeds, mask, readout)
    assert rows.shape == (2, 3, 4, 6)  # (layers, B, heads, L)
    assert torch.allclose(rows.sum(-1), torch.ones(2, 3, 4), atol=1e-5)
    assert (rows[:, 0, :, :2] == 0).all()  # padding gets nothing
    assert (rows[:, 2, :, 5] == 0).all()  # the future after the readout gets nothing
    assert model.config._attn_implementation == "sdpa"


def test_implementation_is_restored_after_an_error() -> None:
    model = _tiny_llama()
    with pytest.raises(RuntimeError), eager_attention(model):
        assert model.config._attn_implementation == "eager"
        raise RuntimeError("boom")
    assert model.config._attn_implementation == "sdpa"


def test_peft_wrapped_model_gives_the_same_rows_as_its_base() -> None:
    peft = pytest.importorskip("peft")
    model = _tiny_llama()
    embeds, mask, readout = _left_padded_batch()
    plain = readout_attention(model, embeds, mask, readout)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    wrapped = readout_attention(lora, embeds, mask, readout)  # LoRA B starts at 0: same maths
    assert torch.allclose(plain, wrapped, atol=1e-6)
    assert lora.get_base_model().config._attn_implementation == "sdpa"


class _FakeEncoder:
    """Stands in for the model package's encoder: one position per history item + readout."""

    def __init__(self) -> None:
        self.backbone = _tiny_llama()
        self.item_table = torch.randn(20, 32)

    def readout_inputs(self, examples: Examples) -> ReadoutInputs:
        length = max(len(h) for h in examples.histories) + 2  # BOS + history + [INTEREST]
        embeds = torch.zeros(len(examples), length, 32)
        mask = torch.zeros(len(examples), length, dtype=torch.long)
        history = torch.zeros(len(examples), length, dtype=torch.bool)
        for u, items in enumerate(examples.histories):
            start = length - len(items) - 2  # left padding
            embeds[u, start + 1 : length - 1] = self.item_table[torch.as_tensor(items)]
            mask[u, start:] = 1
            history[u, start + 1 : length - 1] = True
        return ReadoutInputs(embeds, mask, torch.full((len(examples),), length - 1), history)


def test_collect_pads_batches_of_different_lengths(tmp_path) -> None:
    histories = [np.arange(n, dtype=np.int64) for n in (3, 5, 2, 7, 4)]
    examples = Examples([str(i) for i in range(5)], histories, np.zeros(5, np.int64), [None] * 5)
    result = collect_readout_attention(_FakeEncoder(), examples, batch_size=2, progress=False)
    assert result.weights.shape == (2, 5, 4, 9)  # longest batch: 7 items + 2
    assert result.history_mask.sum(-1).tolist() == [3, 5, 2, 7, 4]
    sums = result.weights.sum(-1)  # rows of shorter batches are padded with zeros
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)
    result.save(str(tmp_path / "a.pt"))
    loaded = ReadoutAttention.load(str(tmp_path / "a.pt"))
    assert torch.equal(loaded.weights, result.weights)
