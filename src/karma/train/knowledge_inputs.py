"""From a KARMA training batch to the tensors the knowledge objectives read (`KnowledgeBatch`).

The objectives themselves (karma.objectives.{generation,reconstruction,flow,knowledge}) work on
plain tensors; this module is the glue to the encoder's sequence layout:

- readout positions: in rec mode every item position is a readout (all-prefix training), and
  `positions_per_sequence` of them are sampled per sequence, so L_gen / L_rec / L_flow cost a
  bounded fraction of a step however long the histories are; in search mode the one readout per
  sequence ([INTEREST]) is used.
- L_gen's prefix at a readout is the encoder's own LLM input up to that position (`prefixes_at`).
- target text and features are looked up in catalog tables built once (`KnowledgeCatalog`).
- e_u at the sampled readouts is either the task's own readout row (one forward, the default) or,
  with `separate_readout`, re-read by a forward over the sampled sequences only (`interest_at`):
  the same value, but a backward of L_rec / L_flow *alone* then runs through those few rows instead
  of the whole batch. That is what a per-term backward (`GradientBalancer` under gradient control)
  needs: its L_rec and L_flow passes otherwise each cost as much as the action term's.
- warm-up's item-text loss reads random catalog items, so rarely clicked items align as well as
  popular ones; the new-item protocol's cold items are left out (they do not exist while training).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from karma.model.encoder import KarmaEncoder
from karma.objectives.base import Stage
from karma.objectives.generation import prefixes_at, tokenize_item_texts
from karma.objectives.knowledge import KnowledgeBatch, KnowledgeConfig, sample_readout_positions


class KnowledgeCatalog(nn.Module):
    """Per-item target tables as non-persistent buffers (they follow the model to its device)."""

    def __init__(
        self,
        tokenizer: Any,
        item_texts: list[str],
        max_tokens: int,
        features: np.ndarray | None = None,
        standardize_features: bool = True,
        trainable_items: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        ids, mask = tokenize_item_texts(tokenizer, item_texts, max_tokens)
        trainable = (
            np.ones(len(item_texts), dtype=bool)
            if trainable_items is None
            else np.asarray(trainable_items, dtype=bool)
        )
        # (N_warm,) int64: the items the warm-up's item-text loss may draw.
        self.register_buffer(
            "trainable_ids", torch.from_numpy(np.flatnonzero(trainable)), persistent=False
        )
        self.register_buffer("text_ids", ids, persistent=False)  # (N, Y) int64
        self.register_buffer("text_mask", mask, persistent=False)  # (N, Y) bool
        feature_tensor = (
            torch.as_tensor(features, dtype=torch.float32) if features is not None else None
        )
        if feature_tensor is not None and standardize_features:
            # Text-encoder features are often L2-normalised (per-dimension scale ~1/sqrt(D)); the
            # flow's noise is N(0, I), so without this the path would be almost all noise.
            mean, std = feature_tensor.mean(0), feature_tensor.std(0).clamp(min=1e-6)
            feature_tensor = (feature_tensor - mean) / std  # (N, D)
        self.register_buffer("features", feature_tensor, persistent=False)  # (N, D) or None


def build_knowledge_batch(
    encoder: KarmaEncoder,
    catalog: KnowledgeCatalog,
    config: KnowledgeConfig,
    stage: Stage,
    histories: list[np.ndarray],
    queries: list[str | None] | None,
    targets: np.ndarray,
    interest_embedding: torch.Tensor | None,
    seed: int,
    weights: dict[str, float] | None = None,
    separate_readout: bool = False,
) -> KnowledgeBatch:
    """The inputs `stage`'s non-zero knowledge weights need, and nothing else.

    `targets` are the batch's targets ((B, n_max), -1 = padding, in rec mode; (B,) in search mode)
    and `interest_embedding` the task's (K, e) readout rows, one per valid target in row-major
    order (None when the stage needs no readout, or with `separate_readout`, which re-reads e_u by
    a forward over the sampled sequences: `interest_at`). `weights` (scheduled by the task) default
    to `config.weights(stage)`.
    """
    weights = weights if weights is not None else config.weights(stage)
    generator = torch.Generator().manual_seed(seed + 1)  # +1: not the negative sampler's stream
    out = KnowledgeBatch()
    if weights["item_text"] > 0:
        draws = torch.randint(
            len(catalog.trainable_ids), (config.warmup_items_per_batch,), generator=generator
        )
        items = catalog.trainable_ids[draws.to(catalog.trainable_ids.device)]
        out.item_tokens = encoder.item_tokens(items)  # (K, d)
        out.item_text_ids, out.item_text_mask = catalog.text_ids[items], catalog.text_mask[items]
    if not (weights["generation"] > 0 or weights["reconstruction"] > 0 or weights["flow"] > 0):
        return out
    if interest_embedding is None and not separate_readout:
        raise ValueError("interest_embedding: generation, reconstruction and flow read e_u")

    device = encoder.item_text_ids.device
    layout = encoder.layout(histories, queries)
    target_t = torch.as_tensor(targets, device=device)
    if target_t.ndim == 2:  # rec: every valid item position is a readout; sample a few per row
        valid = target_t >= 0  # (B, n_max)
        rows, slots = sample_readout_positions(
            valid.cpu(), config.positions_per_sequence, generator, config.sequences_per_batch
        )
        rows, slots = rows.to(device), slots.to(device)
        flat_index = (valid.flatten().long().cumsum(0) - 1).view_as(valid)  # row of e_u per slot
        picked = flat_index[rows, slots]  # (M,)
        target_items = target_t[rows, slots]  # (M,)
        readout = layout.item_positions[rows, slots]  # (M,)
        at: torch.Tensor | None = slots
    else:  # search: one readout per sequence, at [INTEREST]
        rows = torch.arange(len(target_t), device=device)
        limit = config.sequences_per_batch
        if limit is not None and len(rows) > limit:
            chosen = torch.randperm(len(rows), generator=generator)[:limit].sort().values
            rows = rows[chosen.to(device)]
        picked, target_items = rows, target_t[rows]
        readout = layout.readout_positions[rows]
        at = None

    # A separate forward pays only when the samples leave some of the batch's sequences out.
    separate = separate_readout and (
        interest_embedding is None or len(rows.unique()) < len(histories)
    )
    if not separate:
        assert interest_embedding is not None
        out.interest_embedding = interest_embedding[picked]  # (M, e)
    elif weights["reconstruction"] > 0 or weights["flow"] > 0:  # the terms that read e_u
        out.interest_embedding = interest_at(encoder, histories, queries, rows, at)  # (M, e)
    out.target_ids, out.target_mask = (
        catalog.text_ids[target_items],
        catalog.text_mask[target_items],
    )
    if weights["generation"] > 0:
        inputs_embeds = encoder.inputs_embeds(layout)  # (B, T, d)
        out.prefix_embeds, out.prefix_mask = prefixes_at(
            inputs_embeds, layout.attention_mask, rows, readout
        )
    if weights["flow"] > 0:
        if catalog.features is None:
            raise ValueError("features: flow_weight > 0 needs the catalog's item features")
        out.target_features = catalog.features[target_items]  # (M, D)
    return out


def interest_at(
    encoder: KarmaEncoder,
    histories: list[np.ndarray],
    queries: list[str | None] | None,
    rows: torch.Tensor,
    slots: torch.Tensor | None,
) -> torch.Tensor:
    """(M, e) e_u of sequence `rows[m]` read out at item slot `slots[m]` (rec mode, all-prefix
    training) or at its readout position (`slots` None: search mode's [INTEREST]), from a forward
    over those sequences only.

    Rows are right-padded, so a row's hidden states do not depend on the rest of its batch: this is
    the same value as the full batch's readout row, computed on its own graph.
    """
    unique, inverse = rows.unique(return_inverse=True)
    index = unique.tolist()
    layout = encoder.layout(
        [histories[i] for i in index],
        [queries[i] for i in index] if queries is not None else None,
    )
    hidden = encoder.hidden_states(layout)  # (U, T, d)
    if slots is None:
        h = encoder.readout(layout, hidden)[inverse]  # (M, d)
    else:
        h = encoder.readout(layout, hidden, all_prefixes=True)[inverse, slots]  # (M, d)
    return encoder.interest_embeddings(h)
