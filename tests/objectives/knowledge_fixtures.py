"""Tiny random decoders for the knowledge-objective tests (built from a config; no download)."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

HIDDEN = 32
VOCAB = 101


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    """A 2-layer Llama with hidden size 32 and a 101-token vocabulary, in eval mode (no dropout)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        max_position_embeddings=128,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


def tiny_lora_llama(seed: int = 0):  # -> peft.PeftModel
    """`tiny_llama` with LoRA adapters on q/v, lora_B made non-zero so adapters change outputs."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        tiny_llama(seed), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    return model.eval()


class CallCounter:
    """Counts forward calls of a module through a forward pre-hook."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.calls = 0
        self.handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, module: torch.nn.Module, args: object) -> None:
        self.calls += 1
