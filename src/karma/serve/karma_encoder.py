"""The real KARMA encoder (`karma.model.encoder.KarmaEncoder`) behind the `InterestEncoder` protocol.

`KarmaEncoder` works on item indices of the catalog it was built with (it tokenizes every item text
once). Serving speaks item text, so this adapter keeps a text -> index map; a text it has not seen
(an item added after training) is tokenized and appended to the encoder's item tables, after which
both towers treat it like any trained item — no retraining, because an item token is computed from
its text (x_i = P_item(pool(E_tok(text_i)))).

Exported: the LLM's decoder (LoRA merged) and input embeddings, P_item, [INTEREST], W_u, W_v (and
the item-ID table if the ablation was on). The LM head (generation / reconstruction decoding) and
every knowledge-objective head stay out: they live outside `KarmaModel.encoder` or under `lm_head`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from karma.config import from_dict, to_dict
from karma.errors import KarmaError
from karma.model.config import EncoderConfig
from karma.model.encoder import KarmaEncoder
from karma.serve.fast_decoder import PrefixCachedDecoder

KIND = "karma"
BACKBONE_DIR = "backbone"
TOKENIZER_DIR = "tokenizer"


class KarmaInterestEncoder(nn.Module):
    """`InterestEncoder` over a `KarmaEncoder` (see the module docstring)."""

    kind = KIND

    def __init__(self, encoder: KarmaEncoder, item_texts: list[str]) -> None:
        super().__init__()
        if len(item_texts) != encoder.num_items:
            raise ValueError(f"{len(item_texts)} texts for {encoder.num_items} encoder items")
        self.encoder = encoder
        self.embedding_dim = encoder.embedding_dim
        self._index_of: dict[str, int] = {}
        self.readout_pass: PrefixCachedDecoder | None = None  # built by after_load (serving)
        for i, text in enumerate(item_texts):
            self._index_of.setdefault(text, i)
        # Every child of the causal LM except its output head (the LM head decodes text: train only).
        output = encoder.backbone.get_output_embeddings()
        children = [n for n, m in encoder.backbone.named_children() if m is not output]
        self.serving_prefixes: tuple[str, ...] = (
            *(f"encoder.backbone.{n}." for n in children),
            "encoder.item_projection.",
            "encoder.interest_token",
            "encoder.user_head.",
            "encoder.item_head.",
            "encoder.item_id_embedding.",
        )

    def encoder_config(self) -> dict[str, Any]:
        return {
            "encoder": to_dict(self.encoder.config),
            "mode": self.encoder.mode,
            "max_history": self.encoder.max_history,
        }

    def save_assets(self, directory: Path) -> bool:
        """Tokenizer and backbone config.json: what `build_from_config` rebuilds the LLM from."""
        self.encoder.tokenizer.save_pretrained(str(directory / TOKENIZER_DIR))
        self.encoder.backbone.config.save_pretrained(str(directory / BACKBONE_DIR))
        return True

    def after_load(self) -> None:
        """Recompute the pooled item-text cache from the loaded (not the random) embedding table."""
        enc = self.encoder
        enc.refresh_item_cache()
        if PrefixCachedDecoder.supports(enc):
            self.readout_pass = PrefixCachedDecoder(enc)

    # --- catalog ----------------------------------------------------------------------------

    def _indices(self, texts: Sequence[str]) -> list[int]:
        """Catalog indices of item texts, appending texts never seen before."""
        new = list(dict.fromkeys(t for t in texts if t not in self._index_of))
        if new:
            self._append_items(new)
        return [self._index_of[t] for t in texts]

    def _append_items(self, texts: list[str]) -> None:
        enc = self.encoder
        if enc.item_features is not None or enc.item_id_embedding is not None:
            raise KarmaError(
                "this model needs per-item features or ID embeddings, which new items do not have; "
                "items can be added from text alone only to text-only models"
            )
        ids, mask = enc._item_text_matrix(texts)  # (M, L')
        width = max(ids.shape[1], enc.item_text_ids.shape[1])
        old_ids = nn.functional.pad(enc.item_text_ids, (0, width - enc.item_text_ids.shape[1]))
        old_mask = nn.functional.pad(enc.item_text_mask, (0, width - enc.item_text_mask.shape[1]))
        device = old_ids.device
        enc.item_text_ids = torch.cat(
            [old_ids, nn.functional.pad(ids, (0, width - ids.shape[1])).to(device)]
        )
        enc.item_text_mask = torch.cat(
            [old_mask, nn.functional.pad(mask, (0, width - mask.shape[1])).to(device)]
        )
        start = enc.num_items
        enc.num_items += len(texts)
        new_index = torch.arange(start, enc.num_items, device=device)
        if enc.pooled_item_text is not None:
            with torch.no_grad():
                enc.pooled_item_text = torch.cat([enc.pooled_item_text, enc._pool_text(new_index)])
        for offset, text in enumerate(texts):
            self._index_of[text] = start + offset

    # --- the protocol -----------------------------------------------------------------------

    @torch.no_grad()
    def item_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        index = torch.tensor(self._indices(texts), dtype=torch.int64)
        return self.encoder.item_embeddings(index).float().cpu().numpy()  # (N, e)

    @torch.no_grad()  # (the readout pass runs in inference mode itself)
    def interest_embeddings(
        self, histories: Sequence[Sequence[str]], queries: Sequence[str | None]
    ) -> np.ndarray:
        indexed = [np.asarray(self._indices(h), dtype=np.int64) for h in histories]
        if self.readout_pass is not None:  # same maths, only the readout position's work
            layout = self.encoder.layout(indexed, list(queries))
            hidden = self.readout_pass.readout_hidden(layout)  # (B, d)
            return self.encoder.interest_embeddings(hidden).float().cpu().numpy()  # (B, e)
        users = self.encoder.encode_users(indexed, list(queries), batch_size=max(1, len(indexed)))
        return users.float().cpu().numpy()  # (B, e)


def build_from_config(artifact_dir: Path, config: dict[str, Any]) -> nn.Module:
    """Registry builder: the LLM from its saved config (random weights), then the encoder."""
    import pandas as pd
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    backbone = AutoModelForCausalLM.from_config(
        AutoConfig.from_pretrained(artifact_dir / BACKBONE_DIR)
    )
    tokenizer = AutoTokenizer.from_pretrained(str(artifact_dir / TOKENIZER_DIR))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    backbone.get_input_embeddings().weight.requires_grad = False  # frozen table -> pooled cache
    texts = (
        pd.read_parquet(artifact_dir / "items.parquet", columns=["text"])["text"]
        .astype(str)
        .tolist()
    )
    encoder = KarmaEncoder(
        from_dict(EncoderConfig, config["encoder"]),
        backbone,
        tokenizer,
        texts,
        mode=config["mode"],
        max_history=config["max_history"],
    )
    return KarmaInterestEncoder(encoder, texts)
