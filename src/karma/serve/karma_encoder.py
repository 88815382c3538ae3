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

from collections.abc import Callable, Sequence
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
FeatureEncoder = Callable[[dict[str, Any] | None, list[str]], np.ndarray]
"""(feature source, new item texts) -> (M, f) feature rows; `karma add-items` installs one."""
BACKBONE_DIR = "backbone"
TOKENIZER_DIR = "tokenizer"


class KarmaInterestEncoder(nn.Module):
    """`InterestEncoder` over a `KarmaEncoder` (see the module docstring)."""

    kind = KIND
    feature_encoder: FeatureEncoder | None = None  # set by `karma add-items` (it may import data)

    def __init__(
        self,
        encoder: KarmaEncoder,
        item_texts: list[str],
        feature_source: dict[str, Any] | None = None,
    ) -> None:
        """`feature_source`: how new items get feature rows (`karma.serve.item_features`)."""
        super().__init__()
        self.feature_source = feature_source
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
            "encoder.item_residual.",
        )

    def encoder_config(self) -> dict[str, Any]:
        return {
            "encoder": to_dict(self.encoder.config),
            "mode": self.encoder.mode,
            "max_history": self.encoder.max_history,
            "feature_source": self.feature_source,
        }

    def save_assets(self, directory: Path) -> bool:
        """Tokenizer and backbone config.json: what `build_from_config` rebuilds the LLM from."""
        self.encoder.tokenizer.save_pretrained(str(directory / TOKENIZER_DIR))
        self.encoder.backbone.config.save_pretrained(str(directory / BACKBONE_DIR))
        self.save_item_inputs(directory)
        return True

    def save_item_inputs(self, directory: Path) -> None:
        """Features / backbone item-text states, rows = the current catalog (artifact layout)."""
        from karma.serve.artifact import save_item_inputs

        save_item_inputs(directory, self.encoder.item_input_tables())

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
        features = None
        if enc.item_features is not None:
            if self.feature_encoder is None:
                raise KarmaError(
                    "this model needs item features for new items; add them with `karma add-items`"
                )
            features = self.feature_encoder(self.feature_source, texts)
        start = enc.num_items
        enc.append_items(texts, features)
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
    from karma.serve.artifact import load_item_inputs

    inputs = load_item_inputs(artifact_dir)
    features = inputs.get("item_features")
    try:
        encoder = KarmaEncoder(
            from_dict(EncoderConfig, config["encoder"]),
            backbone,
            tokenizer,
            texts,
            features=features.numpy() if features is not None else None,
            mode=config["mode"],
            max_history=config["max_history"],
            item_text_states=inputs.get("item_text_states"),
        )
    except ValueError as exc:  # item inputs missing or not aligned with items.parquet
        raise KarmaError(f"{artifact_dir}: {exc}") from None
    return KarmaInterestEncoder(encoder, texts, config.get("feature_source"))
