"""The action objective: sampled softmax over the positive, in-batch and sampled negatives.

    L_act = -log softmax_{j in {i+} ∪ N}( e_u·e_j / τ - log Q(j) )

Candidates are shared by all B rows: the batch's own targets (in-batch negatives) plus M items drawn
from a proposal q (uniform or popularity^alpha). Candidate j then appears on average
`Q(j) = B·p(j) + M·q(j)` times per batch, p = the training-target distribution (popularity);
subtracting log Q (the logQ correction of Yi et al., 2019, for mixed negatives) removes the bias
toward popular items that sampled candidates would otherwise teach. It is subtracted from every
logit, the positive's included. Candidates with the positive's item id are masked (false
negatives), as are padded hard negatives (id < 0). Optional per-row hard negatives (exposed, not
clicked) join the same softmax. Under torch.distributed the candidates of all ranks are gathered
with gradient.

Items outside `trainable_items` (the cold items of the new-item protocol) do not exist while
training: the sampler never draws them and the full softmax gives them logit -inf, so they are
never pushed down as negatives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from karma.objectives.base import LossOutput


@dataclass
class ActionConfig:
    """Sampled-softmax next-item objective."""

    negatives: Literal["sampled", "full"] = "sampled"
    """sampled: in-batch + sampled negatives with logQ (any catalog size); full: softmax over the
    whole catalog (exact, no sampling bias; the SASRec+ recipe, best when the catalog fits)"""
    num_negatives: int = 256
    """Items sampled per batch (shared by all rows), on top of the in-batch negatives."""
    sampler: Literal["uniform", "popularity"] = "popularity"
    """Proposal of the sampled negatives: uniform, or training popularity ** sampler_alpha."""
    sampler_alpha: float = 0.75
    """Exponent on popularity for the popularity sampler (0 = uniform, 1 = unigram)."""
    in_batch_negatives: bool = True
    """Use the other rows' targets as negatives."""
    logq_correction: bool = True
    """Subtract log Q(j), the expected count of candidate j per batch, from every logit."""
    temperature: float = 0.05
    """Softmax temperature τ (initial value when learned)."""
    learn_temperature: bool = False
    """Learn log τ, clamped to [min_temperature, max_temperature]."""
    min_temperature: float = 0.01
    """Lower clamp of a learned temperature."""
    max_temperature: float = 1.0
    """Upper clamp of a learned temperature."""
    hard_negatives: int = 0
    """Exposed-but-not-clicked items per row used as hard negatives (0 = none)."""

    def __post_init__(self) -> None:
        if self.num_negatives < 0:
            raise ValueError(f"num_negatives: must be >= 0, got {self.num_negatives}")
        if self.sampler_alpha < 0:
            raise ValueError(f"sampler_alpha: must be >= 0, got {self.sampler_alpha}")
        if not 0 < self.min_temperature <= self.temperature <= self.max_temperature:
            raise ValueError(
                f"temperature: need 0 < min_temperature <= temperature <= max_temperature, got "
                f"{self.min_temperature}, {self.temperature}, {self.max_temperature}"
            )
        if self.hard_negatives < 0:
            raise ValueError(f"hard_negatives: must be >= 0, got {self.hard_negatives}")


