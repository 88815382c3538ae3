"""Item references: ids, titles in any case, "Title (year)", ambiguous and unknown titles."""

from __future__ import annotations

import pandas as pd
import pytest

from karma.serve.lookup import (
    AmbiguousItemsError,
    ItemLookup,
    UnknownItemsError,
    normalize_title,
    year_text,
)


@pytest.fixture
def lookup(movie_items: pd.DataFrame) -> ItemLookup:
    return ItemLookup(movie_items)


def row(lookup: ItemLookup, item_id: str) -> int:
    return lookup.ids.index(item_id)


@pytest.mark.parametrize(
    ("ref", "item_id"),
    [
        ("Toy Story", "1"),  # exact
        ("toy story", "1"),  # any case
        ("  TOY   story ", "1"),  # surrounding and repeated whitespace
        ("Toy Story (1995)", "1"),  # with the year the catalog stores apart
        ("toy story(1995)", "1"),
        ("Sabrina (1954)", "486"),  # the year picks one of a repeated title
        ("SABRINA (1995)", "274"),
        ("Heat", "25"),
        ("Nameless", "900"),  # an item without a year
        ("246", "246"),  # ids still work: as text, as an int, padded
        (246, "246"),
        (" 268 ", "268"),
    ],
)
def test_references_resolve(lookup: ItemLookup, ref: str | int, item_id: str) -> None:
    assert lookup.resolve([ref]) == [row(lookup, item_id)]


def test_history_keeps_its_order(lookup: ItemLookup) -> None:
    assert lookup.resolve(["Heat", "1", "star wars (1977)"]) == [1, 0, 7]


def test_a_shared_title_lists_its_candidates_and_asks_for_an_id(lookup: ItemLookup) -> None:
    with pytest.raises(AmbiguousItemsError) as caught:
        lookup.resolve(["Toy Story", "chasing amy"])
    assert [c.item_id for c in caught.value.candidates["chasing amy"]] == ["246", "268"]
    assert [c.year for c in caught.value.candidates["chasing amy"]] == ["1997", "1997"]
    message = str(caught.value)
    assert "'chasing amy' matches items 246 (1997), 268 (1997)" in message
    assert "pass one of these item ids" in message
    assert "add the year" not in message  # both are from 1997: the year does not help
    assert "\n" not in message


def test_a_title_shared_across_years_suggests_the_year(lookup: ItemLookup) -> None:
    with pytest.raises(AmbiguousItemsError) as caught:
        lookup.resolve(["Sabrina"])
    message = str(caught.value)
    assert "'Sabrina' matches items 274 (1995), 486 (1954)" in message
    assert "add the year, e.g. 'Sabrina (1995)'" in message


def test_the_year_does_not_split_a_same_year_duplicate(lookup: ItemLookup) -> None:
    with pytest.raises(AmbiguousItemsError):
        lookup.resolve(["Chasing Amy (1997)"])


@pytest.mark.parametrize("ref", ["Toy Story (1996)", "Toy Stor", "Nameless (2000)", "999", ""])
def test_unknown_references_are_all_named(lookup: ItemLookup, ref: str) -> None:
    with pytest.raises(UnknownItemsError) as caught:
        lookup.resolve(["1", ref, "ghost"])
    assert caught.value.unknown == [ref, "ghost"]
    assert "'ghost'" in str(caught.value)


def test_unknown_is_reported_before_ambiguous(lookup: ItemLookup) -> None:
    with pytest.raises(UnknownItemsError):
        lookup.resolve(["Chasing Amy", "ghost"])


def test_display_title_adds_the_year_only_to_shared_titles(lookup: ItemLookup) -> None:
    assert lookup.display_title(row(lookup, "1")) == "Toy Story"
    assert lookup.display_title(row(lookup, "486")) == "Sabrina (1954)"


def test_helpers() -> None:
    assert normalize_title("  The  Big\tSleep ") == "the big sleep"
    assert [year_text(v) for v in (1995, 1995.0, "1995", None, float("nan"), "")] == [
        "1995",
        "1995",
        "1995",
        None,
        None,
        None,
    ]
