"""L_rec: embedding-conditioned semantic reconstruction (KARMA objective 3, train only).

    L_rec = -1/N Σ_t log p_LLM( y_t | g(e_u), y_<t )

The decoder sees ONLY the interest embedding `e_u`, mapped by `g` to `k` soft prefix tokens, so
`e_u` itself must carry the meaning of what comes next (the paper's ablation credits this term
with the largest gain). Gradients flow through the decoder and `g` into `e_u`.

Decoder choice (`reconstruction_decoder`):
- `shared`: the encoder's own LLM, adapters on (the decoder co-adapts with the encoder).
- `frozen_base`: the same LLM with its LoRA adapters switched off, i.e. the pretrained model; it
  cannot learn to decode an arbitrary code, so `e_u` must land where the *pretrained* LLM reads
  meaning. LoRA weights get no gradient from this term. Full fine-tuning has no frozen base and is
  rejected (see `lm_head.adapters_disabled`).

Also the semantic warm-up objective (`ItemTextObjective`): an item's own text from its continuous
token.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from karma.objectives.base import LossOutput
from karma.objectives.lm_head import adapters_disabled, target_token_nll

ReconstructionDecoder = Literal["shared", "frozen_base"]


class InterestToPrefix(nn.Module):
    """g: interest embedding (M, e) -> k soft prefix tokens (M, k, d), a two-layer MLP.

    One hidden layer (width d) rather than a single linear map: `e_u` is L2-normalised and lives
    in the retrieval space, the prefix must live in the LLM's input-embedding space; the nonlinearity
    lets `g` undo the normalisation's geometry at negligible cost (e*d + d*k*d parameters).
    """

    def __init__(self, embed_dim: int, hidden_size: int, prefix_tokens: int) -> None:
        super().__init__()
        self.prefix_tokens = prefix_tokens
        self.hidden_size = hidden_size
        self.mlp = nn.Sequential(
            nn.Linear(embed_dim, hidden_size),
            nn.GELU(),
            nn.Linear(hidden_size, prefix_tokens * hidden_size),
        )

    def forward(self, interest_embedding: torch.Tensor) -> torch.Tensor:
        prefix = self.mlp(interest_embedding)  # (M, k*d)
        return prefix.view(-1, self.prefix_tokens, self.hidden_size)  # (M, k, d)


class ReconstructionObjective(nn.Module):
    """L_rec: the target text decoded from `g(e_u)` alone; owns `g`, borrows the decoder per call."""

    def __init__(
        self,
        embed_dim: int,
        hidden_size: int,
        prefix_tokens: int = 1,
        decoder_mode: ReconstructionDecoder = "shared",
    ) -> None:
        super().__init__()
        if decoder_mode not in ("shared", "frozen_base"):
            raise ValueError(
                f"decoder_mode must be 'shared' or 'frozen_base', got {decoder_mode!r}"
            )
        self.decoder_mode = decoder_mode
        self.to_prefix = InterestToPrefix(embed_dim, hidden_size, prefix_tokens)

    def forward(
        self,
        decoder: nn.Module,
        interest_embedding: torch.Tensor,
        target_ids: torch.Tensor,
        target_mask: torch.Tensor,
    ) -> LossOutput:
        """interest_embedding (M, e), target_ids (M, Y), target_mask (M, Y)."""
        prefix = self.to_prefix(interest_embedding)  # (M, k, d)
        decoder_dtype = next(decoder.parameters()).dtype
        prefix = prefix.to(decoder_dtype)
        prefix_mask = torch.ones(prefix.shape[:2], dtype=torch.bool, device=prefix.device)
        if self.decoder_mode == "frozen_base":
            with adapters_disabled(decoder):
                loss, num_tokens = target_token_nll(
                    decoder, prefix, prefix_mask, target_ids, target_mask
                )
        else:
            loss, num_tokens = target_token_nll(
                decoder, prefix, prefix_mask, target_ids, target_mask
            )
        return LossOutput(loss, {"rec_nll": float(loss.detach()), "rec_tokens": float(num_tokens)})


class ItemTextObjective(nn.Module):
    """Semantic warm-up: reconstruct an item's own text from its continuous token x_i alone.

        L_item = -1/N Σ_t log p_LLM( y_t | x_i, y_<t ),   y = text of item i

    x_i = P_item(...) enters the decoder directly as a one-token prefix (not through W_v and g):
    x_i is exactly the token the encoder feeds the LLM in a history, so this aligns P_item's
    output with the LLM's input-embedding space, which is what warm-up is for; routing through
    W_v and g would let those two absorb the alignment and leave P_item's tokens unreadable.
    """

    def forward(
        self,
        decoder: nn.Module,
        item_tokens: torch.Tensor,
        target_ids: torch.Tensor,
        target_mask: torch.Tensor,
    ) -> LossOutput:
        """item_tokens (M, d), target_ids (M, Y), target_mask (M, Y)."""
        prefix = item_tokens.unsqueeze(1)  # (M, 1, d)
        prefix_mask = torch.ones(prefix.shape[:2], dtype=torch.bool, device=prefix.device)
        loss, num_tokens = target_token_nll(decoder, prefix, prefix_mask, target_ids, target_mask)
        return LossOutput(
            loss, {"item_text_nll": float(loss.detach()), "item_text_tokens": float(num_tokens)}
        )
