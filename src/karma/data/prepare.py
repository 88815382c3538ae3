"""`prepare_dataset`: any supported source -> a prepared dataset directory, written atomically.

Sources: a built-in name (`ml-100k`, `ml-1m`), a RecBole atomic directory or `.inter` file, Amazon
Reviews 2023 (reviews + meta JSONL), an LC-Rec / LETTER directory (`NAME.inter.json` +
`NAME.item.json`), or any table read through a `ColumnMapping`. The output is
written into a temporary directory next to `out` and renamed into place at the end, so an error
never leaves a half-written dataset behind.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from karma import __version__
from karma.data import schema
from karma.data.amazon import read_amazon2023
from karma.data.atomic import BUILTINS, read_atomic, read_builtin
from karma.data.config import TIE_BREAKING, PrepareConfig
from karma.data.lcrec import lcrec_files, read_lcrec
from karma.data.mapped import ColumnMapping, read_mapped
from karma.data.preprocess import prepare_tables
from karma.data.raw import RawData
from karma.data.tables import sha256_of
from karma.errors import DataError

log = logging.getLogger(__name__)


def read_source(
    source: str | Path,
    mapping: ColumnMapping | None = None,
    meta: Path | None = None,
    name: str | None = None,
) -> RawData:
    """Pick the adapter: built-in name, Amazon 2023 (when `meta` is given), LC-Rec, atomic, or a table."""
    text = str(source)
    if text in BUILTINS:
        raw = read_builtin(text)
        if name:
            raw.name = name
        return raw
    path = Path(source)
    if meta is not None:
        return read_amazon2023(path, meta, name)
    if not path.exists():
        raise DataError(
            f"{path} does not exist; give a file, a RecBole atomic directory, or one of the "
            f"built-in names {', '.join(BUILTINS)}"
        )
    lcrec = lcrec_files(path)
    if lcrec is not None:
        return read_lcrec(*lcrec, name)
    if path.is_dir() or path.suffix == ".inter":
        return read_atomic(path, name)
    return read_mapped(path, mapping or ColumnMapping(), name)


@contextmanager
def atomic_directory(out: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary directory beside `out`; on success it replaces `out`, else it vanishes."""
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; give a directory path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DataError(
            f"--out {out} exists and is not empty; choose another path or pass --overwrite"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield staging
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, trash / out.name)
            os.replace(staging, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to `path` via a temporary file and rename (readers never see half a file)."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(data, stream, indent=2, ensure_ascii=False)
            stream.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _write_items(items: pd.DataFrame, path: Path) -> None:
    fields = [
        pa.field("item_id", pa.string()),
        pa.field("title", pa.string()),
        pa.field("categories", pa.list_(pa.string())),
    ]
    fields += [pa.field(c, pa.string()) for c in items.columns if c not in schema.ITEM_COLUMNS]
    columns = {c: items[c].astype(object).where(items[c].notna(), None) for c in items.columns}
    columns["categories"] = items["categories"].map(list)
    table = pa.Table.from_pydict({k: list(v) for k, v in columns.items()}, schema=pa.schema(fields))
    pq.write_table(table, path)


def _write_interactions(inter: pd.DataFrame, path: Path) -> None:
    arrow_schema = pa.schema(
        [
            pa.field("user_id", pa.string()),
            pa.field("item_id", pa.string()),
            pa.field("timestamp", pa.int64()),
            pa.field("event", pa.string()),
            pa.field("query", pa.string()),
            pa.field("split", pa.string()),
        ]
    )
    table = pa.Table.from_pandas(inter, schema=arrow_schema, preserve_index=False)
    pq.write_table(table, path)


def build_manifest(
    raw: RawData, config: PrepareConfig, items: pd.DataFrame, inter: pd.DataFrame, report: dict
) -> dict[str, Any]:
    clicks = inter[inter["event"] == schema.CLICK]
    counts = {
        "users": int(inter["user_id"].nunique()),
        "items": len(items),
        "items_with_interactions": report.pop("items_with_interactions"),
        "interactions": len(inter),
        "clicks": len(clicks),
        "exposures": len(inter) - len(clicks),
        **{f"{s}_clicks": int((clicks["split"] == s).sum()) for s in schema.SPLITS},
        "queries": int(inter["query"].notna().sum()),
    }
    manifest = {
        "name": raw.name,
        "source": raw.source,
        "inputs": {str(p): sha256_of(p) for p in raw.input_files},
        "counts": counts,
        "split": report.pop("split"),
        "queries": report.pop("queries"),
        "preprocessing": {**asdict(config), "removed": report["removed"]},
        "tie_breaking": TIE_BREAKING[config.ties],
        "karma_version": __version__,
        "text_attributes": list(raw.text_attributes),
        "features": {},
    }
    cold = report.pop("cold", None)
    if cold is not None:
        manifest["cold_items"] = cold
    return manifest


def prepare_dataset(
    source: str | Path,
    out: str | Path,
    config: PrepareConfig | None = None,
    mapping: ColumnMapping | None = None,
    meta: Path | None = None,
    name: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Prepare `source` into directory `out`; returns the manifest written there."""
    config = config or PrepareConfig()
    out = Path(out)
    if out.is_dir() and any(out.iterdir()) and not overwrite:  # fail before the slow reading
        raise DataError(
            f"--out {out} exists and is not empty; choose another path or pass --overwrite"
        )
    raw = read_source(source, mapping, meta, name)
    items, inter, report = prepare_tables(raw, config)
    manifest = build_manifest(raw, config, items, inter, report)
    with atomic_directory(out, overwrite) as staging:
        _write_items(items, staging / schema.ITEMS_FILE)
        _write_interactions(inter, staging / schema.INTERACTIONS_FILE)
        write_json_atomic(staging / schema.MANIFEST_FILE, manifest)
    counts = manifest["counts"]
    log.debug(
        "prepared %s: %d users, %d items, %d interactions -> %s",
        raw.name,
        counts["users"],
        counts["items"],
        counts["interactions"],
        out,
    )
    return manifest
