"""Configs of the model: which LLM backbone, how it is tuned, and how items become tokens."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

BUILTIN_BACKBONES = ("tiny", "smollm2-135m", "gemma3-270m")


@dataclass
class BackboneConfig:
    """The decoder-only LLM the interest embedding is read from."""

    name: str = "smollm2-135m"
    """Built-in name (tiny, smollm2-135m, gemma3-270m), a Hugging Face hub name, a local model
    directory, or a .gguf file."""
    num_layers: int = 0
    """Keep only the first N decoder layers (0 = all); truncation is what makes CPU training fit."""
    tuning: Literal["lora", "full", "frozen"] = "lora"
    """How the LLM is trained: LoRA adapters, every weight, or not at all (only the new heads)."""
    lora_rank: int = 8
    """LoRA rank r."""
    lora_alpha: float = 16.0
    """LoRA scaling alpha (the update is scaled by alpha / r)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA input."""
    attention_dropout: float = 0.0
    """Dropout on the attention probabilities of every decoder layer, training only (the models'
    own `attention_dropout`, which pretrained checkpoints set to 0)."""
    residual_dropout: float = 0.0
    """Dropout on every decoder layer's attention and MLP outputs before they join the residual
    stream, training only: the hidden dropout of BERT and SASRec, which Llama decoders and their kin
    do not have."""
    lora_mlp: bool = False
    """Also put LoRA on the MLP projections (gate, up, down), not only attention q, k, v, o."""
    freeze_embeddings: bool = True
    """Freeze the input embedding table, so pooled item-text embeddings can be computed once."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Dtype the backbone weights are loaded in."""
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    """Attention kernel; diagnostics that need attention weights switch to eager themselves."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, ~30% slower)."""
    tiny_hidden_size: int = 32
    """Hidden size of the random `tiny` backbone (tests and the debug config)."""
    tiny_num_layers: int = 2
    """Decoder layers of the random `tiny` backbone."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError(
                "name: give a built-in backbone, a hub name, a directory or a .gguf file"
            )
        if self.num_layers < 0:
            raise ValueError(f"num_layers: must be >= 0 (0 = all), got {self.num_layers}")
        if self.lora_rank < 1:
            raise ValueError(f"lora_rank: must be >= 1, got {self.lora_rank}")
        for name in ("lora_dropout", "attention_dropout", "residual_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name}: must be in [0, 1), got {getattr(self, name)}")
        if self.tiny_hidden_size < 8 or self.tiny_hidden_size % 4:
            raise ValueError(
                f"tiny_hidden_size: must be a multiple of 4 and >= 8, got {self.tiny_hidden_size}"
            )
        if self.tiny_num_layers < 1:
            raise ValueError(f"tiny_num_layers: must be >= 1, got {self.tiny_num_layers}")


@dataclass
class EncoderConfig:
    """The continuous-token interface, the readout and the two towers."""

    embedding_dim: int = 128
    """Size e of the interest and item embeddings used for retrieval."""
    item_text_tokens: int = 16
    """Item text is truncated to this many tokens before mean pooling."""
    item_text_pooling: Literal["input_embeddings", "backbone"] = "input_embeddings"
    """What the item token starts from: the mean of the LLM's input embeddings over the item's text
    tokens (no LLM layer reads the text), or the frozen, untruncated backbone's hidden states over
    the text, computed once per catalog and cached on disk (see `karma.model.item_text`)."""
    item_text_layers: int | None = None
    """With item_text_pooling=backbone: decoder layers the item text passes through (None = all,
    independent of backbone.num_layers, which cuts only the user-side stack)."""
    item_text_readout: Literal["mean", "last"] = "mean"
    """With item_text_pooling=backbone: pool the hidden states over the text tokens (mean), or take
    the last text token's state (last)."""
    item_text_categories: bool = True
    """Include the item's categories in its text."""
    item_text_fields: dict[str, int] | None = None
    """Compose the item text from these fields, in this order, each cut to its own token budget,
    e.g. {title: 24, brand: 4, categories: 12, description: 40} (any of title, categories and the
    dataset's text attributes); None = `title (attributes) | categories` cut to item_text_tokens.
    item_text_tokens must hold the sum (plus ~2 tokens per field for the separators)."""
    features: str | None = None
    """Name of frozen item features (PreparedDataset.features) concatenated to the pooled text; None = no features."""
    item_id_embedding: bool = False
    """Add a learned per-item ID embedding to each item token (the shortcut that causes collapse; ablation only)."""
    item_residual_ratio: float | None = None
    """Semantic-anchored item tower: add a learned per-item residual to each item token whose norm
    is at most this fraction of the anchor's (the token P_item builds from the item's text and
    features), zero for items never trained (`karma.model.anchored`); None = off. Combinable with
    item_id_embedding (unbounded) and with every knowledge objective."""
    item_residual_dropout: float = 0.0
    """With item_residual_ratio: in training, show each item as its anchor alone (residual zeroed)
    with this probability (DropoutNet-style; one draw per item per item-token pass, so a step's
    history tokens and its catalog vectors draw separately), so the model also learns to rank items
    the way it meets new ones; 0 = never. Evaluation and serving never drop."""
    item_token_dropout: float = 0.0
    """Dropout on the history's item tokens x_i as the LLM reads them (user side), training only
    (SASRec's embedding dropout); the item tower's vectors and evaluation never drop."""
    item_tower: Literal["projection", "llm"] = "projection"
    """Item embedding: W_v applied to the item's continuous token (no LLM), or an LLM pass over its text."""
    instruction: str = (
        "Given the items a user interacted with, predict the next item they will like."
    )
    """Instruction text at the start of every sequence (empty = none)."""
    query_position: Literal["first", "last"] = "first"
    """Search mode: where the query's tokens sit, right after the instruction, before the history
    (`first`, the layout of the paper and of the study's search runs), or after the history,
    right before `[INTEREST]` (`last`), where the readout's attention finds it most easily."""
    head_lr: float | None = None
    """Learning rate of the new projections (P_item, W_u, W_v, ...); None = the backbone's learning rate."""

    def __post_init__(self) -> None:
        if self.embedding_dim < 1:
            raise ValueError(f"embedding_dim: must be >= 1, got {self.embedding_dim}")
        if self.item_text_tokens < 1:
            raise ValueError(f"item_text_tokens: must be >= 1, got {self.item_text_tokens}")
        if self.item_text_fields is not None:
            if not self.item_text_fields:
                raise ValueError("item_text_fields: give at least one field (or null for none)")
            bad = {
                k: v for k, v in self.item_text_fields.items() if not isinstance(v, int) or v < 1
            }
            if bad:
                raise ValueError(f"item_text_fields: budgets must be integers >= 1, got {bad}")
            total = sum(self.item_text_fields.values())
            if self.item_text_tokens < total:
                raise ValueError(
                    f"item_text_tokens: {self.item_text_tokens} is below the item_text_fields "
                    f"budgets' sum {total}; set it to at least {total + 2 * len(self.item_text_fields)}"
                )
        if self.item_text_layers is not None and self.item_text_layers < 1:
            raise ValueError(
                f"item_text_layers: must be >= 1 (or null = all), got {self.item_text_layers}"
            )
        if self.item_residual_ratio is not None and self.item_residual_ratio <= 0:
            raise ValueError(
                f"item_residual_ratio: must be > 0 (or null = off), got {self.item_residual_ratio}"
            )
        if not 0.0 <= self.item_residual_dropout < 1.0:
            raise ValueError(
                f"item_residual_dropout: must be in [0, 1), got {self.item_residual_dropout}"
            )
        if self.item_residual_dropout > 0 and self.item_residual_ratio is None:
            raise ValueError(
                "item_residual_dropout: needs item_residual_ratio (the anchored tower)"
            )
        if not 0.0 <= self.item_token_dropout < 1.0:
            raise ValueError(
                f"item_token_dropout: must be in [0, 1), got {self.item_token_dropout}"
            )
        if self.head_lr is not None and self.head_lr <= 0:
            raise ValueError(f"head_lr: must be > 0 (or null), got {self.head_lr}")


@dataclass
class ModelConfig:
    """Backbone plus encoder."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    """The LLM and how it is tuned."""
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    """Item tokens, readout and retrieval heads."""
