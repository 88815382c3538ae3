"""KARMA's knowledge regularizers in one place: their config, their builder, the position sampler.

    L_joint  = L_act + s(t)·(λ_gen·L_gen + λ_rec·L_rec + λ_flow·L_flow)
    L_warmup = λ_item·L_item + λ_gen·L_gen + λ_rec·L_rec   (weights from the warmup_* fields)

s(t) is the joint-stage weight schedule (`schedule`, `final_ratio`, `start_step`; 1 by default).

Every weight defaults to 0, so a run config without a `knowledge:` section is action-only. An
objective whose weight is 0 in every stage is not even built (`build_knowledge_objectives` leaves
it None), so its code path, decoder call or flow head, never runs and it adds no parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from karma.objectives.base import LossOutput, Stage
from karma.objectives.flow import FeatureReconstructionObjective
from karma.objectives.generation import GenerationObjective
from karma.objectives.reconstruction import ItemTextObjective, ReconstructionObjective


@dataclass
class KnowledgeConfig:
    """Weights and shapes of the knowledge regularizers (train only; never in the served model)."""

    REMOVED_KEYS: ClassVar[dict[str, str]] = {
        "flow_sample_steps": "it had no effect (no karma run samples from the flow head)",
    }

    generation_weight: float = 0.0
    """λ_gen of L_gen (target text generated after the history) in the joint stage; 0 = off."""
    reconstruction_weight: float = 0.0
    """λ_rec of L_rec (target text decoded from the interest embedding alone) in the joint stage; 0 = off."""
    flow_weight: float = 0.0
    """λ_flow of L_flow (frozen target features reconstructed from e_u) in the joint stage; 0 = off."""
    positions_per_sequence: int = 2
    """In all-prefix training, readout positions per sequence sampled for L_gen, L_rec and L_flow (bounds their cost)."""
    sequences_per_batch: int | None = None
    """At most this many sequences of a batch (a random subset) carry L_gen, L_rec and L_flow; null = all. Bounds the regularizers' share of a step."""
    target_text_tokens: int = 24
    """Target item text (title and category words, then EOS) is truncated to this many tokens."""
    prefix_tokens: int = 1
    """k: soft prefix tokens g maps the interest embedding to, for L_rec."""
    reconstruction_decoder: Literal["shared", "frozen_base"] = "shared"
    """L_rec decoder: the encoder's LLM (shared) or the same LLM with LoRA adapters off (frozen_base; LoRA only)."""
    flow_head: Literal["flow", "mse"] = "flow"
    """Feature head: conditional rectified flow (flow) or plain MSE regression (mse, the comparison)."""
    flow_hidden: int = 256
    """Hidden width of the flow (or MSE) head's MLP."""
    feature_name: str | None = None
    """Frozen item features reconstructed by L_flow (a PreparedDataset.features name); needed when flow_weight > 0."""
    standardize_features: bool = True
    """Z-score each feature dimension over the catalog first, so ε ~ N(0, I) matches the data's scale."""
    warmup_item_text_weight: float = 0.0
    """Warm-up stage: weight of reconstructing an item's own text from its continuous token x_i."""
    warmup_generation_weight: float = 0.0
    """Warm-up stage: weight of L_gen (no action loss in warm-up)."""
    warmup_reconstruction_weight: float = 0.0
    """Warm-up stage: weight of L_rec (no action loss in warm-up)."""
    warmup_items_per_batch: int = 64
    """Warm-up stage: catalog items whose own text is reconstructed per batch (L_item)."""
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    """Joint-stage knowledge weights over time: constant λ, or a linear / cosine decay from λ at start_step to final_ratio·λ at the stage's last step."""
    final_ratio: float = 0.0
    """linear / cosine schedules: the weights end at final_ratio·λ (a weight that reaches 0 stops running its objective)."""
    start_step: int = 0
    """Delayed start: joint-stage knowledge weights are 0 (their objectives do not run) for the stage's first N optimizer steps."""
    grad_control: Literal["none", "clip_ratio", "pcgrad"] = "none"
    """Joint stage, on the parameters the action and a knowledge term share: none; clip_ratio = rescale each knowledge term's gradient to norm <= grad_ratio·||g_action||; pcgrad = remove its component that conflicts with g_action."""
    grad_ratio: float = 1.0
    """clip_ratio: the largest allowed ||g_knowledge|| / ||g_action|| per term on the shared parameters."""
    protect_item_tokens: bool = False
    """Joint stage: the knowledge terms' gradients never reach the item tokens (P_item and the item-ID table), so the item side both towers read is trained by the action objective alone (the semantic warm-up still shapes it first); the knowledge terms train the LLM, [INTEREST] and W_u. Takes per-term gradients, as grad_control does (combinable with it)."""
    log_grad_norms: bool = False
    """Log each term's gradient norm on the shared parameters (gradnorm_*, gradcos_*) on log steps; costs one extra backward pass per term on those steps."""

    def __post_init__(self) -> None:
        for name in (
            "generation_weight",
            "reconstruction_weight",
            "flow_weight",
            "warmup_item_text_weight",
            "warmup_generation_weight",
            "warmup_reconstruction_weight",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0 (0 = off), got {getattr(self, name)}")
        if self.sequences_per_batch is not None and self.sequences_per_batch < 1:
            raise ValueError(
                f"sequences_per_batch: must be >= 1 or null, got {self.sequences_per_batch}"
            )
        for name in (
            "positions_per_sequence",
            "target_text_tokens",
            "prefix_tokens",
            "flow_hidden",
            "warmup_items_per_batch",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.reconstruction_decoder not in ("shared", "frozen_base"):
            raise ValueError(
                f"reconstruction_decoder: must be shared or frozen_base, got {self.reconstruction_decoder!r}"
            )
        if self.flow_head not in ("flow", "mse"):
            raise ValueError(f"flow_head: must be flow or mse, got {self.flow_head!r}")
        if self.schedule not in ("constant", "linear", "cosine"):
            raise ValueError(f"schedule: must be constant, linear or cosine, got {self.schedule!r}")
        if not 0.0 <= self.final_ratio <= 1.0:
            raise ValueError(f"final_ratio: must be in [0, 1], got {self.final_ratio}")
        if self.start_step < 0:
            raise ValueError(f"start_step: must be >= 0, got {self.start_step}")
        if self.grad_control not in ("none", "clip_ratio", "pcgrad"):
            raise ValueError(
                f"grad_control: must be none, clip_ratio or pcgrad, got {self.grad_control!r}"
            )
        if not self.grad_ratio > 0:
            raise ValueError(f"grad_ratio: must be > 0, got {self.grad_ratio}")
        if self.flow_weight > 0 and not self.feature_name:
            raise ValueError(
                "feature_name: flow_weight > 0 needs the name of the item features to reconstruct"
            )

    @property
    def uses_generation(self) -> bool:
        """Whether L_gen runs in any stage."""
        return self.generation_weight > 0 or self.warmup_generation_weight > 0

    @property
    def uses_reconstruction(self) -> bool:
        """Whether L_rec runs in any stage."""
        return self.reconstruction_weight > 0 or self.warmup_reconstruction_weight > 0

    @property
    def uses_item_text(self) -> bool:
        """Whether the warm-up item-text loss runs."""
        return self.warmup_item_text_weight > 0

    @property
    def uses_text(self) -> bool:
        """Whether any objective decodes text (the task then tokenizes the catalog's texts)."""
        return self.uses_generation or self.uses_reconstruction or self.uses_item_text

    def schedule_factor(self, stage_step: int, stage_steps: int) -> float:
        """s(t): multiplier of the joint-stage weights at 0-based joint step t of T = stage_steps.

        t < start_step: 0. Then, with p = (t - start_step) / max(1, T - 1 - start_step) clamped to
        [0, 1] and r = final_ratio: constant 1; linear 1 - (1 - r)·p; cosine r + (1 - r)·(1 + cos πp)/2.
        """
        if stage_step < self.start_step:
            return 0.0
        if self.schedule == "constant":
            return 1.0
        p = (stage_step - self.start_step) / max(1, stage_steps - 1 - self.start_step)
        p = min(1.0, max(0.0, p))
        r = self.final_ratio
        if self.schedule == "linear":
            return 1.0 - (1.0 - r) * p
        return r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * p))

    def weights(
        self, stage: Stage, stage_step: int | None = None, stage_steps: int | None = None
    ) -> dict[str, float]:
        """Weight of each knowledge objective in `stage` ("warmup" or "joint"); zeros included.

        Given the joint stage's step and length, the joint weights follow the schedule
        (`schedule_factor`); without them they are the configured λ.
        """
        if stage == "warmup":
            return {
                "item_text": self.warmup_item_text_weight,
                "generation": self.warmup_generation_weight,
                "reconstruction": self.warmup_reconstruction_weight,
                "flow": 0.0,
            }
        factor = 1.0
        if stage_step is not None:
            factor = self.schedule_factor(stage_step, stage_steps or 1)
        return {
            "item_text": 0.0,
            "generation": factor * self.generation_weight,
            "reconstruction": factor * self.reconstruction_weight,
            "flow": factor * self.flow_weight,
        }


