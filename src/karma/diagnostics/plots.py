"""Figures of semantic collapse: users × slots heatmaps, per-layer curves, run-vs-run comparison.

Built on `matplotlib.figure.Figure` (no pyplot, no GUI backend: saving uses Agg), so they are safe
on headless machines and in tests. A collapsed layer shows in the heatmap as vertical strips (all
users on the same slots); in the curves as sink mass near 1, entropy near 0, barcode near 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from karma.diagnostics.attention import ReadoutAttention
from karma.diagnostics.metrics import default_width, right_aligned_lift

LIFT_LABEL = "history attention ÷ uniform (1 = uniform)"
CURVES = (
    ("sink_mass", "sink mass (max position)"),
    ("first_position_mass", "first-position mass"),
    ("history_entropy", "history entropy (normalized)"),
    ("barcode", "barcode score"),
)


def aligned_history_map(
    attention: ReadoutAttention, layer: int, width: int, max_users: int = 200
) -> np.ndarray:
    """(users, width) head-averaged history attention as lift over uniform, right-aligned.

    Each row is the readout attention restricted to the user's history, renormalized and
    multiplied by the history length (`n_H · p_j`, as the barcode score uses it): 1 everywhere
    for uniform attention whatever the length, so users are comparable. NaN = no item there.
    """
    users = min(max_users, attention.num_users)
    rows = attention.weights[layer, :users].mean(dim=1)  # (U, L) mean over heads
    lift, filled = right_aligned_lift(rows, attention.history_mask[:users], width)
    return torch.where(filled, lift, torch.full_like(lift, float("nan"))).numpy()


def _heatmap(axes: Axes, image: np.ndarray, title: str, vmax: float) -> Any:
    cmap = "magma"
    shown = axes.imshow(
        np.ma.masked_invalid(image),
        aspect="auto",
        cmap=cmap,
        vmin=0.0,
        vmax=vmax,
        interpolation="nearest",
    )
    axes.set_facecolor("0.85")  # empty slots (short histories) in light grey
    width = image.shape[1]
    ticks = sorted({0, width // 2, width - 1})
    axes.set_xticks(ticks, [f"-{width - t}" for t in ticks])
    axes.set_xlabel("history slot (-1 = most recent)")
    axes.set_ylabel("user")
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_title(title, fontsize=10)
    return shown


def _robust_vmax(images: list[np.ndarray]) -> float:
    """The 99th percentile (a single extreme cell must not wash the map out), at least 2."""
    values = np.concatenate([im[np.isfinite(im)] for im in images])
    return max(2.0, float(np.quantile(values, 0.99))) if values.size else 2.0


def plot_attention_heatmaps(
    attention: ReadoutAttention,
    layers: list[int],
    path: str | Path,
    width: int | None = None,
    max_users: int = 200,
    title: str = "",
) -> Path:
    """One users × slots heatmap per chosen layer (shared color scale), saved as a PNG."""
    width = width or default_width(attention.history_mask)
    images = [aligned_history_map(attention, layer, width, max_users) for layer in layers]
    vmax = _robust_vmax(images)
    figure = Figure(figsize=(3.2 * len(layers) + 1.0, 4.2), layout="constrained")
    axes = figure.subplots(1, len(layers), squeeze=False)[0]
    shown = None
    for ax, layer, image in zip(axes, layers, images):
        shown = _heatmap(ax, image, f"layer {layer}", vmax)
    figure.colorbar(shown, ax=list(axes), label=LIFT_LABEL)
    figure.suptitle(title or "readout attention over history (heads averaged)")
    return _save(figure, path)


def _curve(axes: Axes, summary: dict[str, Any], metric: str, label: str | None) -> None:
    layers = [row["layer"] for row in summary["layers"]]
    mean = np.array([_nan(row[metric]) for row in summary["layers"]])
    heads = np.array([[_nan(v) for v in row["heads"][metric]] for row in summary["layers"]])
    (line,) = axes.plot(layers, mean, marker="o", markersize=3, label=label)
    if heads.size and np.isfinite(heads).any():
        axes.fill_between(
            layers,
            np.nanmin(heads, 1),
            np.nanmax(heads, 1),
            alpha=0.2,
            color=line.get_color(),
            linewidth=0,
        )


def _nan(value: float | None) -> float:
    return np.nan if value is None else value


def plot_layer_curves(
    summaries: dict[str, dict[str, Any]], path: str | Path, title: str = ""
) -> Path:
    """Per-layer sink mass, first-position mass, entropy and barcode (line = head mean, band =
    min..max over heads), one line per run in `summaries` ({label: summary})."""
    figure = Figure(figsize=(10, 6.5), layout="constrained")
    for ax, (metric, name) in zip(figure.subplots(2, 2).flat, CURVES):
        for label, summary in summaries.items():
            _curve(ax, summary, metric, label)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        if len(summaries) > 1:
            ax.legend(fontsize=8)
    figure.suptitle(title or "collapse metrics per layer")
    return _save(figure, path)


def plot_comparison(
    attentions: dict[str, ReadoutAttention],
    summaries: dict[str, dict[str, Any]],
    layer: int,
    path: str | Path,
    width: int | None = None,
    max_users: int = 200,
) -> Path:
    """Two (or more) runs on the same users: heatmaps of `layer` side by side (shared scale) over
    per-layer sink-mass, entropy and barcode curves."""
    labels = list(attentions)
    width = width or default_width(attentions[labels[0]].history_mask)
    images = [aligned_history_map(attentions[k], layer, width, max_users) for k in labels]
    vmax = _robust_vmax(images)
    figure = Figure(figsize=(max(9.0, 4.2 * len(labels)), 8), layout="constrained")
    top, bottom = figure.subfigures(2, 1, height_ratios=[1.25, 1])
    heat_axes = top.subplots(1, len(labels), squeeze=False)[0]
    shown = None
    for ax, label, image in zip(heat_axes, labels, images):
        shown = _heatmap(ax, image, f"{label} — layer {layer}", vmax)
    top.colorbar(shown, ax=list(heat_axes), label=LIFT_LABEL)
    for ax, (metric, name) in zip(bottom.subplots(1, 3), (CURVES[0], CURVES[2], CURVES[3])):
        for label in labels:
            _curve(ax, summaries[label], metric, label)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(figure, path)


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path
