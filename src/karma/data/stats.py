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
    tied_held_out: dict[str, int]
    """Valid / test clicks with the same timestamp as their user's click before them: for these,
    the order of same-timestamp clicks (`karma data prepare --ties`) decides the target."""
    tie_breaking: str = ""

    @property
    def sparsity(self) -> float:
        """1 - distinct clicked pairs / (users * items): the fraction of empty user-item cells."""
        cells = self.users * self.items
        return 1.0 - self.pairs / cells if cells else 0.0


def dataset_stats(ds: PreparedDataset) -> DatasetStats:
    inter = ds.interactions
    clicks = inter[inter["event"] == schema.CLICK]
    lengths = clicks.groupby("user_id", sort=False).size().to_numpy(np.int64)
    users, times = clicks["user_id"].to_numpy(), clicks["timestamp"].to_numpy()
    tied = np.zeros(len(clicks), dtype=bool)  # rows are stored by user, then time
    tied[1:] = (users[1:] == users[:-1]) & (times[1:] == times[:-1])
    split = clicks["split"].to_numpy()
    return DatasetStats(
        name=ds.name,
        users=int(inter["user_id"].nunique()),
        items=ds.num_items,
        interactions=len(inter),
        clicks=len(clicks),
        pairs=len(clicks.drop_duplicates(["user_id", "item_id"])),
        split_clicks={s: int((clicks["split"] == s).sum()) for s in schema.SPLITS},
        history_lengths=lengths,
        tied_held_out={s: int((tied & (split == s)).sum()) for s in ("valid", "test")},
        tie_breaking=str(ds.manifest.get("tie_breaking", "")),
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
        *(
            (f"{s} tied", f"{n:,} ({n / max(stats.split_clicks[s], 1):.0%})")
            for s, n in stats.tied_held_out.items()
        ),
    ]
    lines = [f"dataset {stats.name}"]
    lines += [f"  {k:<14}{v:>14}" for k, v in rows]
    if any(stats.tied_held_out.values()):
        lines.append(
            "  (tied: a held-out click with the same timestamp as the click before it; their order"
            f" here: {stats.tie_breaking or 'as prepared'}; `karma data prepare --ties` changes it)"
        )
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
