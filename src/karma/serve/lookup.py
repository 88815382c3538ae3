"""Item references -> catalog rows: item ids, titles in any case, titles with their year.

The one place serving resolves what a user typed (`karma recommend --history`, `/v1/search`,
`/v1/embed`). A reference is tried, in order, as

1. an item id, exactly as stored (`"246"`; an int 246 means the same), then with surrounding
   whitespace removed;
2. a title, compared case-insensitively with runs of whitespace collapsed (`"chasing  amy"`);
3. a title followed by its year in parentheses (`"Toy Story (1995)"`), when the catalog has a
   `year` column (MovieLens stores the year apart from the title).

A title shared by several items (ml-100k lists "Chasing Amy" under ids 246 and 268) is ambiguous:
`AmbiguousItemsError` names every candidate id with its year, and asks for an id (or the year, when
the years differ). A reference that matches nothing raises `UnknownItemsError`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from karma.errors import KarmaError

YEAR_SUFFIX = re.compile(r"^(?P<title>.*?)\s*\(\s*(?P<year>\d{4})\s*\)$")
SHOWN = 20  # references listed in one error message


def normalize_title(text: str) -> str:
    """Case-folded, whitespace-collapsed form used to compare titles."""
    return " ".join(str(text).split()).casefold()


def year_text(value: Any) -> str | None:
    """A year attribute as 4-digit text ("1995" from 1995, 1995.0 or "1995"); None when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    if text.endswith(".0"):
        text = text[:-2]
    return text if text.isdigit() else None


@dataclass(frozen=True)
class Candidate:
    """One item a title could mean."""

    item_id: str
    title: str
    year: str | None

    def label(self) -> str:
        return f"{self.item_id} ({self.year})" if self.year else self.item_id

    def to_dict(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "title": self.title, "year": self.year}


class UnknownItemsError(KarmaError):
    """History references that match no item id or title."""

    def __init__(self, unknown: list[str]) -> None:
        self.unknown = unknown
        shown = ", ".join(repr(u) for u in unknown[:SHOWN])
        more = f" (and {len(unknown) - SHOWN} more)" if len(unknown) > SHOWN else ""
        super().__init__(
            f"unknown items (no such item_id or title): {shown}{more}; titles match in any case, "
            'optionally with the year, e.g. "Toy Story (1995)"'
        )


class AmbiguousItemsError(KarmaError):
    """History references whose title several items share; `candidates[ref]` lists them."""

    def __init__(self, candidates: dict[str, list[Candidate]]) -> None:
        self.candidates = candidates
        parts = []
        for ref, items in list(candidates.items())[:SHOWN]:
            parts.append(f"{ref!r} matches items {', '.join(c.label() for c in items)}")
        more = f" (and {len(candidates) - SHOWN} more)" if len(candidates) > SHOWN else ""
        example = next(
            (c for items in candidates.values() for c in items if _year_tells_apart(c, items)),
            None,
        )
        hint = "pass one of these item ids instead"
        if example is not None:
            hint += f", or add the year, e.g. '{example.title} ({example.year})'"
        super().__init__(f"ambiguous titles: {'; '.join(parts)}{more}; {hint}")


def _year_tells_apart(candidate: Candidate, items: list[Candidate]) -> bool:
    return candidate.year is not None and sum(c.year == candidate.year for c in items) == 1


class ItemLookup:
    """Maps item references to row indices of an items table (item_id, title[, year])."""

    def __init__(self, items: pd.DataFrame) -> None:
        self.ids: list[str] = items["item_id"].astype(str).tolist()
        self.titles: list[str] = items["title"].astype(str).tolist()
        years = items["year"].tolist() if "year" in items.columns else [None] * len(items)
        self.years: list[str | None] = [year_text(y) for y in years]
        self._by_id: dict[str, int] = {}
        for i, item_id in enumerate(self.ids):
            self._by_id.setdefault(item_id, i)
        self._by_title: dict[str, list[int]] = {}
        self._by_title_year: dict[tuple[str, str], list[int]] = {}
        for i, (title, year) in enumerate(zip(self.titles, self.years)):
            key = normalize_title(title)
            self._by_title.setdefault(key, []).append(i)
            if year is not None:
                self._by_title_year.setdefault((key, year), []).append(i)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._by_id

    def candidate(self, index: int) -> Candidate:
        return Candidate(self.ids[index], self.titles[index], self.years[index])

    def matches(self, ref: str | int) -> list[int]:
        """Every row `ref` may mean (empty: unknown; more than one: ambiguous)."""
        key = str(ref)
        index = self._by_id.get(key)
        if index is None:
            index = self._by_id.get(key.strip())
        if index is not None:
            return [index]
        title = normalize_title(key)
        if title in self._by_title:
            return self._by_title[title]
        match = YEAR_SUFFIX.match(title)
        if match:
            return self._by_title_year.get((match["title"], match["year"]), [])
        return []

    def resolve(self, refs: Sequence[str | int]) -> list[int]:
        """Row indices of `refs`, in order; raises for unknown first, then for ambiguous ones."""
        out: list[int] = []
        unknown: list[str] = []
        ambiguous: dict[str, list[Candidate]] = {}
        for ref in refs:
            rows = self.matches(ref)
            if not rows:
                unknown.append(str(ref))
            elif len(rows) > 1:
                ambiguous[str(ref)] = [self.candidate(i) for i in rows]
            else:
                out.append(rows[0])
        if unknown:
            raise UnknownItemsError(unknown)
        if ambiguous:
            raise AmbiguousItemsError(ambiguous)
        return out

    def display_title(self, index: int) -> str:
        """The title, with its year when another item shares the title: "Sabrina (1954)"."""
        title = self.titles[index]
        shared = len(self._by_title[normalize_title(title)]) > 1
        year = self.years[index]
        return f"{title} ({year})" if shared and year else title
