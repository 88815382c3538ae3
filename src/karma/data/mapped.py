"""Any CSV / TSV / Parquet / JSONL table, read through a column mapping.

The mapping names which column holds the user, the item, the time (and optionally the query and the
event), and optionally an item table with its id, title, categories and attribute columns. It comes
from the command line (`--map user=uid,item=iid,timestamp=ts`) or from a YAML file whose keys are
the fields of `ColumnMapping`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd

from karma.config import from_dict, read_yaml
from karma.data.raw import RawData, make_interactions
from karma.data.tables import TimestampUnit, parse_timestamps, read_table, require_columns
from karma.errors import ConfigError, DataError


@dataclass
class ColumnMapping:
    """Which source column holds each canonical field."""

    user: str = "user_id"
    """Interactions column with the user id."""
    item: str = "item_id"
    """Interactions column with the item id."""
    timestamp: str = "timestamp"
    """Interactions column with the time."""
    timestamp_unit: TimestampUnit = "s"
    """Time unit: `s` or `ms` since the epoch, or `iso` for date strings."""
    query: str | None = None
    """Interactions column with the search query, if any."""
    event: str | None = None
    """Interactions column with `click` / `exposure`, if any (all clicks otherwise)."""
    items: str | None = None
    """Item table file (CSV/TSV/Parquet/JSONL); a relative path is read next to the YAML file."""
    item_id: str | None = None
    """Item table column with the item id (default: the same name as `item`)."""
    title: str | None = None
    """Item table column with the title (the item id when unset)."""
    categories: str | None = None
    """Item table column with the categories (a list, or text split on `category_sep`)."""
    category_sep: str = "|"
    """Separator between categories inside one text cell."""
    attributes: list[str] = field(default_factory=list)
    """Item table columns kept as text attributes the LLM reads (e.g. year, brand)."""
    image_path: str | None = None
    """Item table column with a local image path, if any."""

    def __post_init__(self) -> None:
        for name in ("user", "item", "timestamp"):
            if not getattr(self, name):
                raise ValueError(f"{name}: must name a column")
        if self.item_id is None:
            self.item_id = self.item
        if self.timestamp_unit not in ("s", "ms", "iso"):
            raise ValueError(f"timestamp_unit: {self.timestamp_unit!r} is not one of s, ms, iso")


def parse_mapping_text(text: str) -> dict[str, Any]:
    """`user=uid,item=iid,attributes=year|brand` -> plain data for `ColumnMapping`."""
    data: dict[str, Any] = {}
    valid = {f.name for f in fields(ColumnMapping)}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--map entry {part!r} is not key=column (e.g. user=uid)")
        if key not in valid:
            raise ConfigError(
                f"--map key {key!r} is unknown; valid keys: {', '.join(sorted(valid))}"
            )
        data[key] = [a for a in value.split("|") if a] if key == "attributes" else value.strip()
    return data


def load_mapping(yaml_path: Path | None, text: str | None) -> ColumnMapping:
    """A mapping from an optional YAML file overridden by `--map` text."""
    data: dict[str, Any] = read_yaml(yaml_path) if yaml_path is not None else {}
    if yaml_path is not None and isinstance(data.get("items"), str):
        items = Path(data["items"])
        data["items"] = str(items if items.is_absolute() else yaml_path.parent / items)
    data.update(parse_mapping_text(text or ""))
    try:
        return from_dict(ColumnMapping, data)
    except ConfigError as exc:
        where = f"{yaml_path}: " if yaml_path is not None else "--map "
        raise ConfigError(f"{where}{exc}") from None


def read_mapped(path: Path, mapping: ColumnMapping, name: str | None = None) -> RawData:
    """Read interactions (and optional items) from tables through `mapping`."""
    table = read_table(path)
    wanted = [mapping.user, mapping.item, mapping.timestamp]
    wanted += [c for c in (mapping.query, mapping.event) if c is not None]
    require_columns(table, wanted, path, "--map / --mapping")
    interactions = make_interactions(
        table[mapping.user],
        table[mapping.item],
        parse_timestamps(table[mapping.timestamp], mapping.timestamp_unit, path, mapping.timestamp),
        events=table[mapping.event] if mapping.event else None,
        queries=table[mapping.query].astype(object) if mapping.query else None,
    )
    items = None
    items_file = Path(mapping.items) if mapping.items else None
    if items_file is not None:
        items = _mapped_items(items_file, mapping)
    source = {"format": "table", "path": str(path)}
    if items_file is not None:
        source["items"] = str(items_file)
    return RawData(
        name=name or path.name.split(".")[0],
        source=source,
        interactions=interactions,
        interactions_file=path,
        items=items,
        items_file=items_file,
        text_attributes=list(mapping.attributes),
        input_files=[path] + ([items_file] if items_file is not None else []),
    )


def _as_category_list(value: Any, sep: str) -> list[str]:
    """A categories cell (list, array, or separated text) as a list of strings."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return []
    if isinstance(value, str):
        return [w.strip() for w in value.split(sep) if w.strip()]
    if hasattr(value, "__iter__"):
        return [str(w).strip() for w in value if w is not None and str(w).strip()]
    return [str(value)]


def _mapped_items(path: Path, mapping: ColumnMapping) -> pd.DataFrame:
    table = read_table(path)
    id_column = mapping.item_id or mapping.item
    wanted = [id_column, *mapping.attributes]
    wanted += [c for c in (mapping.title, mapping.categories, mapping.image_path) if c is not None]
    require_columns(table, wanted, path, "--map / --mapping item columns")
    items = pd.DataFrame({"item_id": table[id_column].astype(str).str.strip()})
    items["title"] = (
        table[mapping.title].fillna("").astype(str) if mapping.title else items["item_id"]
    )
    if mapping.categories:
        cells = table[mapping.categories]
        items["categories"] = [_as_category_list(v, mapping.category_sep) for v in cells]
    else:
        items["categories"] = [[] for _ in range(len(items))]
    for column in mapping.attributes:
        values = table[column]
        items[column] = values.where(values.notna(), None).map(
            lambda v: None if v is None or str(v) == "" else str(v)
        )
    if mapping.image_path:
        items["image_path"] = table[mapping.image_path].astype(object)
    if items["item_id"].eq("").any():
        row = int(items["item_id"].eq("").to_numpy().argmax())
        raise DataError(f"{path}: row {row + 1} has an empty item id; fill it or drop the row")
    return items