@dataclass
class KnowledgeBatch:
    """The tensors the knowledge objectives read; a task fills only those its stage's weights need.

    M = sampled readout positions (L_gen / L_rec / L_flow), K = warm-up items (L_item).
    """

    prefix_embeds: torch.Tensor | None = None
    """(M, P, d) LLM input up to each sampled readout position (L_gen), see `prefixes_at`."""
    prefix_mask: torch.Tensor | None = None
    """(M, P) bool, True at real prefix positions (L_gen)."""
    interest_embedding: torch.Tensor | None = None
    """(M, e) e_u at the sampled readout positions (L_rec, L_flow)."""
    target_ids: torch.Tensor | None = None
    """(M, Y) token ids of the target item's text (L_gen, L_rec)."""
    target_mask: torch.Tensor | None = None
    """(M, Y) bool, True at real target tokens (L_gen, L_rec)."""
    target_features: torch.Tensor | None = None
    """(M, D) frozen features of the target item (L_flow)."""
    item_tokens: torch.Tensor | None = None
    """(K, d) continuous tokens x_i of warm-up items (L_item)."""
    item_text_ids: torch.Tensor | None = None
    """(K, Y) token ids of those items' own texts (L_item)."""
    item_text_mask: torch.Tensor | None = None
    """(K, Y) bool mask of those texts (L_item)."""


