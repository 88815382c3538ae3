"""The LC-Rec / LETTER JSON adapter on a small fixture in the format of the Amazon 2018 sets."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from karma.cli import main
from karma.data.dataset import PreparedDataset
from karma.data.lcrec import category_path, clean_text
from karma.data.prepare import prepare_dataset
from karma.errors import DataError

ITEMS = {
    "0": {
        "title": "Relay Kit &amp; Capacitor.",
        "description": ".",
        "brand": "Supco.",
        "categories": "Industrial & Scientific,Industrial Electrical,Capacitors",
    },
    "1": {
        "title": "Staples 1/2-Inch.",
        "description": " Heavy-duty staples for insulation &#39;and&#39; roofing. ",
        "brand": "Stanley.",
        "categories": "Industrial & Scientific,Fasteners,Collated Fasteners,Staples",
    },
    "2": {
        "title": "CA Glue.",
        "description": "Gap-filling glue.",
        "brand": "",
        "categories": "Industrial & Scientific,Tapes, Adhesives & Sealants,Cyanoacrylate Adhesives",
    },
    "3": {"title": "Unused.", "description": "", "brand": "X.", "categories": ""},
}
# Order is time: user 7 clicked 0, then 1, then 2, then 0 again (the test click). Item 3 is never
# clicked (dropped unless --keep-unused-items).
SEQUENCES = {"7": [0, 1, 2, 0], "8": [2, 1, 0], "9": [1, 2, 0]}


def write_lcrec(folder: Path, items: object = ITEMS, sequences: object = SEQUENCES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Toy.item.json").write_text(json.dumps(items), encoding="utf-8")
    (folder / "Toy.inter.json").write_text(json.dumps(sequences), encoding="utf-8")
    return folder


def test_clean_text_and_category_path() -> None:
    assert clean_text(".") == ""
    assert clean_text(" . ") == ""
    assert clean_text("a &amp; b\n c") == "a & b c"
    assert clean_text(["one.", "two"]) == "one. two"
    assert category_path("A,Tapes, Adhesives & Sealants,Glue") == [
        "A",
        "Tapes, Adhesives & Sealants",
        "Glue",
    ]
    assert category_path("") == []


@pytest.mark.parametrize("as_file", [False, True])
def test_prepare_lcrec(tmp_path: Path, as_file: bool) -> None:
    folder = write_lcrec(tmp_path / "raw")
    source = folder / "Toy.inter.json" if as_file else folder
    code = main(["data", "prepare", str(source), "--out", str(tmp_path / "out")])
    assert code == 0
    ds = PreparedDataset(tmp_path / "out")
    assert ds.manifest["source"]["format"] == "lc-rec"
    assert ds.name == "Toy"
    first = ds.interactions[ds.interactions["user_id"] == "7"]
    # Position in the list is the time order; leave-one-out on it.
    assert first["item_id"].tolist() == ["0", "1", "2", "0"]
    assert first["timestamp"].tolist() == [0, 1, 2, 3]
    assert first["split"].tolist() == ["train", "train", "valid", "test"]
    index = ds.item_index
    row = {i: index[i] for i in ("0", "1", "2")}
    # The root every item shares is dropped; a level holding ", " stays one level.
    assert ds.categories[row["0"]] == ["Industrial Electrical", "Capacitors"]
    assert ds.categories[row["2"]] == ["Tapes, Adhesives & Sealants", "Cyanoacrylate Adhesives"]
    items = ds.items.set_index("item_id")
    assert items.loc["0", "title"] == "Relay Kit & Capacitor."
    assert pd.isna(items.loc["0", "description"])  # "." is an empty description
    assert items.loc["1", "description"] == "Heavy-duty staples for insulation 'and' roofing."
    assert pd.isna(items.loc["2", "brand"])
    fields = ds.item_text_fields()
    assert fields["brand"][row["2"]] == ""
    assert fields["categories"][row["1"]] == "Fasteners, Collated Fasteners, Staples"
    assert ds.manifest["text_attributes"] == ["brand", "description"]
    # The description comes last, so a truncating encoder keeps the categories.
    assert ds.item_texts()[row["1"]] == (
        "Staples 1/2-Inch. (Stanley.) | Fasteners, Collated Fasteners, Staples | "
        "Heavy-duty staples for insulation 'and' roofing."
    )
    assert ds.item_texts()[row["0"]] == (
        "Relay Kit & Capacitor. (Supco.) | Industrial Electrical, Capacitors"
    )


@pytest.mark.parametrize(
    ("items", "sequences", "message"),
    [
        (ITEMS, {"7": [0, 1, 5]}, "names item '5', which Toy.item.json lacks"),
        (ITEMS, {"7": []}, "user '7' has an empty history"),
        (ITEMS, {"7": 3}, "user '7' has int, expected a list"),
        ({"0": "title"}, SEQUENCES, "item '0' is str, expected an object"),
        ([1, 2], SEQUENCES, "expected one non-empty JSON object"),
    ],
)
def test_malformed_lcrec(tmp_path: Path, items: object, sequences: object, message: str) -> None:
    folder = write_lcrec(tmp_path / "raw", items, sequences)
    with pytest.raises(DataError, match=message):
        prepare_dataset(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_lcrec_bad_files(tmp_path: Path) -> None:
    folder = write_lcrec(tmp_path / "raw")
    (folder / "Toy.inter.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match=r"Toy.inter.json: not valid JSON \(line 1"):
        prepare_dataset(folder, tmp_path / "out")
    (folder / "Toy.item.json").unlink()
    with pytest.raises(DataError, match=r"its item file Toy\.item\.json is missing"):
        prepare_dataset(folder / "Toy.inter.json", tmp_path / "out")


SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "amazon-Scientific" / "raw"


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.is_dir(), reason="the shared Amazon Scientific copy is not here")
def test_prepare_shared_scientific(tmp_path: Path) -> None:
    manifest = prepare_dataset(SHARED, tmp_path / "sci")
    assert manifest["counts"]["users"] == 8317
    assert manifest["counts"]["items"] == 4344
    assert manifest["counts"]["interactions"] == 58492
    ds = PreparedDataset(tmp_path / "sci")
    assert ds.items["description"].notna().sum() == 3905  # 313 "." plus 126 empty
