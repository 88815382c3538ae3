"""What every adapter returns: raw items and interactions in canonical column names.

An adapter's only job is reading a source format into `RawData`; everything after that (checks,
de-duplication, filtering, ordering, splitting, queries) is shared and lives in `preprocess.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from karma.data import schema
from karma.data.tables import is_member, text_values
from karma.errors import DataError


@dataclass
class RawData:
    """Items and interactions as read from the source, before any preprocessing.

    `interactions` has `user_id`, `item_id` (str), `timestamp` (int64 seconds), `event` and
    `query` (str or None); its row order is the file order, which breaks timestamp ties.
    `items` is None when the source has no item table (items are then made from the ids).
    """

    name: str
    """Dataset name recorded in the manifest."""
    source: dict[str, str]
    """How it was read: format and path(s), recorded in the manifest."""
    interactions: pd.DataFrame
    """user_id, item_id, timestamp, event, query; file order."""
    interactions_file: Path
    """The file the interactions came from (named in error messages)."""
    items: pd.DataFrame | None = None
    """item_id, title, categories (list[str]), attribute columns, optional image_path."""
    items_file: Path | None = None
    """The file the items came from."""
    text_attributes: list[str] = field(default_factory=list)
    """Item attribute columns the LLM reads (e.g. year, brand)."""
    input_files: list[Path] = field(default_factory=list)
    """Every file read, hashed into the manifest."""


def make_interactions(
    user_ids: pd.Series,
    item_ids: pd.Series,
    timestamps: np.ndarray,
    events: pd.Series | None = None,
    queries: pd.Series | None = None,
) -> pd.DataFrame:
    """The canonical interaction frame (file order, fresh 0..n-1 index)."""
    n = len(user_ids)
    # Object columns on purpose: pandas 3 would infer arrow strings, much slower for 1M-row
    # isin / groupby on ids.
    columns = {
        "user_id": text_values(user_ids),
        "item_id": text_values(item_ids),
        "timestamp": np.asarray(timestamps, dtype=np.int64),
        "event": pd.Series(text_values(events), dtype=object).str.strip().str.lower()
        if events is not None
        else np.full(n, schema.CLICK, dtype=object),
        "query": queries.astype(object).where(queries.notna(), None).to_numpy(object)
        if queries is not None
        else np.full(n, None, dtype=object),
    }
    return pd.DataFrame(
        {
            k: pd.Series(v, dtype=np.int64 if k == "timestamp" else object)
            for k, v in columns.items()
        }
    )


def check_raw(raw: RawData, unknown_items: str) -> tuple[RawData, int]:
    """Validate ids and events; drop or reject interactions naming unknown items.

    Returns the (possibly filtered) data and the number of interactions dropped.
    """
    inter = raw.interactions
    where = raw.interactions_file
    for column in ("user_id", "item_id"):
        empty = text_values(inter[column]) == ""
        if empty.any():
            row = int(np.flatnonzero(empty)[0])
            raise DataError(
                f"{where}: row {row + 1} has an empty {column}; fill it or drop the row"
            )
    bad_event = ~inter["event"].isin([schema.CLICK, schema.EXPOSURE]).to_numpy()
    if bad_event.any():
        row = int(np.flatnonzero(bad_event)[0])
        raise DataError(
            f"{where}: row {row + 1} has event {inter['event'].iloc[row]!r}; "
            f"events must be {schema.CLICK!r} or {schema.EXPOSURE!r}"
        )
    if raw.items is None:
        return raw, 0
    items = raw.items
    duplicated = items["item_id"].duplicated().to_numpy()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated)[0])
        raise DataError(
            f"{raw.items_file}: row {row + 1} repeats item id {items['item_id'].iloc[row]!r}; "
            "item ids must be unique"
        )
    known = is_member(inter["item_id"], items["item_id"])
    if known.all():
        return raw, 0
    if unknown_items == "error":
        row = int(np.flatnonzero(~known)[0])
        raise DataError(
            f"{where}: row {row + 1} names item {inter['item_id'].iloc[row]!r}, which is not in "
            f"{raw.items_file}; fix the ids or pass --unknown-items drop"
        )
    dropped = int((~known).sum())
    raw.interactions = inter[known].reset_index(drop=True)
    if raw.interactions.empty:
        raise DataError(f"{where}: no interaction names an item of {raw.items_file}; check the ids")
    return raw, dropped


def items_from_ids(item_ids: pd.Series) -> pd.DataFrame:
    """An item table for a source without one: title = id, no categories."""
    ids = np.sort(pd.unique(text_values(item_ids)))
    return pd.DataFrame(
        {
            "item_id": pd.Series(ids, dtype=object),
            "title": pd.Series(ids, dtype=object),
            "categories": [[] for _ in range(len(ids))],
        }
    )
