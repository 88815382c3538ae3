"""Write small prepared datasets from plain click sequences (tests, benchmarks, examples).

`write_leave_one_out(root, sequences, num_items)` follows `karma.data.schema`: items `i0..iN-1`,
each user's clicks in time order, the last click `test`, the one before `valid`, the rest `train`
(users with fewer than 3 clicks keep all of them in train). The real adapters live in
`karma.data`; this writer exists so evaluation code can be tested without them.
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
) -> Path:
    """Write a prepared dataset where user u clicked `sequences[u]` (item indices) in order."""
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
        "source": "karma.eval.synthetic",
        "split_protocol": "leave-one-out",
        "num_items": num_items,
        "num_users": len(sequences),
        "num_interactions": len(rows),
    }
    if features:
        (root / schema.FEATURES_DIR).mkdir(exist_ok=True)
        for feature, matrix in features.items():
            np.save(root / schema.FEATURES_DIR / f"{feature}.npy", matrix.astype(np.float32))
        manifest["features"] = {f: {"dim": int(m.shape[1])} for f, m in features.items()}
    (root / schema.MANIFEST_FILE).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return root
