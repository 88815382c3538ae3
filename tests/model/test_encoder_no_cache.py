"""The encoder's LLM passes build no KV cache (nothing decodes after them; under torch.compile a
cache's changing state recompiles every decoder layer, which the GPU throughput run exposed)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from karma.model.backbone import load_backbone
from karma.model.config import BackboneConfig, EncoderConfig
from karma.model.encoder import KarmaEncoder

TEXTS = [f"Item {i} {['comedy', 'drama', 'space'][i % 3]}" for i in range(8)]


def test_history_and_llm_item_tower_passes_ask_for_no_cache() -> None:
    torch.manual_seed(0)
    backbone, tokenizer = load_backbone(BackboneConfig(name="tiny", tuning="full"))
    config = EncoderConfig(embedding_dim=8, item_text_tokens=6, item_tower="llm")
    encoder = KarmaEncoder(config, backbone, tokenizer, TEXTS, max_history=10)
    seen: list[Any] = []

    def record(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        seen.append(kwargs.get("use_cache"))

    decoder = backbone.get_decoder()
    decoder.register_forward_pre_hook(record, with_kwargs=True)
    caches: list[Any] = []
    decoder.register_forward_hook(lambda m, a, out: caches.append(out.past_key_values))
    layout = encoder.layout([np.array([1, 2, 3]), np.array([4])])
    encoder.hidden_states(layout)  # the history pass (training and encode_users)
    encoder.item_embeddings(torch.tensor([0, 5]))  # the LLM item tower
    assert seen == [False, False]
    assert caches == [None, None]