def _need(value: torch.Tensor | None, name: str, objective: str) -> torch.Tensor:
    if value is None:
        raise ValueError(f"KnowledgeBatch.{name} is needed by {objective} (its weight is > 0)")
    return value


# Per objective (in the order they run): whether it takes the decoder first, then the
# KnowledgeBatch fields it reads, in call order.
_OBJECTIVE_INPUTS: dict[str, tuple[bool, tuple[str, ...]]] = {
    "generation": (True, ("prefix_embeds", "prefix_mask", "target_ids", "target_mask")),
    "reconstruction": (True, ("interest_embedding", "target_ids", "target_mask")),
    "flow": (False, ("interest_embedding", "target_features")),
    "item_text": (True, ("item_tokens", "item_text_ids", "item_text_mask")),
}


class KnowledgeObjectives(nn.Module):
    """The built knowledge objectives; an attribute is None when its weight is 0 in every stage.

    Holds only the trainable parts the objectives own (g, the flow head); the decoder is the
    encoder's LLM, passed to each call. Export drops this whole module (train only).
    """

    def __init__(
        self,
        config: KnowledgeConfig,
        generation: GenerationObjective | None,
        reconstruction: ReconstructionObjective | None,
        flow: FeatureReconstructionObjective | None,
        item_text: ItemTextObjective | None,
    ) -> None:
        super().__init__()
        self.config = config
        self.generation = generation
        self.reconstruction = reconstruction
        self.flow = flow
        self.item_text = item_text

    def forward(
        self,
        decoder: nn.Module,
        batch: KnowledgeBatch,
        stage: Stage,
        weights: dict[str, float] | None = None,
    ) -> LossOutput:
        """Σ weight·loss over the objectives whose weight in `stage` is > 0; others never run.

        `weights` (scheduled by the task) default to the config's `weights(stage)`. Parts: each
        objective's own parts plus `<name>_weighted`; terms: `<name>` -> weight·loss. A stage with
        no knowledge weight returns a zero loss (no graph) and no parts.
        """
        weights = weights if weights is not None else self.config.weights(stage)
        total: torch.Tensor | None = None
        parts: dict[str, float] = {}
        terms: dict[str, torch.Tensor] = {}
        for name, (reads_decoder, fields) in _OBJECTIVE_INPUTS.items():
            objective = getattr(self, name)
            weight = weights[name]
            if weight <= 0 or objective is None:
                continue
            inputs = [_need(getattr(batch, field), field, name) for field in fields]
            out = objective(decoder, *inputs) if reads_decoder else objective(*inputs)
            terms[name] = weight * out.loss
            total = terms[name] if total is None else total + terms[name]
            parts.update(out.parts)
            parts[f"{name}_weighted"] = weight * float(out.loss.detach())
        if total is None:
            return LossOutput(torch.zeros(()), {})
        return LossOutput(total, parts, terms)


