"""Write small prepared datasets from plain click sequences (tests, benchmarks, examples).

`write_leave_one_out(root, sequences, num_items)` follows `karma.data.schema`: items `i0..iN-1`,
each user's clicks in time order, the last click `test`, the one before `valid`, the rest `train`
(users with fewer than 3 clicks keep all of them in train). The real adapters live in
`karma.data`; this writer exists so evaluation code can be tested without them.

`write_tiny_dataset(root)` writes a fixed tiny dataset with text: 40 items in 6 genres, 24 users
who click mostly within one genre (the genre is each click's query), plus one exposure each.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from karma.data import schema


def leave_one_out_splits(length: int) -> list[str]:
    """Split labels of one user's clicks: ..., train, valid, test."""
    if length < 3:
        return ["train"] * length
    return ["train"] * (length - 2) + ["valid", "test"]


def write_leave_one_out(
    root: str | Path,
    sequences: Sequence[Sequence[int]],
    num_items: int,
    titles: Sequence[str] | None = None,
    user_ids: Sequence[str] | None = None,
    queries: Sequence[Sequence[str | None]] | None = None,
    name: str = "synthetic",
    features: dict[str, np.ndarray] | None = None,
    cold_items: Sequence[int] | None = None,
) -> Path:
    """Write a prepared dataset where user u clicked `sequences[u]` (item indices) in order.

    `cold_items` (item indices) are listed as the new-item protocol's cold items in the manifest;
    the sequences must already keep them out of training (only as valid / test targets).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    items = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(num_items)],
            "title": list(titles)
            if titles is not None
            else [f"item {i}" for i in range(num_items)],
            "categories": [[] for _ in range(num_items)],
        }
    )
    rows = []
    for u, seq in enumerate(sequences):
        user = user_ids[u] if user_ids is not None else f"u{u:06d}"
        for t, (item, split) in enumerate(zip(seq, leave_one_out_splits(len(seq)))):
            query = queries[u][t] if queries is not None else None
            rows.append((user, f"i{int(item)}", np.int64(t), schema.CLICK, query, split))
    interactions = pd.DataFrame(rows, columns=list(schema.INTERACTION_COLUMNS))
    interactions["timestamp"] = interactions["timestamp"].astype(np.int64)
    interactions["query"] = interactions["query"].astype(object)
    items.to_parquet(root / schema.ITEMS_FILE, index=False)
    interactions.to_parquet(root / schema.INTERACTIONS_FILE, index=False)
    manifest = {
        "name": name,
        "source": "karma.testing.datasets",
        "split_protocol": "leave-one-out",
        "num_items": num_items,
        "num_users": len(sequences),
        "num_interactions": len(rows),
    }
    if cold_items is not None:
        manifest["cold_items"] = {"item_ids": [f"i{int(i)}" for i in cold_items]}
    if features:
        (root / schema.FEATURES_DIR).mkdir(exist_ok=True)
        for feature, matrix in features.items():
            np.save(root / schema.FEATURES_DIR / f"{feature}.npy", matrix.astype(np.float32))
        manifest["features"] = {f: {"dim": int(m.shape[1])} for f, m in features.items()}
    (root / schema.MANIFEST_FILE).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return root


TINY_GENRES = ["comedy", "drama", "horror", "space", "western", "romance"]


def write_tiny_dataset(
    root: Path, num_items: int = 40, num_users: int = 24, seed: int = 0, feature_dim: int = 0
) -> Path:
    """Users click mostly within one genre, so the next item is learnable from the history.

    `feature_dim > 0` also writes a random (num_items, feature_dim) "text" feature matrix
    (its own seed-0 generator, so the clicks do not depend on it).
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    items = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(num_items)],
            "title": [
                f"Film {i} {TINY_GENRES[i % len(TINY_GENRES)]} story" for i in range(num_items)
            ],
            "categories": [[TINY_GENRES[i % len(TINY_GENRES)]] for i in range(num_items)],
        }
    )
    rows = []
    for u in range(num_users):
        genre = u % len(TINY_GENRES)
        pool = [i for i in range(num_items) if i % len(TINY_GENRES) == genre]
        length = int(rng.integers(5, 9))
        clicks = rng.choice(pool, size=min(length, len(pool)), replace=False)
        # Unlike `leave_one_out_splits`, users with 1-2 clicks still get a test (and valid) click.
        for t, item in enumerate(clicks):
            split = "test" if t == len(clicks) - 1 else "valid" if t == len(clicks) - 2 else "train"
            rows.append(
                {
                    "user_id": f"u{u:03d}",
                    "item_id": f"i{item}",
                    "timestamp": 1000 + t,
                    "event": "click",
                    "query": TINY_GENRES[genre],
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
    if feature_dim > 0:
        (root / schema.FEATURES_DIR).mkdir(exist_ok=True)
        features = np.random.default_rng(0).normal(size=(num_items, feature_dim))
        np.save(root / schema.FEATURES_DIR / "text.npy", features.astype(np.float32))
        manifest["features"] = {"text": {"dim": feature_dim}}
    (root / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return root
