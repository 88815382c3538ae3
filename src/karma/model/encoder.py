"""The KARMA encoder: items as continuous tokens, an LLM pass, and the two retrieval towers.

    a_i = P_item( pool(E_tok(text_i)) [; f_i] )                     (d,)   the item's anchor
    x_i = a_i [+ r_i] [+ id_emb(i)]                                 (d,)   one token per item
    h   = last-layer hidden state at the readout position           (d,)
    e_u = normalize(W_u h)                                          (e,)   interest embedding
    e_i = normalize(W_v x_i)                                        (e,)   item tower (no LLM)

Item texts are tokenized once into a padded (N, L) id matrix; pooling runs through the LLM's own
input embedding table. When that table is frozen (the default) the pooled (N, d) matrix is computed
once and kept as a buffer. With `item_text_pooling: backbone` that buffer instead holds the frozen
backbone's states over each item text (`karma.model.item_text`, computed by `encoder_from_config`).
`r_i` is the anchored tower's bounded per-item residual (`item_residual_ratio`,
`karma.model.anchored`): ||r_i|| <= rho ||a_i||, zero for items never trained.
Sequence layout and readout positions: see `karma.model.sequence`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from karma.errors import KarmaError
from karma.model import item_text
from karma.model.anchored import BoundedResidual
from karma.model.config import EncoderConfig, ModelConfig
from karma.model.sequence import SequenceLayout, layout_batch

POOL_CHUNK = 1024  # items pooled per chunk when building the cache: bounds the (chunk, L, d) tensor
QUERY_TOKENS = 32  # a query longer than this is truncated


class KarmaEncoder(nn.Module):
    """History (+ query) -> interest embedding; item -> item embedding. Both (e,) unit vectors."""

    def __init__(
        self,
        config: EncoderConfig,
        backbone: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        item_texts: list[str],
        features: np.ndarray | None = None,
        mode: Literal["rec", "search"] = "rec",
        max_history: int = 50,
        item_text_states: torch.Tensor | None = None,
        trained_items: np.ndarray | None = None,
    ) -> None:
        """`item_text_states` (N, d): the precomputed item-text inputs that
        `item_text_pooling: backbone` needs (`karma.model.item_text.backbone_item_states`).
        `trained_items` (N,) bool: items the anchored tower's residual may move (None = all)."""
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.mode = mode
        self.max_history = max_history
        self.num_items = len(item_texts)
        self.item_texts = list(item_texts)  # what the item tokens are pooled from
        self.hidden_size: int = int(backbone.config.hidden_size)
        self.embedding_dim = config.embedding_dim
        d = self.hidden_size
        self.instruction_ids: list[int] = self._tokenize([config.instruction], 10_000)[0]

        ids, mask = self._item_text_matrix(item_texts)
        self.register_buffer("item_text_ids", ids, persistent=False)  # (N, L) int64
        self.register_buffer("item_text_mask", mask, persistent=False)  # (N, L) float
        feature_dim = 0
        if features is not None:
            if features.shape[0] != self.num_items:
                raise ValueError(
                    f"features have {features.shape[0]} rows, catalog has {self.num_items}"
                )
            feature_dim = int(features.shape[1])
            self.register_buffer(
                "item_features", torch.as_tensor(features, dtype=torch.float32), persistent=False
            )
        else:
            self.item_features = None

        self.item_projection = nn.Linear(d + feature_dim, d)  # P_item
        with torch.no_grad():
            # Start x_i as the pooled text embedding itself: the item token begins in the LLM's
            # own token space, so the first steps do not feed it noise.
            self.item_projection.weight.zero_()
            self.item_projection.weight[:, :d].copy_(torch.eye(d))
            if feature_dim:
                nn.init.normal_(self.item_projection.weight[:, d:], std=0.02)
            self.item_projection.bias.zero_()
        self.item_id_embedding = (
            nn.Embedding(self.num_items, d) if config.item_id_embedding else None
        )
        if self.item_id_embedding is not None:
            nn.init.zeros_(self.item_id_embedding.weight)
        self.item_residual = (
            BoundedResidual(
                self.num_items,
                d,
                config.item_residual_ratio,
                None if trained_items is None else torch.as_tensor(trained_items, dtype=torch.bool),
                config.item_residual_dropout,
            )
            if config.item_residual_ratio is not None
            else None
        )
        table = backbone.get_input_embeddings().weight
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        # [INTEREST] exists only in search mode; rec mode reads out at the item positions.
        self.interest_token = (
            nn.Parameter(table[eos].detach().float().clone()) if mode == "search" else None
        )  # (d,)
        self.user_head = nn.Linear(d, config.embedding_dim)  # W_u
        self.item_head = nn.Linear(d, config.embedding_dim)  # W_v

        self.embeddings_frozen = not table.requires_grad
        if config.item_text_pooling == "backbone":
            if item_text_states is None or tuple(item_text_states.shape) != (self.num_items, d):
                got = None if item_text_states is None else tuple(item_text_states.shape)
                raise ValueError(
                    f"item_text_pooling=backbone needs item_text_states of shape "
                    f"({self.num_items}, {d}), got {got}; build the encoder with encoder_from_config"
                )
            self.register_buffer(
                "pooled_item_text", item_text_states.detach().float().clone(), persistent=False
            )
        elif self.embeddings_frozen:
            self.register_buffer(
                "pooled_item_text", self._pool_text(torch.arange(self.num_items)), persistent=False
            )
        else:
            self.pooled_item_text = None

    # ----- text -----------------------------------------------------------------------------

    def _tokenize(self, texts: list[str], max_tokens: int) -> list[list[int]]:
        return item_text.tokenize(self.tokenizer, texts, max_tokens)

    def _item_text_matrix(self, item_texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded (N, L) token ids and (N, L) mask of the truncated item texts."""
        return item_text.item_text_matrix(self.tokenizer, item_texts, self.config.item_text_tokens)

    def embed_text_tokens(self, token_ids: torch.Tensor) -> torch.Tensor:
        """(...,) token ids -> (..., d) LLM input embeddings."""
        return self.backbone.get_input_embeddings()(token_ids)

    def _pool_text(self, item_idx: torch.Tensor) -> torch.Tensor:
        """(K,) item indices -> (K, d) mean of their text-token input embeddings (float32)."""
        table = self.backbone.get_input_embeddings()
        out = []
        for chunk in item_idx.split(POOL_CHUNK):
            ids, mask = self.item_text_ids[chunk], self.item_text_mask[chunk]  # (k, L)
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.embeddings_frozen):
                emb = table(ids).float()  # (k, L, d)
                out.append(
                    (emb * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
                )
        return torch.cat(out) if out else torch.zeros(0, self.hidden_size)

    def item_input_tables(self) -> dict[str, torch.Tensor]:
        """The per-item inputs beyond the text that x_i needs: features, backbone item states."""
        tables = {}
        if self.item_features is not None:
            tables["item_features"] = self.item_features
        if self.config.item_text_pooling == "backbone":
            tables["item_text_states"] = self.pooled_item_text
        return {k: v.detach().float().cpu().contiguous() for k, v in tables.items()}

    def append_items(self, texts: list[str], features: np.ndarray | None = None) -> None:
        """Append items to the catalog from their text (+ their feature rows, when the model has
        features): both towers then treat them like trained items, without retraining."""
        if self.item_id_embedding is not None:
            raise KarmaError(
                "this model has per-item ID embeddings, which new items do not have; "
                "items can be added only to models without model.encoder.item_id_embedding"
            )
        if self.config.item_text_pooling == "backbone":
            raise KarmaError(
                "this model reads item text with the full frozen backbone "
                "(model.encoder.item_text_pooling=backbone), which a serving artifact does not "
                "carry; new items cannot be encoded from their text alone"
            )
        if self.item_features is not None:
            width = self.item_features.shape[1]
            if features is None or features.shape != (len(texts), width):
                got = None if features is None else features.shape
                raise KarmaError(
                    f"this model needs a ({len(texts)}, {width}) feature matrix for the new items "
                    f"(model.encoder.features), got {got}"
                )
        ids, mask = self._item_text_matrix(texts)  # (M, L')
        device = self.item_text_ids.device
        width = max(ids.shape[1], self.item_text_ids.shape[1])

        def widen(matrix: torch.Tensor) -> torch.Tensor:
            return F.pad(matrix, (0, width - matrix.shape[1])).to(device)

        self.item_text_ids = torch.cat([widen(self.item_text_ids), widen(ids)])
        self.item_text_mask = torch.cat([widen(self.item_text_mask), widen(mask)])
        start = self.num_items
        self.num_items += len(texts)
        self.item_texts += list(texts)
        if self.item_residual is not None:
            self.item_residual.append(len(texts))  # new items: their anchor alone
        if self.item_features is not None:
            rows = torch.as_tensor(features, dtype=self.item_features.dtype, device=device)
            self.item_features = torch.cat([self.item_features, rows])
        if self.pooled_item_text is not None:
            with torch.no_grad():
                new_index = torch.arange(start, self.num_items, device=device)
                self.pooled_item_text = torch.cat(
                    [self.pooled_item_text, self._pool_text(new_index).to(self.pooled_item_text)]
                )

    # ----- items ----------------------------------------------------------------------------

    def refresh_item_cache(self) -> None:
        """Recompute the pooled item-text cache from the current embedding table.

        Call after loading trained weights: the cache was pooled from the table the encoder was
        built with, which a checkpoint may replace (a random `tiny` backbone, a tuned table).
        Backbone item-text states (`item_text_pooling: backbone`) are inputs computed by the
        frozen full backbone, not by this table: they are kept as they are.
        """
        if (
            self.config.item_text_pooling == "input_embeddings"
            and self.pooled_item_text is not None
        ):
            with torch.no_grad():
                self.pooled_item_text = self._pool_text(
                    torch.arange(self.num_items, device=self.item_text_ids.device)
                )

    def item_tokens(self, item_idx: torch.Tensor) -> torch.Tensor:
        """(...,) item indices -> (..., d) continuous item tokens x_i (float32)."""
        flat = item_idx.reshape(-1)  # (K,)
        if self.pooled_item_text is not None:
            pooled = self.pooled_item_text[flat]  # (K, d)
        else:
            unique, inverse = flat.unique(return_inverse=True)
            pooled = self._pool_text(unique)[inverse]  # pool each distinct item once
        if self.item_features is not None:
            pooled = torch.cat([pooled, self.item_features[flat]], dim=-1)  # (K, d + f)
        tokens = self.item_projection(pooled)  # (K, d) anchors a_i
        if self.item_residual is not None:
            tokens = self.item_residual(tokens, flat)  # a_i + r_i, ||r_i|| <= rho ||a_i||
        if self.item_id_embedding is not None:
            tokens = tokens + self.item_id_embedding(flat)
        return tokens.reshape(*item_idx.shape, self.hidden_size)

    def item_embeddings(
        self, item_idx: torch.Tensor | None = None, batch_size: int = 256
    ) -> torch.Tensor:
        """(...,) item indices (None = whole catalog) -> (..., e) unit item embeddings e_i."""
        if item_idx is None:
            item_idx = torch.arange(self.num_items, device=self.item_text_ids.device)
        flat = item_idx.reshape(-1)
        if self.config.item_tower == "projection":
            hidden = self.item_tokens(flat)  # (K, d)
        else:
            hidden = torch.cat([self._llm_item_hidden(c) for c in flat.split(batch_size)])
        return F.normalize(self.item_head(hidden), dim=-1).reshape(*item_idx.shape, -1)

    def _llm_item_hidden(self, item_idx: torch.Tensor) -> torch.Tensor:
        """(K,) -> (K, d): the LLM reads each item's text; read out at its last text token."""
        ids, mask = self.item_text_ids[item_idx], self.item_text_mask[item_idx].long()  # (K, L)
        embeds = self.embed_text_tokens(ids)  # (K, L, d)
        hidden = self.backbone.get_decoder()(
            inputs_embeds=embeds, attention_mask=mask, use_cache=False
        ).last_hidden_state
        last = (mask.sum(1) - 1).clamp(min=0)  # (K,)
        return hidden[torch.arange(len(ids), device=ids.device), last].float()

    # ----- users ----------------------------------------------------------------------------

    def layout(
        self, histories: list[np.ndarray], queries: list[str | None] | None = None
    ) -> SequenceLayout:
        """Index layout for a batch (histories truncated to the last `max_history` items)."""
        histories = [
            np.asarray(h, dtype=np.int64)[-self.max_history :] if self.max_history else h
            for h in histories
        ]
        query_ids = None
        if self.mode == "search" and queries is not None:
            texts = [f"Query: {q}\n" if q else "" for q in queries]
            query_ids = self._tokenize(texts, QUERY_TOKENS)
        layout = layout_batch(
            self.instruction_ids,
            query_ids,
            histories,
            with_interest=self.mode == "search",
            query_last=self.config.query_position == "last",
        )
        return layout.to(self.item_text_ids.device)

    def inputs_embeds(self, layout: SequenceLayout) -> torch.Tensor:
        """(B, T) layout -> (B, T, d) inputs_embeds in the backbone's dtype (padding = token 0)."""
        table = self.backbone.get_input_embeddings()
        embeds = table(layout.token_ids.clamp(min=0)).float()  # (B, T, d)
        is_item = layout.item_ids >= 0
        item_tokens = self.item_tokens(layout.item_ids[is_item])  # (K, d)
        item_tokens = F.dropout(item_tokens, self.config.item_token_dropout, self.training)
        item_tokens = item_tokens.to(embeds.dtype)
        embeds = embeds.masked_scatter(is_item[..., None], item_tokens)
        if self.interest_token is not None:
            embeds = torch.where(
                layout.interest[..., None], self.interest_token.to(embeds.dtype), embeds
            )
        return embeds.to(table.weight.dtype)

    def hidden_states(self, layout: SequenceLayout) -> torch.Tensor:
        """(B, T) layout -> (B, T, d) last-layer hidden states (float32)."""
        decoder = self.backbone.get_decoder()
        # No KV cache: nothing decodes after this pass, and building one costs memory and, under
        # torch.compile, recompiles each decoder layer for the cache's states.
        out = decoder(
            inputs_embeds=self.inputs_embeds(layout),
            attention_mask=layout.attention_mask,
            use_cache=False,
        )
        return out.last_hidden_state.float()

    def interest_embeddings(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., d) readout hidden states -> (..., e) unit interest embeddings e_u."""
        return F.normalize(self.user_head(hidden), dim=-1)

    def readout(
        self, layout: SequenceLayout, hidden: torch.Tensor, all_prefixes: bool = False
    ) -> torch.Tensor:
        """Readout hidden states: (B, d) at the last position, or (B, n_max, d) at every item position."""
        if all_prefixes:
            index = layout.item_positions.clamp(min=0)  # (B, n_max); padded slots read position 0
            return hidden.gather(1, index[..., None].expand(-1, -1, hidden.shape[-1]))
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return hidden[rows, layout.readout_positions]  # (B, d)

    def history_lengths(self, histories: list[np.ndarray]) -> np.ndarray:
        """(U,) int64 items of each history the layout keeps (the last `max_history`)."""
        return np.array(
            [min(len(h), self.max_history) if self.max_history else len(h) for h in histories],
            dtype=np.int64,
        )

    @torch.no_grad()
    def encode_users(
        self,
        histories: list[np.ndarray],
        queries: list[str | None] | None = None,
        batch_size: int = 64,
        progress: bool | None = False,
    ) -> torch.Tensor:
        """(U, e) interest embeddings, read out where training reads the full prefix.

        Users are batched by history length (a batch pads to its longest sequence, so mixing a
        20-item history with 5-item ones would pay for 20 on every row) and returned in the order
        given. `progress`: a bar over the batches; None = only on a terminal (tqdm's own check)."""
        order = np.argsort(self.history_lengths(histories), kind="stable")  # (U,)
        out = []
        starts = range(0, len(histories), batch_size)
        disable = None if progress is None else not progress
        for start in tqdm(starts, desc="users", unit="batch", disable=disable, leave=False):
            rows = order[start : start + batch_size]
            chunk_queries = [queries[i] for i in rows] if queries is not None else None
            layout = self.layout([histories[i] for i in rows], chunk_queries)
            out.append(self.interest_embeddings(self.readout(layout, self.hidden_states(layout))))
        if not out:
            return torch.zeros(0, self.embedding_dim)
        vectors = torch.cat(out)  # (U, e) in length order
        return vectors[torch.as_tensor(np.argsort(order), device=vectors.device)]

    def item_token_parameters(self) -> list[nn.Parameter]:
        """What turns an item into its continuous token x_i: P_item and the item-ID table."""
        modules: list[nn.Module] = [self.item_projection]
        if self.item_id_embedding is not None:
            modules.append(self.item_id_embedding)
        if self.item_residual is not None:
            modules.append(self.item_residual)
        return [p for m in modules for p in m.parameters() if p.requires_grad]

    def head_parameters(self) -> list[nn.Parameter]:
        """The new (non-LLM) trainable parameters: P_item, [INTEREST], W_u, W_v, item-ID table."""
        modules: list[nn.Module] = [self.item_projection, self.user_head, self.item_head]
        if self.item_id_embedding is not None:
            modules.append(self.item_id_embedding)
        if self.item_residual is not None:
            modules.append(self.item_residual)
        extra = [self.interest_token] if self.interest_token is not None else []
        return extra + [p for m in modules for p in m.parameters()]


def encoder_from_config(
    config: ModelConfig,
    item_texts: list[str],
    features: np.ndarray | None = None,
    mode: Literal["rec", "search"] = "rec",
    max_history: int = 50,
    item_fields: dict[str, list[str]] | None = None,
    trained_items: np.ndarray | None = None,
) -> KarmaEncoder:
    """Load the backbone and build the encoder over `item_texts` (seed torch first for `tiny`).

    With `encoder.item_text_fields` set, the item texts are composed from `item_fields` instead
    (`PreparedDataset.item_text_fields()`), each field cut to its token budget by the backbone's
    tokenizer; the encoder's `item_texts` holds the result.

    With `item_text_pooling: backbone` the untruncated, untuned backbone reads the item texts once
    (or the disk cache answers) before `backbone.num_layers` and the tuning mode are applied; the
    random-number stream is the same either way, so the heads start from the same values.
    """
    from karma.model.backbone import load_pretrained, prepare_backbone

    backbone, tokenizer = load_pretrained(config.backbone)
    budgets = config.encoder.item_text_fields
    if budgets:
        if item_fields is None:
            raise KarmaError("model.encoder.item_text_fields is set but no item fields were given")
        item_texts = item_text.compose_item_texts(tokenizer, item_fields, budgets)
    states = None
    if config.encoder.item_text_pooling == "backbone":
        states = item_text.backbone_item_states(backbone, tokenizer, item_texts, config.encoder)
    prepare_backbone(backbone, config.backbone)
    return KarmaEncoder(
        config.encoder,
        backbone,
        tokenizer,
        item_texts,
        features=features,
        mode=mode,
        max_history=max_history,
        item_text_states=states,
        trained_items=trained_items,
    )
