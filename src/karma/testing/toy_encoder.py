"""A tiny bag-of-words interest encoder that implements `InterestEncoder` without an LLM.

It mirrors the shape of the real model so that export, the index and the service can be tested and
benchmarked in seconds: a token-embedding table (the LLM's `E_tok`), an item projection `P_item`
over the pooled text, a small "backbone" over the continuous item tokens, and the two output
projections `W_u` (interest) and `W_v` (item tower). With `with_train_heads=True` it also carries
the training-only heads of a KARMA run (an LM head, the reconstruction prefix map `g` and a flow
head), which export must strip. Words are hashed (crc32) into the vocabulary, so no tokenizer files
are needed.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from karma.serve.protocol import register_encoder

KIND = "toy"
_WORD = re.compile(r"[a-z0-9]+")


class ToyBackbone(nn.Module):
    """Recency-weighted mean of the sequence, then residual tanh MLP layers (LoRA targets)."""

    def __init__(self, hidden_size: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(hidden_size, hidden_size) for _ in range(num_layers))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # tokens (B, T, d), mask (B, T) -> (B, d); later positions weigh more, as recent clicks do.
        positions = torch.arange(1, tokens.shape[1] + 1, dtype=tokens.dtype, device=tokens.device)
        weights = mask.to(tokens.dtype) * positions  # (B, T)
        weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-6)
        h = torch.einsum("bt,btd->bd", weights, tokens)  # (B, d)
        for layer in self.layers:
            h = h + torch.tanh(layer(h))
        return h


class ToyInterestEncoder(nn.Module):
    """See the module docstring; sizes are tiny and weights random unless trained."""

    kind = KIND
    serving_prefixes = (
        "token_embedding.",
        "item_projection.",
        "backbone.",
        "interest_projection.",
        "item_output_projection.",
    )

    def __init__(
        self,
        vocab_size: int = 512,
        hidden_size: int = 32,
        embedding_dim: int = 16,
        num_layers: int = 2,
        feature_dim: int = 8,
        with_train_heads: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.embedding_dim = embedding_dim
        self.num_layers = num_layers
        self.token_embedding = nn.Embedding(vocab_size, hidden_size, padding_idx=0)
        self.item_projection = nn.Linear(hidden_size, hidden_size)
        self.backbone = ToyBackbone(hidden_size, num_layers)
        self.interest_projection = nn.Linear(hidden_size, embedding_dim)
        self.item_output_projection = nn.Linear(hidden_size, embedding_dim)
        if with_train_heads:
            # What a KARMA run trains on top of the serving path (never exported).
            self.lm_head = nn.Linear(hidden_size, vocab_size, bias=False)
            self.reconstruction_prefix_map = nn.Linear(embedding_dim, hidden_size)
            self.flow_head = nn.Sequential(
                nn.Linear(feature_dim + embedding_dim + 1, hidden_size),
                nn.SiLU(),
                nn.Linear(hidden_size, feature_dim),
            )

    def encoder_config(self) -> dict[str, Any]:
        return {
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "embedding_dim": self.embedding_dim,
            "num_layers": self.num_layers,
        }

    def _token_ids(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Hashed word ids (N, L) padded with 0, and the mask (N, L)."""
        ids = [
            [1 + zlib.crc32(w.encode()) % (self.vocab_size - 1) for w in _WORD.findall(t.lower())]
            for t in texts
        ]
        width = max([1, *(len(row) for row in ids)])
        out = torch.zeros(len(texts), width, dtype=torch.long)
        for i, row in enumerate(ids):
            out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        return out, out != 0

    def continuous_tokens(self, texts: Sequence[str]) -> torch.Tensor:
        """x_i = P_item(mean_tokens(E_tok(text_i))): (N, d)."""
        ids, mask = self._token_ids(texts)
        emb = self.token_embedding(ids)  # (N, L, d)
        pooled = (emb * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
        return self.item_projection(pooled)  # (N, d)

    @torch.no_grad()
    def item_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        x = self.continuous_tokens(texts)  # (N, d)
        return F.normalize(self.item_output_projection(x), dim=-1).numpy().astype(np.float32)

    @torch.no_grad()
    def interest_embeddings(
        self, histories: Sequence[Sequence[str]], queries: Sequence[str | None]
    ) -> np.ndarray:
        batch = len(histories)
        # The query enters as one more continuous token before the history (empty when absent).
        sequences = [[q or "", *h] for h, q in zip(histories, queries)]
        length = max(len(s) for s in sequences)
        flat = [text for s in sequences for text in s]
        x = self.continuous_tokens(flat)  # (sum n, d)
        tokens = torch.zeros(batch, length, self.hidden_size)
        mask = torch.zeros(batch, length, dtype=torch.bool)
        row = 0
        for b, s in enumerate(sequences):
            tokens[b, : len(s)] = x[row : row + len(s)]
            mask[b, : len(s)] = True
            mask[b, 0] = bool(s[0])  # no query -> position 0 is padding
            row += len(s)
        h = self.backbone(tokens, mask)  # (B, d)
        return F.normalize(self.interest_projection(h), dim=-1).numpy().astype(np.float32)


def build_from_config(artifact_dir: Path, config: dict[str, Any]) -> nn.Module:
    """Registry builder: an untrained `ToyInterestEncoder` of the exported sizes."""
    del artifact_dir  # the toy encoder has no assets besides its weights
    return ToyInterestEncoder(**config)


def register_toy_encoder() -> None:
    """Make artifacts of kind "toy" loadable (tests call this; production never does)."""
    register_encoder(KIND, build_from_config)
