"""Attention-sink and barcode metrics on readout attention rows (pure tensor functions).

Shapes: `weights` is (..., U, L) — any leading dims (layers, heads) — with rows that sum to 1 over
the real positions; `attention_mask`/`history_mask` are (U, L) bool. "Semantic collapse" shows as
(a) a sink: most of the row on one position (often the first), and (b) a barcode: every user's
attention on the same few history slots whatever items sit there.

Variable-length histories are aligned to the right (relative to the end): column `width - 1` is
each user's most recent history item, column `width - 2` the one before, and so on; a user with a
shorter history leaves the older columns empty, and column means are over the users that fill them.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from karma.diagnostics.attention import ReadoutAttention

_EPS = 1e-12


def max_position_mass(weights: torch.Tensor) -> torch.Tensor:
    """Sink mass: `max_j a_j`, the weight on the single most-attended position. (..., U)."""
    return weights.max(dim=-1).values


def first_position_mass(weights: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """`a_f`, the weight on each row's first real position f (the BOS sink). (..., U).

    With left padding f is the first unmasked index, so it is looked up per user.
    """
    first = attention_mask.int().argmax(dim=-1)  # (U,)
    index = first.view(*([1] * (weights.dim() - 2)), -1, 1).expand(*weights.shape[:-1], 1)
    return weights.gather(-1, index).squeeze(-1)


def history_mass(weights: torch.Tensor, history_mask: torch.Tensor) -> torch.Tensor:
    """`Σ_{j∈H} a_j`, the share of the row on history-item positions H. (..., U)."""
    return (weights * history_mask).sum(dim=-1)


def history_distribution(weights: torch.Tensor, history_mask: torch.Tensor) -> torch.Tensor:
    """`p_j = a_j / Σ_{k∈H} a_k` for j in H, 0 elsewhere: the row restricted to history. (..., U, L)."""
    restricted = weights * history_mask
    return restricted / restricted.sum(dim=-1, keepdim=True).clamp_min(_EPS)


def entropy(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Shannon entropy `H(p) = -Σ_j p_j log p_j` in nats, with `0 log 0 = 0`."""
    return -(p * p.clamp_min(_EPS).log()).sum(dim=dim)


def normalized_history_entropy(weights: torch.Tensor, history_mask: torch.Tensor) -> torch.Tensor:
    """`H(p) / log n_H` with p the history-restricted row and n_H the user's history length.

    1 for uniform attention over the history, 0 for all of it on one item. NaN for users with
    fewer than two history items (the ratio is undefined there). (..., U).
    """
    n = history_mask.sum(dim=-1).to(weights.dtype)  # (U,)
    h = entropy(history_distribution(weights, history_mask))
    return torch.where(n >= 2, h / n.clamp_min(2).log(), torch.full_like(h, math.nan))


