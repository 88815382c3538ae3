"""The LC-Rec / LETTER JSON format (Amazon 2018 sets in many generative-recommendation repos).

A dataset `NAME` is two files in one directory:

- `NAME.inter.json`: `{"<user>": [item, item, ...]}`, each list the user's whole history, oldest
  first. There are no timestamps: the position in the list stands in for time (0, 1, 2, ...).
- `NAME.item.json`: `{"<item>": {"title", "description", "brand", "categories"}}`, where
  `categories` is the category path joined by "," (a name may itself hold ", ", as in
  "Tapes, Adhesives & Sealants", so only a comma not followed by a space separates two levels).

The text was cleaned by LETTER's `clean_text`, which appends "." to every field and stores an empty
(or over-long) description as ".": a field that is only "." counts as empty here. HTML entities
are unescaped. A category path root that every item shares ("Industrial & Scientific") says
nothing about an item and would put the same words in every synthetic query, so it is dropped.
`brand` and `description` become text attributes (`model.encoder.item_text_fields` gives each a
token budget).
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from karma.data.raw import RawData, make_interactions
from karma.data.tables import require_file
from karma.errors import DataError

INTER_SUFFIX = ".inter.json"
ITEM_SUFFIX = ".item.json"
ITEM_FIELDS = ("title", "description", "brand", "categories")
CATEGORY_SEP = re.compile(r",(?! )")  # "a,b" separates levels, "Tapes, Adhesives" does not


def lcrec_files(path: Path) -> tuple[Path, Path] | None:
    """(inter, item) files when `path` is an LC-Rec directory or `.inter.json` file, else None."""
    if path.is_file() and path.name.endswith(INTER_SUFFIX):
        inter = path
    elif path.is_dir():
        found = sorted(path.glob(f"*{INTER_SUFFIX}"))
        if not found:
            return None
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise DataError(f"{path} holds several LC-Rec datasets ({names}); give one .inter.json")
        inter = found[0]
    else:
        return None
    item = inter.with_name(inter.name[: -len(INTER_SUFFIX)] + ITEM_SUFFIX)
    if not item.is_file():
        raise DataError(f"{inter}: its item file {item.name} is missing; put it beside it")
    return inter, item


def clean_text(value: Any) -> str:
    """A cleaned text field: HTML entities unescaped, whitespace squeezed, "." alone = empty."""
    if value is None:
        return ""
    if isinstance(value, list):
        value = " ".join(str(v) for v in value)
    text = " ".join(html.unescape(str(value)).split())
    return "" if text.strip(". ") == "" else text


def category_path(value: Any) -> list[str]:
    """A joined category path -> its levels (cleaned, empty ones dropped)."""
    if isinstance(value, list):
        parts = [str(v) for v in value]
    else:
        parts = CATEGORY_SEP.split(clean_text(value))
    return [p for p in (clean_text(p) for p in parts) if p]


def _load_json_object(path: Path) -> dict[str, Any]:
    require_file(path, "input file")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise DataError(f"{path} is not valid UTF-8; re-encode the file as UTF-8") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict) or not data:
        raise DataError(f"{path}: expected one non-empty JSON object keyed by id")
    return data


def _read_items(path: Path) -> pd.DataFrame:
    records = _load_json_object(path)
    rows = []
    for item_id, record in records.items():
        if not isinstance(record, dict):
            raise DataError(
                f"{path}: item {item_id!r} is {type(record).__name__}, expected an object "
                f"with {', '.join(ITEM_FIELDS)}"
            )
        rows.append(
            {
                "item_id": str(item_id),
                "title": clean_text(record.get("title")),
                "categories": category_path(record.get("categories")),
                "brand": clean_text(record.get("brand")) or None,
                "description": clean_text(record.get("description")) or None,
            }
        )
    items = pd.DataFrame(rows)
    paths = [c for c in items["categories"] if c]
    roots = {c[0] for c in paths}
    if len(roots) == 1 and len(paths) > 1:
        items["categories"] = [c[1:] if c else c for c in items["categories"]]
    return items


def _read_sequences(path: Path, items: set[str], item_file: Path) -> pd.DataFrame:
    sequences = _load_json_object(path)
    users, clicked, order = [], [], []
    for user, history in sequences.items():
        if not isinstance(history, list):
            raise DataError(
                f"{path}: user {user!r} has {type(history).__name__}, expected a list of item ids"
            )
        if not history:
            raise DataError(f"{path}: user {user!r} has an empty history; drop that user")
        ids = [str(i) for i in history]
        unknown = next((i for i in ids if i not in items), None)
        if unknown is not None:
            raise DataError(
                f"{path}: user {user!r} names item {unknown!r}, which {item_file.name} lacks"
            )
        users += [str(user)] * len(ids)
        clicked += ids
        order.append(np.arange(len(ids), dtype=np.int64))
    return make_interactions(pd.Series(users), pd.Series(clicked), np.concatenate(order))


def read_lcrec(inter: Path, item: Path, name: str | None = None) -> RawData:
    """Read an LC-Rec / LETTER dataset (see the module docstring)."""
    items = _read_items(item)
    interactions = _read_sequences(inter, set(items["item_id"]), item)
    return RawData(
        name=name or inter.name[: -len(INTER_SUFFIX)],
        source={"format": "lc-rec", "interactions": str(inter), "items": str(item)},
        interactions=interactions,
        interactions_file=inter,
        items=items,
        items_file=item,
        text_attributes=["brand", "description"],
        input_files=[inter, item],
    )
