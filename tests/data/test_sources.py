"""Generic tables through a column mapping (CSV/TSV/Parquet/JSONL, CLI and YAML) and Amazon 2023."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from karma.cli import main
from karma.data.dataset import PreparedDataset
from karma.data.mapped import ColumnMapping, load_mapping
from karma.data.prepare import prepare_dataset

CLICKS = [
    ("u1", "a", 3),
    ("u1", "b", 1),
    ("u1", "c", 2),
    ("u2", "c", 5),
    ("u2", "a", 6),
    ("u2", "b", 4),
]


def texts(values: pd.Series) -> list[str | None]:
    """Column values with missing as None (pandas 3 reads missing strings back as NaN)."""
    return [v if isinstance(v, str) else None for v in values]


def write_clicks(path: Path) -> Path:
    frame = pd.DataFrame(CLICKS, columns=["uid", "iid", "ts"])
    frame["q"] = ["red shoes", "", "blue hat", "hat", "shoes", "bag"]
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_json(path, orient="records", lines=True)
    return path


def write_items(path: Path) -> Path:
    path.write_text("iid,name,genres,brand\na,Alpha,Shoes|Red,acme\nb,Beta,,\nc,Gamma,Hats,zed\n")
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".jsonl"])
def test_mapped_formats(tmp_path: Path, suffix: str) -> None:
    clicks = write_clicks(tmp_path / f"clicks{suffix}")
    mapping = ColumnMapping(user="uid", item="iid", timestamp="ts", query="q")
    manifest = prepare_dataset(clicks, tmp_path / "out", mapping=mapping)
    inter = pd.read_parquet(tmp_path / "out" / "interactions.parquet")
    assert inter["item_id"].tolist() == ["b", "c", "a", "b", "c", "a"]
    assert inter["split"].tolist() == ["train", "valid", "test"] * 2
    assert texts(inter["query"]) == [None, "blue hat", "red shoes", "bag", "hat", "shoes"]
    assert manifest["queries"] == "column"
    assert manifest["name"] == "clicks"


def test_cli_map_with_items_and_categories(tmp_path: Path) -> None:
    clicks = write_clicks(tmp_path / "clicks.csv")
    items = write_items(tmp_path / "items.csv")
    code = main(
        [
            "data",
            "prepare",
            str(clicks),
            "--out",
            str(tmp_path / "out"),
            "--queries",
            "synth",
            "--map",
            "user=uid,item=iid,timestamp=ts,item_id=iid,title=name,categories=genres,"
            "attributes=brand",
            "--items",
            str(items),
        ]
    )
    assert code == 0
    ds = PreparedDataset(tmp_path / "out")
    assert ds.titles == ["Alpha", "Beta", "Gamma"]
    assert ds.categories == [["Shoes", "Red"], [], ["Hats"]]
    assert texts(ds.items["brand"]) == ["acme", None, "zed"]
    assert ds.item_texts() == ["Alpha (acme) | Shoes, Red", "Beta", "Gamma (zed) | Hats"]
    queries = dict(zip(ds.interactions["item_id"], texts(ds.interactions["query"])))
    assert queries == {"a": "shoes red", "b": None, "c": "hats"}


def test_yaml_mapping_with_iso_timestamps(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text(
        "who,what,when\nx,a,2024-01-02T00:00:00Z\nx,b,2024-01-01\nx,c,2024-01-03\n"
    )
    write_items(tmp_path / "items.csv")
    (tmp_path / "map.yaml").write_text(
        "user: who\nitem: what\ntimestamp: when\ntimestamp_unit: iso\nitems: items.csv\n"
        "item_id: iid\ntitle: name\n"
    )
    mapping = load_mapping(tmp_path / "map.yaml", None)
    prepare_dataset(tmp_path / "log.csv", tmp_path / "out", mapping=mapping)
    inter = pd.read_parquet(tmp_path / "out" / "interactions.parquet")
    assert inter["item_id"].tolist() == ["b", "a", "c"]
    assert inter["timestamp"].tolist() == [1704067200, 1704153600, 1704240000]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in records)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_amazon_2023(tmp_path: Path, suffix: str) -> None:
    reviews = write_jsonl(
        tmp_path / f"All_Beauty{suffix}",
        [
            {"user_id": "U", "parent_asin": "P2", "timestamp": 1_600_000_002_500, "rating": 5.0},
            {"user_id": "U", "parent_asin": "P1", "timestamp": 1_600_000_001_000, "rating": 4.0},
            {"user_id": "U", "parent_asin": "P3", "timestamp": 1_600_000_003_000, "rating": 1.0},
        ],
    )
    meta = write_jsonl(
        tmp_path / f"meta_All_Beauty{suffix}",
        [
            {
                "parent_asin": "P1",
                "title": "Soap",
                "main_category": "All Beauty",
                "categories": ["Beauty & Personal Care", "Skin Care", "Soaps"],
                "store": "Acme",
                "images": [{"thumb": "t.jpg", "large": "l.jpg", "hi_res": None}],
                "details": {},
            },
            {
                "parent_asin": "P2",
                "title": "Brush",
                "main_category": "All Beauty",
                "categories": [],
                "store": None,
                "images": [],
            },
            {
                "parent_asin": "P3",
                "title": "Comb",
                "main_category": None,
                "categories": [],
                "store": "Zed",
                "images": [{"hi_res": "h.jpg", "large": "l3.jpg"}],
            },
        ],
    )
    code = main(
        ["data", "prepare", str(reviews), "--meta", str(meta), "--out", str(tmp_path / "out")]
    )
    assert code == 0
    ds = PreparedDataset(tmp_path / "out")
    inter = ds.interactions
    assert inter["item_id"].tolist() == ["P1", "P2", "P3"]
    assert inter["timestamp"].tolist() == [1_600_000_001, 1_600_000_002, 1_600_000_003]
    assert ds.categories == [["Beauty & Personal Care", "Skin Care", "Soaps"], ["All Beauty"], []]
    assert texts(ds.items["image_url"]) == ["l.jpg", None, "h.jpg"]
    assert ds.item_texts()[0] == "Soap (Acme) | Beauty & Personal Care, Skin Care, Soaps"
    # Ai et al. queries: lower-cased category words, `&` and repeats gone, at most 4 words.
    assert texts(inter["query"])[1:] == ["beauty", None]
    assert set(inter["query"].iloc[0].split()) <= {"beauty", "personal", "care", "skin", "soaps"}
    assert len(inter["query"].iloc[0].split()) == 4
    assert ds.manifest["source"]["format"] == "amazon-reviews-2023"