def right_aligned_lift(
    weights: torch.Tensor, history_mask: torch.Tensor, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """History attention as lift over uniform, `n_H · p_j`, right-aligned into `width` columns.

    Returns `(lift (..., U, width), filled (U, width) bool)`. The lift is 1 everywhere for uniform
    attention whatever the history length, so users with different lengths share one scale and a
    column mean is not biased towards the slots only short histories fill.
    """
    if width < 1:
        raise ValueError(f"width: must be >= 1, got {width}")
    mask = history_mask.bool()
    n = mask.sum(dim=-1, keepdim=True)  # (U, 1)
    # rank from the end among history positions: 0 for the most recent item
    rank_from_end = mask.flip(-1).cumsum(-1).flip(-1) - 1  # (U, L)
    keep = mask & (rank_from_end < width)
    column = torch.where(keep, width - 1 - rank_from_end, torch.full_like(rank_from_end, width))
    lift = history_distribution(weights, mask) * n.to(weights.dtype)  # (..., U, L)
    index = column.expand_as(lift)
    out = torch.zeros(*lift.shape[:-1], width + 1, dtype=lift.dtype)
    out.scatter_add_(-1, index, lift * keep)
    filled = torch.zeros(mask.shape[0], width + 1, dtype=torch.bool)
    filled.scatter_(-1, column, keep)
    return out[..., :width], filled[:, :width]


def column_mean(aligned: torch.Tensor, filled: torch.Tensor) -> torch.Tensor:
    """`m_c = Σ_u x_uc / |{u : c filled}|`, the mean over users that fill column c. (..., width)."""
    count = filled.sum(dim=0).to(aligned.dtype)  # (width,)
    return (aligned * filled).sum(dim=-2) / count.clamp_min(1)


def barcode_score(mean: torch.Tensor, filled_columns: torch.Tensor | None = None) -> torch.Tensor:
    """`1 - H(q) / log C` with `q = m / Σ m` the normalized column mean over the C filled columns.

    0 when users' attention averages out evenly over slots, 1 when every user puts all of it on
    the same slot. Users each peaked on a different slot also average out, so they score low.
    """
    if filled_columns is None:
        filled_columns = torch.ones(mean.shape[-1], dtype=torch.bool)
    c = int(filled_columns.sum())
    if c < 2:
        return torch.full(mean.shape[:-1], math.nan)
    q = (mean * filled_columns).clamp_min(0)
    q = q / q.sum(dim=-1, keepdim=True).clamp_min(_EPS)
    return 1.0 - entropy(q) / math.log(c)


def gini(values: torch.Tensor) -> torch.Tensor:
    """Gini coefficient `G = Σ_i (2i - n - 1) x_(i) / (n Σ_i x_i)`, x ascending, i = 1..n.

    0 for equal values; `(n - 1) / n` when one value holds everything. Over the last dim.
    """
    x = values.sort(dim=-1).values
    n = x.shape[-1]
    i = torch.arange(1, n + 1, dtype=x.dtype)
    return ((2 * i - n - 1) * x).sum(dim=-1) / (n * x.sum(dim=-1).clamp_min(_EPS))


def default_width(history_mask: torch.Tensor) -> int:
    """The median history length: half the users fill every aligned column."""
    lengths = history_mask.sum(dim=-1)
    return max(2, int(lengths.float().median().item()))


METRICS = ("sink_mass", "first_position_mass", "history_mass", "history_entropy", "barcode", "gini")


def summarize(attention: ReadoutAttention, width: int | None = None) -> dict[str, Any]:
    """Per layer and head: every metric, averaged over users (barcode/Gini over the column mean).

    Returns a JSON-able dict: `{num_users, num_layers, num_heads, width, layers: [{layer,
    <metric>: mean over heads, heads: {<metric>: [per head]}}]}`.
    """
    width = width or default_width(attention.history_mask)
    weights = attention.weights  # (layers, U, heads, L)
    per_head = weights.transpose(1, 2)  # (layers, heads, U, L)
    lift, filled = right_aligned_lift(per_head, attention.history_mask, width)
    mean = column_mean(lift, filled)  # (layers, heads, width)
    filled_columns = filled.any(dim=0)
    head_values = {
        "sink_mass": max_position_mass(per_head).mean(-1),
        "first_position_mass": first_position_mass(per_head, attention.attention_mask).mean(-1),
        "history_mass": history_mass(per_head, attention.history_mask).mean(-1),
        "history_entropy": normalized_history_entropy(per_head, attention.history_mask).nanmean(-1),
        "barcode": barcode_score(mean, filled_columns),
        "gini": gini(mean[..., filled_columns]),
    }  # each (layers, heads)
    layers = []
    for layer in range(attention.num_layers):
        row: dict[str, Any] = {"layer": layer}
        for name in METRICS:
            row[name] = _number(head_values[name][layer].nanmean())
        row["heads"] = {name: [_number(v) for v in head_values[name][layer]] for name in METRICS}
        layers.append(row)
    return {
        "num_users": attention.num_users,
        "num_layers": attention.num_layers,
        "num_heads": attention.num_heads,
        "width": width,
        "layers": layers,
    }


def _number(value: torch.Tensor) -> float | None:
    """A JSON-safe float (NaN becomes None)."""
    v = float(value)
    return None if math.isnan(v) else round(v, 6)


def per_layer_markdown(summary: dict[str, Any]) -> str:
    """A markdown table: one row per layer, metrics averaged over heads, plus the worst head."""
    lines = [
        "| layer | sink mass | first-pos mass | history mass | entropy (norm.) | barcode | Gini "
        "| max barcode (head) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary["layers"]:
        heads = [(v, h) for h, v in enumerate(row["heads"]["barcode"]) if v is not None]
        worst = f"{max(heads)[0]:.3f} ({max(heads)[1]})" if heads else "–"
        cells = [_cell(row[name]) for name in METRICS]
        lines.append(f"| {row['layer']} | " + " | ".join(cells) + f" | {worst} |")
    return "\n".join(lines) + "\n"


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"
