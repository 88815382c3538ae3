"""Reading raw input tables (CSV, TSV, Parquet, JSONL[.gz]) with one-line errors.

Every reader here turns the usual failure modes of user files -- missing file, empty file, text that
is not UTF-8, a malformed JSON line, a missing column, an unparsable timestamp -- into a `DataError`
that names the file, the row or column, and what to do. Adapters build on these.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from karma.errors import DataError

TimestampUnit = Literal["s", "ms", "iso"]

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".jsonl", ".jsonl.gz", ".json", ".json.gz")


def sha256_of(*paths: Path) -> str:
    """Hex sha256 of a file (or of several files read one after the other), in 1 MiB blocks.

    The one file digest in karma: dataset manifests and serving-artifact provenance use it.
    """
    digest = hashlib.sha256()
    for path in paths:
        with Path(path).open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def require_file(path: Path, what: str) -> Path:
    """`path` if it is a non-empty file, else a DataError naming it."""
    if not path.is_file():
        raise DataError(f"{what} {path} does not exist; check the path")
    if path.stat().st_size == 0:
        raise DataError(f"{what} {path} is empty; give a file with a header and at least one row")
    return path


def _check_utf8(path: Path) -> None:
    """Fail with the line number of the first byte sequence that is not UTF-8."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{path}: line {line_number} is not valid UTF-8 (byte {exc.start}); "
                    "re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
                ) from None


def read_delimited(path: Path, sep: str, quoting: int = csv.QUOTE_MINIMAL) -> pd.DataFrame:
    """A CSV/TSV file as strings (no type guessing: ids like `007` must survive)."""
    require_file(path, "input file")
    try:
        # dtype=object, not str: pandas 3's arrow strings make isin/map on 1M ids ~10x slower.
        frame = pd.read_csv(
            path, sep=sep, dtype=object, keep_default_na=False, quoting=quoting, encoding="utf-8"
        )
    except UnicodeDecodeError:
        _check_utf8(path)
        raise
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} has no header row; give a file with a header line") from None
    except pd.errors.ParserError as exc:
        message = str(exc).strip().splitlines()[-1]
        raise DataError(
            f"{path}: cannot parse ({message}); check the separator and quoting"
        ) from None
    if frame.empty:
        raise DataError(f"{path} has a header but no rows; give at least one row")
    return frame


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a JSON-lines file (plain or gzip), naming the line of any malformed record."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise DataError(
                    f"{path}: line {line_number} is not valid UTF-8; re-encode the file as UTF-8"
                ) from None
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path}: line {line_number} is not valid JSON ({exc.msg}); "
                    "each line must be one JSON object"
                ) from None
            if not isinstance(record, dict):
                raise DataError(f"{path}: line {line_number} is not a JSON object")
            yield record


def read_jsonl(path: Path, fields: Iterable[str] | None = None) -> pd.DataFrame:
    """A JSON-lines file as a frame, keeping only `fields` (all when None) to save memory."""
    require_file(path, "input file")
    keep = list(fields) if fields is not None else None
    rows = [{k: rec.get(k) for k in keep} if keep is not None else rec for rec in iter_jsonl(path)]
    if not rows:
        raise DataError(f"{path} has no records; give at least one JSON line")
    return pd.DataFrame.from_records(rows, columns=keep)


def read_table(path: Path) -> pd.DataFrame:
    """Any supported table, chosen by suffix; columns of text files stay strings."""
    name = path.name.lower()
    if name.endswith(".csv"):
        return read_delimited(path, ",")
    if name.endswith((".tsv", ".tab", ".txt")):
        return read_delimited(path, "\t")
    if name.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz", ".ndjson")):
        return read_jsonl(path)
    if name.endswith(".parquet"):
        require_file(path, "input file")
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for a corrupt file
            raise DataError(
                f"{path} is not a readable Parquet file ({type(exc).__name__})"
            ) from None
        if frame.empty:
            raise DataError(f"{path} has no rows; give at least one row")
        return frame
    raise DataError(f"{path}: unknown table format; use one of {', '.join(TABLE_SUFFIXES)}")


def require_columns(frame: pd.DataFrame, columns: Iterable[str], path: Path, option: str) -> None:
    """DataError naming the first missing column and the columns the file has."""
    for column in columns:
        if column not in frame.columns:
            have = ", ".join(map(str, frame.columns))
            raise DataError(
                f"{path}: no column {column!r} (it has: {have}); fix the column mapping ({option})"
            )


def parse_timestamps(values: pd.Series, unit: TimestampUnit, path: Path, column: str) -> np.ndarray:
    """(n,) int64 seconds since the epoch; a DataError names the first unparsable row."""
    if unit == "iso":
        parsed = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
        bad = parsed.isna().to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{path}: row {row + 1}, column {column!r}: cannot parse timestamp "
                f"{values.iloc[row]!r} as a date; fix the value or the timestamp unit"
            )
        # Resolution-independent (pandas 3 may parse to us, not ns): whole seconds since epoch.
        epoch = pd.Timestamp(0, tz="UTC")
        return ((parsed - epoch) // pd.Timedelta(seconds=1)).to_numpy(np.int64)
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path}: row {row + 1}, column {column!r}: timestamp {values.iloc[row]!r} is not a "
            "number; fix the value, or set the timestamp unit to `iso` for date strings"
        )
    seconds = numbers.to_numpy(np.float64)
    if unit == "ms":
        seconds = seconds / 1000.0
    return np.floor(seconds).astype(np.int64)


def text_values(values: pd.Series) -> np.ndarray:
    """(n,) object array of str (numbers become text, missing becomes "")."""
    array = values.to_numpy(dtype=object, na_value="")
    if pd.api.types.infer_dtype(array, skipna=False) != "string":
        array = array.astype(str).astype(object)
    return array


def is_member(values: pd.Series, allowed: pd.Series) -> np.ndarray:
    """(n,) bool: which `values` occur in `allowed` (hash lookup on plain Python strings)."""
    index = pd.Index(pd.unique(text_values(allowed)), dtype=object)
    return index.get_indexer(text_values(values)) >= 0


def split_words(values: pd.Series, sep: str | None) -> pd.Series:
    """Each cell -> list of non-empty stripped strings (split on `sep`; None = whitespace)."""
    text = values.fillna("").astype(str)
    parts = text.str.split(sep) if sep is not None else text.str.split()
    return parts.map(lambda words: [w.strip() for w in words if w.strip()])
