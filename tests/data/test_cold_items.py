"""The new-item protocol: stratified cold draw, what disappears, and what the reader returns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from karma.cli import main
from karma.data.cold import choose_cold_items, stratum_quotas, strip_cold_interactions
from karma.data.config import PrepareConfig
from karma.data.dataset import PreparedDataset
from karma.data.mapped import ColumnMapping
from karma.data.prepare import prepare_dataset
from karma.data.preprocess import prepare_tables
from karma.data.raw import RawData, make_interactions


def test_stratum_quotas_largest_remainder() -> None:
    # ideal = 5 * (3, 3, 4) / 10 = (1.5, 1.5, 2.0): floors (1, 1, 2) = 4, the one left goes to the
    # first of the two strata tied at remainder 0.5.
    assert stratum_quotas(np.array([3, 3, 4]), 5).tolist() == [2, 1, 2]
    assert stratum_quotas(np.array([10] * 10), 10).tolist() == [1] * 10
    assert stratum_quotas(np.array([5, 5]), 0).tolist() == [0, 0]


def test_cold_items_follow_the_popularity_strata() -> None:
    counts = np.arange(100)  # item i has i training clicks: decile d = items 10d .. 10d + 9
    cold = choose_cold_items(counts, fraction=0.1, seed=3, strata=10)
    assert cold.sum() == 10
    assert np.bincount(np.flatnonzero(cold) // 10, minlength=10).tolist() == [1] * 10
    # Two strata, half the items: 5 of the 10 least clicked and 5 of the 10 most clicked.
    cold = choose_cold_items(np.arange(20)[::-1], fraction=0.5, seed=0, strata=2)
    assert cold[:10].sum() == 5 and cold[10:].sum() == 5


def test_cold_draw_is_seeded() -> None:
    counts = np.random.default_rng(0).integers(0, 50, size=300)
    first = choose_cold_items(counts, 0.15, seed=7)
    assert np.array_equal(first, choose_cold_items(counts, 0.15, seed=7))
    assert first.sum() == round(0.15 * 300) == 45
    assert not np.array_equal(first, choose_cold_items(counts, 0.15, seed=8))
    assert choose_cold_items(counts, 0.0, seed=7).sum() == 0


def _frame(rows: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event", "split"])


def test_strip_keeps_only_first_valid_and_test_clicks_of_cold_items() -> None:
    inter = _frame(
        [
            ("u1", "a", "click", "train"),
            ("u1", "c", "click", "train"),  # cold training click: removed
            ("u1", "c", "click", "valid"),  # u1's first valid click: kept (target)
            ("u1", "a", "click", "test"),
            ("u2", "c", "exposure", "train"),  # cold exposure: removed
            ("u2", "a", "click", "train"),
            ("u2", "b", "click", "valid"),
            ("u2", "c", "click", "valid"),  # second valid click of u2: removed
            ("u2", "c", "click", "test"),  # u2's first test click: kept
        ]
    )
    kept, counts = strip_cold_interactions(inter, pd.Series(["c"]))
    assert kept.index.tolist() == list(range(6))
    assert list(zip(kept["user_id"], kept["item_id"], kept["split"])) == [
        ("u1", "a", "train"),
        ("u1", "c", "valid"),
        ("u1", "a", "test"),
        ("u2", "a", "train"),
        ("u2", "b", "valid"),
        ("u2", "c", "test"),
    ]
    assert counts == {"removed_interactions": 3, "valid_targets": 1, "test_targets": 1}


# u1: a c b | c | a    u2: a b | a | c    u3: b a | b | a   (train | valid | test), plus an
# exposure of c for u3. Training clicks: a 3, b 3, c 1, so with 3 items, 3 strata and a third of
# the catalog cold the one cold item is the least clicked stratum's: c, whatever the seed.
ROWS = [
    ("u1", "a", 1, "click"),
    ("u1", "c", 2, "click"),
    ("u1", "b", 3, "click"),
    ("u1", "c", 4, "click"),
    ("u1", "a", 5, "click"),
    ("u2", "a", 1, "click"),
    ("u2", "b", 2, "click"),
    ("u2", "a", 3, "click"),
    ("u2", "c", 4, "click"),
    ("u3", "c", 0, "exposure"),
    ("u3", "b", 1, "click"),
    ("u3", "a", 2, "click"),
    ("u3", "b", 3, "click"),
    ("u3", "a", 4, "click"),
]


def _raw() -> RawData:
    frame = pd.DataFrame(ROWS, columns=["u", "i", "t", "e"])
    inter = make_interactions(frame["u"], frame["i"], frame["t"].to_numpy(), events=frame["e"])
    return RawData(name="t", source={}, interactions=inter, interactions_file=Path("t.csv"))


COLD_CONFIG = PrepareConfig(cold_items=1 / 3, cold_strata=3, queries="none", seed=5)


def test_prepare_tables_removes_cold_interactions_by_hand() -> None:
    _, inter, report = prepare_tables(_raw(), COLD_CONFIG)
    cold = report["cold"]
    assert cold["item_ids"] == ["c"]
    # Gone: u1's training click on c and u3's exposure of c. Kept: u1's valid c, u2's test c.
    assert cold["removed_interactions"] == 2
    assert cold["training_clicks_removed"] == 1
    assert (cold["valid_targets"], cold["test_targets"]) == (1, 1)
    rows_with_c = inter[inter["item_id"] == "c"]
    assert list(zip(rows_with_c["user_id"], rows_with_c["split"])) == [
        ("u1", "valid"),
        ("u2", "test"),
    ]
    assert report["removed"]["filtered_interactions"] == 0


def test_reader_strips_cold_items_from_histories(tmp_path: Path) -> None:
    raw = _raw()
    source = tmp_path / "t.csv"
    frame = raw.interactions[["user_id", "item_id", "timestamp", "event"]]
    frame.to_csv(source, index=False)
    manifest = prepare_dataset(source, tmp_path / "ds", COLD_CONFIG, ColumnMapping(event="event"))
    assert manifest["cold_items"]["item_ids"] == ["c"]
    ds = PreparedDataset(tmp_path / "ds")
    a, b, c = (ds.item_index[i] for i in "abc")
    assert ds.cold_items.tolist() == [c]
    assert ds.trainable_items.tolist() == [i != c for i in range(3)]
    assert [s.tolist() for s in ds.train_sequences()] == [[a, b], [a, b], [b, a]]
    assert ds.train_item_counts()[c] == 0
    valid = ds.examples("valid")
    assert [h.tolist() for h in valid.histories] == [[a, b], [a, b], [b, a]]
    assert valid.targets.tolist() == [c, a, b]
    test = ds.examples("test")
    # u1's cold valid target c is not in its test history; u2's test target c stays.
    assert [h.tolist() for h in test.histories] == [[a, b], [a, b, a], [b, a, b]]
    assert test.targets.tolist() == [a, c, a]


def test_without_cold_items_nothing_changes() -> None:
    _, inter, report = prepare_tables(_raw(), PrepareConfig(queries="none"))
    assert report["cold"] is None
    assert len(inter) == len(ROWS)


@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_cold_fraction_is_validated(value: float) -> None:
    with pytest.raises(ValueError, match="cold_items"):
        PrepareConfig(cold_items=value)


def test_cli_prepare_cold_items(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "t.csv"
    _raw().interactions[["user_id", "item_id", "timestamp", "event"]].to_csv(source, index=False)
    args = ["data", "prepare", str(source), "--map", "event=event", "--out", str(tmp_path / "ds")]
    code = main([*args, "--cold-items", "0.34", "--cold-strata", "3", "--seed", "1"])
    assert code == 0
    assert "cold items: 1 (1 training clicks removed)" in capsys.readouterr().out
    ds = PreparedDataset(tmp_path / "ds")
    assert ds.manifest["cold_items"]["item_ids"] == ["c"]
    assert ds.manifest["preprocessing"]["cold_items"] == 0.34
    bad = main([*args, "--overwrite", "--cold-items", "1.5"])
    assert bad == 2 and "cold_items" in capsys.readouterr().err