def build_knowledge_objectives(
    config: KnowledgeConfig,
    hidden_size: int,
    embed_dim: int,
    feature_dim: int | None = None,
) -> KnowledgeObjectives:
    """Build the objectives `config` turns on. hidden_size = LLM d, embed_dim = e, feature_dim = D."""
    flow = None
    if config.flow_weight > 0:
        if feature_dim is None:
            raise ValueError(
                "feature_dim: flow_weight > 0 needs the dimension of the item features"
            )
        flow = FeatureReconstructionObjective(
            feature_dim,
            embed_dim,
            hidden=config.flow_hidden,
            head=config.flow_head,
        )
    reconstruction = (
        ReconstructionObjective(
            embed_dim, hidden_size, config.prefix_tokens, config.reconstruction_decoder
        )
        if config.uses_reconstruction
        else None
    )
    return KnowledgeObjectives(
        config,
        generation=GenerationObjective() if config.uses_generation else None,
        reconstruction=reconstruction,
        flow=flow,
        item_text=ItemTextObjective() if config.uses_item_text else None,
    )


def sample_readout_positions(
    valid: torch.Tensor,
    per_sequence: int,
    generator: torch.Generator | None = None,
    max_sequences: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to `per_sequence` distinct readout positions per row of `valid` (B, T) bool.

    Returns (sequence_index (M,), position (M,)), rows in order; a row with fewer valid positions
    contributes all of them. Uniform without replacement: random scores, top-k among valid ones.
    With `max_sequences`, only a uniformly drawn subset of that many rows (among rows with a valid
    position) contributes.
    """
    valid = valid.bool()
    if max_sequences is not None:
        has_any = valid.any(dim=1)  # (B,)
        if int(has_any.sum()) > max_sequences:
            row_scores = torch.rand(valid.shape[0], generator=generator, device=valid.device)
            row_scores = row_scores.masked_fill(~has_any, -1.0)
            keep = torch.zeros_like(has_any)
            keep[row_scores.topk(max_sequences).indices] = True
            valid = valid & keep[:, None]
    scores = torch.rand(valid.shape, generator=generator, device=valid.device)  # (B, T)
    scores = scores.masked_fill(~valid.bool(), -1.0)
    k = min(per_sequence, valid.shape[1])
    top_scores, top_positions = scores.topk(k, dim=1)  # (B, k)
    chosen = top_scores >= 0
    rows = torch.arange(valid.shape[0], device=valid.device).unsqueeze(1).expand_as(top_positions)
    return rows[chosen], top_positions[chosen]
