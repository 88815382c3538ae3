"""Filtering (k-core, min history), the time split and exposures on hand-built raw data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from karma.config import from_dict
from karma.data.config import PrepareConfig
from karma.data.preprocess import filter_counts, prepare_tables
from karma.data.raw import RawData, make_interactions
from karma.errors import ConfigError, DataError


def raw_from(rows: list[tuple[str, str, int]], events: list[str] | None = None) -> RawData:
    frame = pd.DataFrame(rows, columns=["u", "i", "t"])
    inter = make_interactions(
        frame["u"],
        frame["i"],
        frame["t"].to_numpy(),
        events=pd.Series(events) if events is not None else None,
    )
    return RawData(name="t", source={}, interactions=inter, interactions_file=Path("t.csv"))


def test_k_core_is_iterative() -> None:
    # k=2, by hand: round 1 drops (y,c) (c has 1 click); round 2 (y,b) (y has 1 left);
    # round 3 (x,b) (b has 1 left); round 4 (x,a) (x has 1 left); then a, d, z, w all have 2.
    rows = [
        ("x", "a", 1),
        ("x", "b", 2),
        ("y", "b", 1),
        ("y", "c", 2),
        ("z", "a", 1),
        ("z", "d", 2),
        ("w", "a", 1),
        ("w", "d", 2),
    ]
    kept, rounds = filter_counts(raw_from(rows).interactions, 2, 2)
    assert sorted(kept["user_id"].unique()) == ["w", "z"]
    assert sorted(kept["item_id"].unique()) == ["a", "d"]
    assert rounds == 4
    # Single pass would have kept user x (a, b) -- it must be gone.
    assert "x" not in set(kept["user_id"])


def test_k_core_off_keeps_everything() -> None:
    rows = [("x", "a", 1), ("y", "b", 1)]
    kept, rounds = filter_counts(raw_from(rows).interactions, 0, 0)
    assert len(kept) == 2 and rounds == 0


def test_time_split_by_timestamps() -> None:
    rows = [
        ("x", "a", 1),
        ("x", "b", 5),
        ("x", "c", 9),
        ("y", "a", 2),
        ("y", "c", 6),
        ("y", "b", 7),
    ]
    config = PrepareConfig(split="time", valid_start=5, test_start=7, queries="none")
    _, inter, report = prepare_tables(raw_from(rows), config)
    assert inter["split"].tolist() == ["train", "valid", "test", "train", "valid", "test"]
    assert report["split"] == {"protocol": "time", "valid_start": 5, "test_start": 7}


def test_time_split_by_fractions() -> None:
    rows = [("x", f"i{t}", t) for t in range(10)]
    config = PrepareConfig(split="time", valid_fraction=0.2, test_fraction=0.3, min_history=1)
    _, inter, report = prepare_tables(raw_from(rows), config)
    # 10 clicks at t=0..9: train the first 5, valid the next 2, test the last 3.
    assert inter["split"].tolist() == ["train"] * 5 + ["valid"] * 2 + ["test"] * 3
    assert report["split"]["valid_start"] == 5 and report["split"]["test_start"] == 7


def test_exposures_take_next_click_split_and_do_not_count_as_history() -> None:
    rows = [
        ("x", "a", 1),
        ("x", "e", 2),
        ("x", "b", 3),
        ("x", "c", 4),
        ("x", "f", 5),
        ("x", "d", 6),
        ("x", "g", 7),
    ]
    events = ["click", "exposure", "click", "click", "exposure", "click", "exposure"]
    items, inter, _ = prepare_tables(raw_from(rows, events), PrepareConfig(queries="none"))
    assert inter["split"].tolist() == ["train", "train", "train", "valid", "test", "test", "test"]
    assert set(items["item_id"]) == set("abcdefg")  # exposed items stay as negatives


def test_min_history_counts_clicks_only() -> None:
    rows = [("x", "a", 1), ("x", "b", 2), ("x", "c", 3)]
    # Only 2 clicks < 3: the user goes, leaving no clicks at all -> clear error.
    with pytest.raises(DataError, match="no clicks left after filtering"):
        prepare_tables(raw_from(rows, ["click", "click", "exposure"]), PrepareConfig())
    _, inter, _ = prepare_tables(
        raw_from(rows, ["click", "click", "exposure"]), PrepareConfig(min_history=2)
    )
    assert inter["split"].tolist() == ["valid", "test", "test"]


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match="test_fraction"):
        from_dict(PrepareConfig, {"test_fraction": 1.5})
    with pytest.raises(ConfigError, match="valid_start"):
        from_dict(PrepareConfig, {"valid_start": 3})
    with pytest.raises(ConfigError, match="min_history"):
        from_dict(PrepareConfig, {"min_history": -1})


def test_sorted_by_user_then_time_for_many_users() -> None:
    rng = np.random.default_rng(0)
    rows = [
        (f"u{rng.integers(20)}", f"i{rng.integers(30)}", int(rng.integers(100))) for _ in range(400)
    ]
    _, inter, _ = prepare_tables(raw_from(rows), PrepareConfig(min_history=1))
    keys = list(zip(inter["user_id"], inter["timestamp"]))
    assert keys == sorted(keys)
    last = inter.groupby("user_id").tail(1)
    assert (last["split"] == "test").all()


@pytest.mark.parametrize("ties", ["file", "item", "reversed"])
@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.sampled_from("uvw"), st.sampled_from("abcde"), st.integers(0, 4)),
        min_size=1,
        max_size=40,
    )
)
def test_order_and_split_match_a_slow_reference(
    rows: list[tuple[str, str, int]], ties: str
) -> None:
    """Vectorised de-dup / sort / leave-one-out against a plain-Python reference."""
    seen: set[tuple[str, str, int]] = set()
    unique = []
    for position, row in enumerate(rows):
        if row not in seen:
            seen.add(row)
            tie = {"file": (position,), "item": (row[1], position), "reversed": (-position,)}
            unique.append((row[0], row[2], *tie[ties], row[1]))
    unique.sort()  # user, timestamp, then the documented tie-break
    expected = []
    for user in sorted({u for u, *_ in unique}):
        mine = [r for r in unique if r[0] == user]
        labels = ["train"] * max(len(mine) - 2, 0) + ["valid", "test"][-min(len(mine), 2) :]
        expected += [(r[0], r[-1], r[1], s) for r, s in zip(mine, labels)]
    config = PrepareConfig(min_history=1, queries="none", ties=ties)  # type: ignore[arg-type]
    _, inter, _ = prepare_tables(raw_from(rows), config)
    got = list(zip(inter["user_id"], inter["item_id"], inter["timestamp"], inter["split"]))
    assert got == expected


def test_ties_decide_the_held_out_clicks() -> None:
    """Three clicks in one second: the tie order alone picks the valid and test targets."""
    rows = [("u", "b", 5), ("u", "c", 5), ("u", "a", 5), ("u", "z", 1)]
    targets = {}
    for ties in ("file", "item", "reversed"):
        config = PrepareConfig(min_history=1, queries="none", ties=ties)  # type: ignore[arg-type]
        _, inter, _ = prepare_tables(raw_from(rows), config)
        targets[ties] = list(inter["item_id"])
    assert targets == {
        "file": ["z", "b", "c", "a"],
        "item": ["z", "a", "b", "c"],
        "reversed": ["z", "a", "c", "b"],
    }
    with pytest.raises(ConfigError, match="ties"):
        from_dict(PrepareConfig, {"ties": "random"})
