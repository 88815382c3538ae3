"""The new-item (cold start) protocol: which items are cold, and what of them a dataset keeps.

`karma data prepare --cold-items FRACTION` makes a seeded fraction of the catalog *cold*:

1. the split is made first, as without the protocol (leave-one-out or time);
2. items are sorted by training clicks (ties in a seeded random order) and cut into
   `strata` equal-size buckets; each bucket gives its share of the `round(FRACTION * N)` cold
   items (largest-remainder rounding), drawn uniformly inside the bucket, so the cold set has the
   catalog's popularity profile instead of being all tail items;
3. every interaction with a cold item is removed, except a click that is its user's first
   `valid` or first `test` click (the evaluation targets). Those targets are kept; everything
   else goes: training clicks (inputs and targets), exposures (hard negatives), later valid /
   test clicks. A user whose valid target is cold therefore keeps it as a valid target, and the
   reader (`PreparedDataset.examples`) strips cold items from every history, so it never
   reaches the test history either.

Cold items stay in the item table (the catalog), so evaluation ranks them; training never sees
them (`PreparedDataset.trainable_items` is False for them: no objective may use them as
negatives).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from karma.data import schema
from karma.data.tables import is_member


def stratum_quotas(sizes: np.ndarray, total: int) -> np.ndarray:
    """Cold items per stratum: `total * size / sum(size)` rounded by largest remainder.

    The floors are taken first; the `total - sum(floors)` left over go one each to the strata
    with the largest fractional parts (ties: the lower stratum first). Sums to `total` exactly.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    ideal = total * sizes / max(int(sizes.sum()), 1)
    quotas = np.floor(ideal).astype(np.int64)
    left = total - int(quotas.sum())
    order = np.argsort(-(ideal - quotas), kind="stable")
    quotas[order[:left]] += 1
    return np.minimum(quotas, sizes)


def choose_cold_items(
    train_counts: np.ndarray, fraction: float, seed: int, strata: int = 10
) -> np.ndarray:
    """(N,) bool: the cold items, `round(fraction * N)` of them, stratified by popularity.

    `train_counts[i]` is item i's number of training clicks. Deterministic given `seed`.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    if strata < 1:
        raise ValueError(f"strata must be >= 1, got {strata}")
    counts = np.asarray(train_counts, dtype=np.int64)
    num_items = len(counts)
    cold = np.zeros(num_items, dtype=bool)
    total = round(fraction * num_items)
    if total == 0:
        return cold
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.permutation(num_items), counts))  # least clicked first, ties random
    buckets = np.array_split(order, min(strata, num_items))
    quotas = stratum_quotas(np.array([len(b) for b in buckets]), total)
    for bucket, quota in zip(buckets, quotas):
        cold[rng.choice(bucket, size=int(quota), replace=False)] = True
    return cold


def evaluation_targets(inter: pd.DataFrame) -> np.ndarray:
    """(n,) bool: the rows that are a user's first `valid` or first `test` click (sorted `inter`)."""
    is_target_split = (inter["event"].to_numpy() == schema.CLICK) & inter["split"].isin(
        ["valid", "test"]
    ).to_numpy()
    first = np.zeros(len(inter), dtype=bool)
    candidates = inter[is_target_split]
    first[np.flatnonzero(is_target_split)] = ~candidates.duplicated(["user_id", "split"]).to_numpy()
    return first


def strip_cold_interactions(
    inter: pd.DataFrame, cold_item_ids: pd.Series
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop every row naming a cold item except the evaluation targets; returns (kept, counts)."""
    is_cold = is_member(inter["item_id"], cold_item_ids)
    targets = evaluation_targets(inter)
    keep = ~is_cold | targets
    kept = inter[keep].reset_index(drop=True)
    split = inter["split"].to_numpy()
    counts = {
        "removed_interactions": int((~keep).sum()),
        "valid_targets": int((is_cold & targets & (split == "valid")).sum()),
        "test_targets": int((is_cold & targets & (split == "test")).sum()),
    }
    return kept, counts


def apply_cold_protocol(
    items: pd.DataFrame, inter: pd.DataFrame, fraction: float, seed: int, strata: int
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Choose the cold items of `items` and strip them from `inter`; returns (inter, manifest entry).

    Popularity is each item's number of training clicks in the split `inter` already carries.
    """
    train_clicks = inter[(inter["event"] == schema.CLICK) & (inter["split"] == "train")]
    per_item = train_clicks["item_id"].astype(str).value_counts()
    item_ids = items["item_id"].astype(str)
    counts = item_ids.map(per_item).fillna(0).to_numpy(np.int64)
    cold = choose_cold_items(counts, fraction, seed, strata)
    cold_ids = item_ids[cold]
    kept, removed = strip_cold_interactions(inter, cold_ids)
    entry = {
        "fraction": fraction,
        "seed": seed,
        "strata": strata,
        "count": int(cold.sum()),
        "training_clicks_removed": int(counts[cold].sum()),
        **removed,
        "item_ids": cold_ids.tolist(),
    }
    return kept, entry
