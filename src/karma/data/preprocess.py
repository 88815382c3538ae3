"""Raw data -> canonical tables: de-duplicate, filter, order, split, attach queries.

The steps, in order (all vectorised with numpy / pandas):

1. interactions naming unknown items: an error naming the first row, or dropped and counted;
2. duplicates (same user, item and timestamp) collapse to their first occurrence in the file;
3. iterative filtering until nothing changes: users with fewer than
   `max(k_core_users, min_history)` clicks and items with fewer than `k_core_items` clicks go;
4. ordering: users by id, then by timestamp; equal timestamps keep their order in the input file
   (a stable sort on the file row; `ties` can order them by item id, or by the file row
   reversed), so the same file always gives the same sequences;
5. split: leave-one-out (each user's last click = test, second-last = valid, the rest = train) or a
   global time split (cut points from click fractions, or given timestamps). An exposure takes the
   split of the next click of its user (the click it was shown with), `test` after the last click;
6. items with no remaining interaction are dropped (unless `keep_unused_items`);
7. cold items (`cold_items > 0`, see `karma.data.cold`): a stratified fraction of the remaining
   items loses every interaction except its users' first valid / test clicks (the split is made
   first; the cold items stay in the item table);
8. queries: given (`column`), synthesized from category words (`synth`), or none.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from karma.data import schema
from karma.data.cold import apply_cold_protocol
from karma.data.config import PrepareConfig
from karma.data.queries import queries_from_column, synthesize_queries
from karma.data.raw import RawData, check_raw, items_from_ids
from karma.data.tables import is_member
from karma.errors import DataError


def as_object_column(values: np.ndarray) -> pd.Series:
    """Strings kept as Python objects (pandas 3 would convert them to slower arrow strings)."""
    return pd.Series(np.asarray(values, dtype=object), dtype=object)


def filter_counts(
    inter: pd.DataFrame, min_user_clicks: int, min_item_clicks: int
) -> tuple[pd.DataFrame, int]:
    """Iteratively drop users / items under their click minimum; returns (kept, rounds)."""
    rounds = 0
    while True:
        clicks = inter["event"].to_numpy() == schema.CLICK
        user_clicks = inter["user_id"][clicks].value_counts()
        item_clicks = inter["item_id"][clicks].value_counts()
        keep = np.ones(len(inter), dtype=bool)
        if min_user_clicks > 1:
            counts = inter["user_id"].map(user_clicks).fillna(0).to_numpy()
            keep &= counts >= min_user_clicks
        if min_item_clicks > 1:
            counts = inter["item_id"].map(item_clicks).fillna(0).to_numpy()
            keep &= counts >= min_item_clicks
        if keep.all():
            return inter, rounds
        inter = inter[keep]
        rounds += 1


def sort_interactions(inter: pd.DataFrame, ties: str = "file") -> pd.DataFrame:
    """Order by user id, then timestamp, then `ties` (file row `_row`, item id, or the file row
    reversed); the file row breaks any tie left, so the order is always total."""
    user_codes, _ = pd.factorize(inter["user_id"], sort=True)
    row = inter["_row"].to_numpy()
    keys = [row, inter["timestamp"].to_numpy(), user_codes]  # last key is primary
    if ties == "item":
        keys.insert(1, pd.factorize(inter["item_id"], sort=True)[0])
    elif ties == "reversed":
        keys[0] = -row
    order = np.lexsort(tuple(keys))
    return inter.iloc[order].reset_index(drop=True)


def assign_splits(inter: pd.DataFrame, config: PrepareConfig) -> tuple[np.ndarray, dict[str, Any]]:
    """(n,) split label per row of sorted `inter`, and the protocol for the manifest."""
    clicks = inter["event"].to_numpy() == schema.CLICK
    if config.split == "leave-one-out":
        from_end = inter[clicks].groupby("user_id", sort=False).cumcount(ascending=False)
        click_split = np.where(from_end == 0, "test", np.where(from_end == 1, "valid", "train"))
        protocol: dict[str, Any] = {"protocol": "leave-one-out"}
    else:
        if config.valid_start is not None and config.test_start is not None:
            valid_start, test_start = config.valid_start, config.test_start
        else:
            times = np.sort(inter["timestamp"].to_numpy()[clicks])
            n = len(times)
            valid_start = int(
                times[min(n - 1, int(n * (1 - config.valid_fraction - config.test_fraction)))]
            )
            test_start = int(times[min(n - 1, int(n * (1 - config.test_fraction)))])
        t = inter["timestamp"].to_numpy()[clicks]
        click_split = np.where(
            t >= test_start, "test", np.where(t >= valid_start, "valid", "train")
        )
        protocol = {"protocol": "time", "valid_start": valid_start, "test_start": test_start}
    split = pd.Series(np.full(len(inter), None, dtype=object), dtype=object)
    split[clicks] = click_split
    # Exposures take the split of their user's next click (the one they were shown with).
    split = split.groupby(inter["user_id"].to_numpy(), sort=False).bfill().fillna("test")
    return split.to_numpy(object), protocol


def prepare_tables(
    raw: RawData, config: PrepareConfig
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(items, interactions, report) in canonical form; report goes into the manifest."""
    raw, unknown_dropped = check_raw(raw, config.unknown_items)
    inter = raw.interactions.assign(_row=np.arange(len(raw.interactions)))
    before = len(inter)
    inter = inter.drop_duplicates(["user_id", "item_id", "timestamp"], keep="first")
    duplicates = before - len(inter)
    inter, rounds = filter_counts(
        inter, max(config.k_core_users, config.min_history), config.k_core_items
    )
    if not (inter["event"] == schema.CLICK).any():
        raise DataError(
            f"{raw.interactions_file}: no clicks left after filtering (min_history="
            f"{config.min_history}, k-core {config.k_core_users}/{config.k_core_items}); "
            "lower the thresholds"
        )
    inter = sort_interactions(inter, config.ties)
    split, protocol = assign_splits(inter, config)
    inter["split"] = as_object_column(split)

    items = raw.items if raw.items is not None else items_from_ids(inter["item_id"])
    used = is_member(items["item_id"], inter["item_id"])
    if not config.keep_unused_items:
        items = items[used]
    items = items.reset_index(drop=True)
    cold: dict[str, Any] | None = None
    if config.cold_items > 0:
        inter, cold = apply_cold_protocol(
            items, inter, config.cold_items, config.seed, config.cold_strata
        )

    mode = config.queries
    has_column = inter["query"].notna().any()
    if mode == "column" and not has_column:
        raise DataError(
            f"{raw.interactions_file}: --queries column, but the data has no query column; map "
            "one (query=COLUMN) or use --queries synth"
        )
    if mode == "auto":
        mode = "column" if has_column else "synth"
    if mode == "column":
        inter["query"] = as_object_column(queries_from_column(inter["query"]))
    elif mode == "synth":
        positions = inter["item_id"].map(pd.Series(np.arange(len(items)), index=items["item_id"]))
        inter["query"] = as_object_column(
            synthesize_queries(
                positions.to_numpy(np.int64),
                list(items["categories"]),
                config.query_words,
                config.seed,
            )
        )
    else:
        inter["query"] = as_object_column(np.full(len(inter), None, dtype=object))
    inter = inter[list(schema.INTERACTION_COLUMNS)]
    report = {
        "split": protocol,
        "queries": mode,
        "removed": {
            "duplicates": int(duplicates),
            "unknown_item_interactions": int(unknown_dropped),
            "filtered_interactions": int(
                before - duplicates - len(inter) - (cold["removed_interactions"] if cold else 0)
            ),
            "filter_rounds": int(rounds),
            "unused_items": int((~used).sum()) if not config.keep_unused_items else 0,
        },
        "items_with_interactions": int(used.sum()),
        "cold": cold,
    }
    return items, inter, report
