"""A tiny prepared dataset written in code (no downloads): 40 items, 24 users, leave-one-out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

GENRES = ["comedy", "drama", "horror", "space", "western", "romance"]


def write_tiny_dataset(root: Path, num_items: int = 40, num_users: int = 24, seed: int = 0) -> Path:
    """Users click mostly within one genre, so the next item is learnable from the history."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    items = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(num_items)],
            "title": [f"Film {i} {GENRES[i % len(GENRES)]} story" for i in range(num_items)],
            "categories": [[GENRES[i % len(GENRES)]] for i in range(num_items)],
        }
    )
    rows = []
    for u in range(num_users):
        genre = u % len(GENRES)
        pool = [i for i in range(num_items) if i % len(GENRES) == genre]
        length = int(rng.integers(5, 9))
        clicks = rng.choice(pool, size=min(length, len(pool)), replace=False)
        for t, item in enumerate(clicks):
            split = "test" if t == len(clicks) - 1 else "valid" if t == len(clicks) - 2 else "train"
            rows.append(
                {
                    "user_id": f"u{u:03d}",
                    "item_id": f"i{item}",
                    "timestamp": 1000 + t,
                    "event": "click",
                    "query": GENRES[genre],
                    "split": split,
                }
            )
        exposed = int(rng.integers(num_items))
        rows.append(
            {
                "user_id": f"u{u:03d}",
                "item_id": f"i{exposed}",
                "timestamp": 1000,
                "event": "exposure",
                "query": None,
                "split": "train",
            }
        )
    inter = pd.DataFrame(rows).sort_values(["user_id", "timestamp"], kind="stable")
    items.to_parquet(root / "items.parquet")
    inter.to_parquet(root / "interactions.parquet")
    manifest = {"name": "tiny", "source": "tests", "text_attributes": [], "features": {}}
    (root / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return root
