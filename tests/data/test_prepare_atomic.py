"""RecBole atomic adapter, ordering, tie-breaking and the leave-one-out split, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from karma.data.config import PrepareConfig
from karma.data.dataset import PreparedDataset
from karma.data.prepare import prepare_dataset


def test_atomic_items_and_attributes(atomic_dir: Path, tmp_path: Path) -> None:
    manifest = prepare_dataset(atomic_dir, tmp_path / "out")
    ds = PreparedDataset(tmp_path / "out")
    # i4 has no interaction: dropped by default; file order kept for the rest.
    assert ds.items["item_id"].tolist() == ["i1", "i2", "i3"]
    assert ds.categories == [
        ["Animation", "Children's", "Comedy"],
        ["Horror", "Sci-Fi"],
        ["Film-Noir", "Mystery"],
    ]
    assert ds.items["year"].tolist() == ["1995", "1979", "1944"]
    assert manifest["text_attributes"] == ["year"]
    assert ds.item_texts()[1] == "Alien (1979) | Horror, Sci-Fi"
    assert manifest["counts"]["items_with_interactions"] == 3
    assert manifest["preprocessing"]["removed"]["unused_items"] == 1
    assert set(manifest["inputs"]) == {str(atomic_dir / "toy.inter"), str(atomic_dir / "toy.item")}
    assert manifest["features"] == {}
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["name"] == "toy"


def test_leave_one_out_order_and_ties(atomic_dir: Path, tmp_path: Path) -> None:
    prepare_dataset(atomic_dir, tmp_path / "out", PrepareConfig(queries="none"))
    inter = pd.read_parquet(tmp_path / "out" / "interactions.parquet")
    # u3 has 2 clicks < min_history 3: dropped. u1's tie at t=20 keeps file order (i3 then i2).
    assert inter["user_id"].tolist() == ["u1"] * 4 + ["u2"] * 3
    assert inter["item_id"].tolist() == ["i1", "i3", "i2", "i1", "i2", "i3", "i1"]
    assert inter["timestamp"].tolist() == [10, 20, 20, 40, 5, 6, 7]
    assert inter["split"].tolist() == ["train", "train", "valid", "test", "train", "valid", "test"]
    assert inter["query"].isna().all()

    ds = PreparedDataset(tmp_path / "out")
    # item index: i1=0, i2=1, i3=2
    assert [s.tolist() for s in ds.train_sequences()] == [[0, 2], [1]]
    valid = ds.examples("valid")
    assert valid.user_ids == ["u1", "u2"]
    assert [h.tolist() for h in valid.histories] == [[0, 2], [1]]
    assert valid.targets.tolist() == [1, 2]
    test = ds.examples("test")
    assert [h.tolist() for h in test.histories] == [[0, 2, 1], [1, 2]]
    assert test.targets.tolist() == [0, 0]
    assert ds.train_item_counts().tolist() == [1, 1, 1]


def test_no_valid_or_test_target_in_train(atomic_dir: Path, tmp_path: Path) -> None:
    prepare_dataset(atomic_dir, tmp_path / "out")
    inter = pd.read_parquet(tmp_path / "out" / "interactions.parquet")
    for _, rows in inter.groupby("user_id"):
        # The held-out clicks are the user's last two in time order; train rows come first.
        assert rows["split"].tolist()[-2:] == ["valid", "test"]
        assert (rows["split"].iloc[:-2] == "train").all()
        assert np.all(np.diff(rows["timestamp"].to_numpy()) >= 0)


def test_tie_break_follows_file_order_not_item_id(tmp_path: Path) -> None:
    folder = tmp_path / "ties"
    folder.mkdir()
    rows = ["user_id:token\titem_id:token\ttimestamp:float"]
    rows += ["u\tz\t5", "u\ta\t5", "u\tm\t5", "u\tb\t1"]
    (folder / "ties.inter").write_text("\n".join(rows) + "\n")
    prepare_dataset(folder, tmp_path / "out")
    inter = pd.read_parquet(tmp_path / "out" / "interactions.parquet")
    assert inter["item_id"].tolist() == ["b", "z", "a", "m"]
    # No .item file: items come from the ids, sorted, titled by their id.
    items = pd.read_parquet(tmp_path / "out" / "items.parquet")
    assert items["item_id"].tolist() == ["a", "b", "m", "z"]
    assert items["title"].tolist() == ["a", "b", "m", "z"]


def test_duplicates_collapse_to_first(atomic_dir: Path, tmp_path: Path) -> None:
    inter = atomic_dir / "toy.inter"
    inter.write_text(inter.read_text() + "u2\ti3\t1\t6\n")  # same user, item, time as a row
    manifest = prepare_dataset(atomic_dir, tmp_path / "out")
    assert manifest["preprocessing"]["removed"]["duplicates"] == 1
    assert manifest["counts"]["interactions"] == 7


def test_keep_unused_items(atomic_dir: Path, tmp_path: Path) -> None:
    manifest = prepare_dataset(atomic_dir, tmp_path / "out", PrepareConfig(keep_unused_items=True))
    assert manifest["counts"]["items"] == 4
    assert manifest["counts"]["items_with_interactions"] == 3


def test_min_history_one_keeps_short_users(atomic_dir: Path, tmp_path: Path) -> None:
    manifest = prepare_dataset(atomic_dir, tmp_path / "out", PrepareConfig(min_history=1))
    assert manifest["counts"]["users"] == 3
    inter = pd.read_parquet(tmp_path / "out" / "interactions.parquet")
    assert inter[inter["user_id"] == "u3"]["split"].tolist() == ["valid", "test"]


def test_overwrite_replaces_atomically(atomic_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare_dataset(atomic_dir, out)
    prepare_dataset(atomic_dir, out, PrepareConfig(min_history=1), overwrite=True)
    assert PreparedDataset(out).manifest["counts"]["users"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "toy"]  # no temp dirs left
