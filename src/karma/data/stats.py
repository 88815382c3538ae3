"""`karma data stats`: size, sparsity and history-length distribution of a prepared dataset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from karma.data import schema
from karma.data.dataset import PreparedDataset

PERCENTILES = (0, 10, 25, 50, 75, 90, 99, 100)


@dataclass(frozen=True)
class DatasetStats:
    """Counts of a prepared dataset and the per-user click-history lengths."""

    name: str
    users: int
    items: int
    interactions: int
    clicks: int
    pairs: int  # distinct (user, item) clicked pairs: repeat clicks fill no new cell
    split_clicks: dict[str, int]
    history_lengths: np.ndarray  # (users,) clicks per user

    @property
    def sparsity(self) -> float:
        """1 - distinct clicked pairs / (users * items): the fraction of empty user-item cells."""
        cells = self.users * self.items
        return 1.0 - self.pairs / cells if cells else 0.0


def dataset_stats(ds: PreparedDataset) -> DatasetStats:
    inter = ds.interactions
    clicks = inter[inter["event"] == schema.CLICK]
    lengths = clicks.groupby("user_id", sort=False).size().to_numpy(np.int64)
    return DatasetStats(
        name=ds.name,
        users=int(inter["user_id"].nunique()),
        items=ds.num_items,
        interactions=len(inter),
        clicks=len(clicks),
        pairs=len(clicks.drop_duplicates(["user_id", "item_id"])),
        split_clicks={s: int((clicks["split"] == s).sum()) for s in schema.SPLITS},
        history_lengths=lengths,
    )


def format_stats(stats: DatasetStats) -> str:
    """A plain-text table for the terminal."""
    rows = [
        ("users", f"{stats.users:,}"),
        ("items", f"{stats.items:,}"),
        ("interactions", f"{stats.interactions:,}"),
        ("clicks", f"{stats.clicks:,}"),
        *((f"{s} clicks", f"{n:,}") for s, n in stats.split_clicks.items()),
        ("sparsity", f"{stats.sparsity:.4%}"),
    ]
    lines = [f"dataset {stats.name}"]
    lines += [f"  {k:<14}{v:>14}" for k, v in rows]
    lengths = stats.history_lengths
    lines.append("history length (clicks per user)")
    lines.append("  " + "".join(f"{'p' + str(p):>8}" for p in PERCENTILES) + f"{'mean':>9}")
    values = np.percentile(lengths, PERCENTILES) if len(lengths) else np.zeros(len(PERCENTILES))
    mean = lengths.mean() if len(lengths) else 0.0
    lines.append("  " + "".join(f"{v:>8.0f}" for v in values) + f"{mean:>9.1f}")
    return "\n".join(lines)


def plot_history_lengths(stats: DatasetStats, path: Path) -> Path:
    """Histogram of history lengths (log-spaced bins: lengths are heavy-tailed) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = stats.history_lengths
    top = max(int(lengths.max()) if len(lengths) else 1, 2)
    bins = np.unique(np.geomspace(1, top + 1, num=40).astype(int))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(lengths, bins=bins, color="#4477aa")
    ax.set_xscale("log")
    ax.set_xlabel("clicks per user")
    ax.set_ylabel("users")
    ax.set_title(f"{stats.name}: history length ({stats.users:,} users)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
