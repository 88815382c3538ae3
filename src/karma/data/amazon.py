"""Amazon Reviews 2023 (McAuley lab): a reviews JSONL and a meta JSONL, plain or gzip.

Reviews: `user_id`, `parent_asin`, `timestamp` (milliseconds), `rating`, ... -- every review is a
click on its `parent_asin`. Meta: `parent_asin`, `title`, `main_category`, `categories` (the
category path, a list), `store`, `details`, `images` (list of {hi_res, large, thumb, variant}).
Categories are the path, or `[main_category]` where the path is empty; `store` and `main_category`
become text attributes; the first image URL is kept as `image_url` (not downloaded).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from karma.data.raw import RawData, make_interactions
from karma.data.tables import parse_timestamps, read_jsonl, require_columns
from karma.errors import DataError

REVIEW_FIELDS = ("user_id", "parent_asin", "timestamp", "rating")
META_FIELDS = ("parent_asin", "title", "main_category", "categories", "store", "images")


def _first_image_url(images: Any) -> str | None:
    if not isinstance(images, list):
        return None
    for image in images:
        if isinstance(image, dict):
            url = image.get("hi_res") or image.get("large") or image.get("thumb")
            if url:
                return str(url)
    return None


def _category_path(categories: Any, main_category: Any) -> list[str]:
    if isinstance(categories, list) and categories:
        return [str(c).strip() for c in categories if c and str(c).strip()]
    if isinstance(main_category, str) and main_category.strip():
        return [main_category.strip()]
    return []


def _text_or_none(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def read_amazon2023(reviews: Path, meta: Path, name: str | None = None) -> RawData:
    """Read one Amazon Reviews 2023 category (reviews + meta files)."""
    table = read_jsonl(reviews, REVIEW_FIELDS)
    if table["user_id"].isna().all():
        raise DataError(f"{reviews}: no `user_id` field; is this an Amazon Reviews 2023 file?")
    require_columns(table.dropna(axis=1, how="all"), REVIEW_FIELDS[:3], reviews, "Amazon 2023")
    for column in ("user_id", "parent_asin"):
        missing = table[column].isna().to_numpy()
        if missing.any():
            row = int(missing.argmax())
            raise DataError(f"{reviews}: line {row + 1} has no {column!r}; fix or drop that line")
    interactions = make_interactions(
        table["user_id"],
        table["parent_asin"],
        parse_timestamps(table["timestamp"], "ms", reviews, "timestamp"),
    )
    records = read_jsonl(meta, META_FIELDS)
    if records["parent_asin"].isna().any():
        row = int(records["parent_asin"].isna().to_numpy().argmax())
        raise DataError(f"{meta}: line {row + 1} has no 'parent_asin'; fix or drop that line")
    items = pd.DataFrame(
        {
            "item_id": records["parent_asin"].astype(str),
            "title": records["title"].map(lambda t: t if isinstance(t, str) else ""),
            "categories": [
                _category_path(c, m)
                for c, m in zip(records["categories"], records["main_category"])
            ],
            "store": records["store"].map(_text_or_none),
            "main_category": records["main_category"].map(_text_or_none),
            "image_url": records["images"].map(_first_image_url),
        }
    )
    return RawData(
        name=name or reviews.name.split(".")[0],
        source={"format": "amazon-reviews-2023", "reviews": str(reviews), "meta": str(meta)},
        interactions=interactions,
        interactions_file=reviews,
        items=items,
        items_file=meta,
        text_attributes=["store"],
        input_files=[reviews, meta],
    )