class NegativeSampler:
    """Draws item ids from q(j) ∝ (count_j + 1) ** alpha (alpha = 0 for uniform), over the
    `trainable` items only (q = 0 elsewhere; default: every item)."""

    def __init__(
        self,
        item_counts: np.ndarray,
        distribution: str = "popularity",
        alpha: float = 0.75,
        trainable: np.ndarray | None = None,
    ) -> None:
        counts = np.asarray(item_counts, dtype=np.float64)
        weights = np.ones_like(counts) if distribution == "uniform" else (counts + 1.0) ** alpha
        if trainable is not None:
            weights = weights * np.asarray(trainable, dtype=bool)
        self.probs = torch.as_tensor(weights / weights.sum(), dtype=torch.float64)  # (N,)

    def sample(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(num,) int64 item ids, drawn with replacement."""
        return torch.multinomial(self.probs, num, replacement=True, generator=generator)


def candidate_log_q(
    item_ids: torch.Tensor,
    target_probs: torch.Tensor,
    sampler_probs: torch.Tensor,
    num_in_batch: int,
    num_sampled: int,
) -> torch.Tensor:
    """log Q(j) = log(B·p(j) + M·q(j)), the expected count of item j among a batch's candidates."""
    expected = num_in_batch * target_probs[item_ids] + num_sampled * sampler_probs[item_ids]
    return expected.clamp(min=1e-12).log()


def _label_cross_entropy(
    logits: torch.Tensor,  # (B, C)
    labels: torch.Tensor,  # (B,) each row's positive column
    tau: torch.Tensor,
) -> LossOutput:
    """Cross-entropy on each row's positive column, with the parts every action loss reports."""
    loss = F.cross_entropy(logits, labels)
    with torch.no_grad():
        positive = logits.gather(1, labels[:, None])[:, 0]
        accuracy = (logits.max(dim=1).values <= positive).float().mean()
    parts = {
        "action": float(loss.detach()),
        "action_accuracy": float(accuracy),
        "temperature": float(tau.detach()),
        "candidates": float(logits.shape[1]),
    }
    return LossOutput(loss=loss, parts=parts)


class ActionLoss(nn.Module):
    """Sampled softmax with logQ correction, false-negative masking and optional hard negatives."""

    def __init__(
        self,
        config: ActionConfig,
        item_counts: np.ndarray,
        trainable_items: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.sampler = NegativeSampler(
            item_counts, config.sampler, config.sampler_alpha, trainable_items
        )
        # (N,) bool or None: None = every item is a candidate (no mask to apply).
        untrainable = (
            torch.as_tensor(~np.asarray(trainable_items, dtype=bool))
            if trainable_items is not None and not np.all(trainable_items)
            else None
        )
        self.register_buffer("untrainable_items", untrainable, persistent=False)
        counts = torch.as_tensor(np.asarray(item_counts, dtype=np.float64) + 1.0)  # +1: no log(0)
        self.register_buffer("target_probs", (counts / counts.sum()).float(), persistent=False)
        self.register_buffer("sampler_probs", self.sampler.probs.float(), persistent=False)
        log_tau = torch.tensor(math.log(config.temperature))
        if config.learn_temperature:
            self.log_temperature = nn.Parameter(log_tau)
        else:
            self.register_buffer("log_temperature", log_tau, persistent=False)

    @property
    def temperature(self) -> torch.Tensor:
        low, high = math.log(self.config.min_temperature), math.log(self.config.max_temperature)
        return self.log_temperature.clamp(low, high).exp()

    def sample_negatives(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """(M,) sampled negative ids for one batch (on CPU; move them with the batch)."""
        return self.sampler.sample(self.config.num_negatives, generator)

    def full_softmax(
        self,
        user_embeddings: torch.Tensor,  # (B, e) e_u, unit norm
        catalog_embeddings: torch.Tensor,  # (N, e) every item's e_i
        target_ids: torch.Tensor,  # (B,) int64
    ) -> LossOutput:
        """Exact softmax over the trainable catalog: L = -log softmax_j(e_u·e_j / τ)[i+].

        Every item is a candidate exactly once, so there is no sampling bias to correct (no logQ)
        and no false negative to mask; items outside `trainable_items` get logit -inf.
        """
        tau = self.temperature
        with torch.autocast(user_embeddings.device.type, enabled=False):
            logits = user_embeddings.float() @ catalog_embeddings.float().T / tau  # (B, N)
            if self.untrainable_items is not None:
                logits = logits.masked_fill(self.untrainable_items[None, :], float("-inf"))
        return _label_cross_entropy(logits, target_ids, tau)

    def forward(
        self,
        user_embeddings: torch.Tensor,  # (B, e) e_u, unit norm
        target_embeddings: torch.Tensor,  # (B, e) e_{i+}
        target_ids: torch.Tensor,  # (B,) int64
        sampled_embeddings: torch.Tensor | None = None,  # (M, e)
        sampled_ids: torch.Tensor | None = None,  # (M,)
        hard_embeddings: torch.Tensor | None = None,  # (B, H, e)
        hard_ids: torch.Tensor | None = None,  # (B, H), < 0 = padding
    ) -> LossOutput:
        batch = user_embeddings.shape[0]
        if sampled_embeddings is None or sampled_ids is None:
            sampled_embeddings = target_embeddings.new_zeros(0, target_embeddings.shape[-1])
            sampled_ids = target_ids.new_zeros(0)
        cand_targets, cand_target_ids, offset = _gather_across_ranks(target_embeddings, target_ids)
        cand_sampled, cand_sampled_ids, _ = _gather_across_ranks(sampled_embeddings, sampled_ids)
        labels = torch.arange(batch, device=target_ids.device) + offset  # (B,) positive's column
        candidates = torch.cat([cand_targets, cand_sampled])  # (C, e)
        candidate_ids = torch.cat([cand_target_ids, cand_sampled_ids])  # (C,)
        num_in_batch, num_sampled = len(cand_target_ids), len(cand_sampled_ids)
        tau = self.temperature
        # Logits in fp32 even under bf16 autocast: at τ = 0.05 they reach ±20, where bf16 steps by 0.125.
        with torch.autocast(user_embeddings.device.type, enabled=False):
            users = user_embeddings.float()
            logits = users @ candidates.float().T / tau  # (B, C)
            if self.config.logq_correction:
                log_q = candidate_log_q(
                    candidate_ids, self.target_probs, self.sampler_probs, num_in_batch, num_sampled
                )  # (C,)
                logits = logits - log_q[None, :]
            columns = torch.arange(len(candidate_ids), device=logits.device)
            is_label = columns[None, :] == labels[:, None]  # (B, C)
            masked = (candidate_ids[None, :] == target_ids[:, None]) & ~is_label  # false negatives
            if not self.config.in_batch_negatives:  # only the row's own in-batch column stays
                masked |= (columns[None, :] < num_in_batch) & ~is_label
            logits = logits.masked_fill(masked, float("-inf"))
            if hard_embeddings is not None and hard_ids is not None:
                # The row's own exposures, not draws from the shared proposal: no logQ correction.
                hard_logits = (
                    torch.einsum("be,bhe->bh", users, hard_embeddings.float()) / tau
                )  # (B, H)
                hard_masked = (hard_ids < 0) | (hard_ids == target_ids[:, None])
                logits = torch.cat([logits, hard_logits.masked_fill(hard_masked, float("-inf"))], 1)
        return _label_cross_entropy(logits, labels, tau)


def _gather_across_ranks(
    embeddings: torch.Tensor, ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Concatenate (K, e) embeddings and (K,) ids of every rank (with gradient); also this rank's row offset."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return embeddings, ids, 0
    from torch.distributed.nn.functional import all_gather

    # Ranks must contribute equal-sized tensors (the same batch size and num_negatives).
    gathered = torch.cat(all_gather(embeddings))
    id_list = [torch.empty_like(ids) for _ in range(dist.get_world_size())]
    dist.all_gather(id_list, ids)
    return gathered, torch.cat(id_list), dist.get_rank() * len(ids)
