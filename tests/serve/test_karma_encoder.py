"""The real KarmaEncoder (tiny random Llama backbone) through export, load and search."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from karma.model.backbone import load_backbone
from karma.model.config import BackboneConfig, EncoderConfig
from karma.model.encoder import KarmaEncoder
from karma.serve.artifact import load_artifact
from karma.serve.export import write_artifact
from karma.serve.karma_encoder import KarmaInterestEncoder
from karma.serve.protocol import InterestEncoder


def tiny_encoder(
    texts: list[str],
    tuning: str,
    mode: str = "search",
    trained_items: np.ndarray | None = None,
    **encoder_options: object,
) -> KarmaInterestEncoder:
    torch.manual_seed(0)
    backbone, tokenizer = load_backbone(BackboneConfig(name="tiny", tuning=tuning, lora_rank=2))  # type: ignore[arg-type]
    config = EncoderConfig(
        embedding_dim=8, item_text_tokens=8, instruction="next:", **encoder_options
    )  # type: ignore[arg-type]
    encoder = KarmaEncoder(
        config,
        backbone,
        tokenizer,
        texts,
        mode=mode,
        max_history=10,
        trained_items=trained_items,  # type: ignore[arg-type]
    )
    with torch.no_grad():  # LoRA B starts at zero: make the adapters matter
        for name, param in encoder.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.3)
    return KarmaInterestEncoder(encoder, texts)


@pytest.fixture
def small_catalog(catalog: tuple[pd.DataFrame, list[str]]) -> tuple[pd.DataFrame, list[str]]:
    items, texts = catalog
    return items.iloc[:20].reset_index(drop=True), texts[:20]


def test_export_merges_lora_and_loads_back_identically(
    tmp_path: Path, small_catalog: tuple[pd.DataFrame, list[str]]
) -> None:
    items, texts = small_catalog
    adapter = tiny_encoder(texts, "lora")
    assert isinstance(adapter, InterestEncoder)
    histories = [[texts[1], texts[4], texts[2]], [texts[7]]]
    expected = adapter.interest_embeddings(histories, ["comedy night", None])
    expected_items = adapter.item_embeddings(texts)
    manifest = write_artifact(adapter, items, texts, tmp_path / "lora")
    keys = load_file(str(tmp_path / "lora" / "encoder.safetensors"))
    assert not any("lora_" in k or "lm_head" in k for k in keys)
    assert manifest["encoder"]["lora_adapters_merged"] > 0
    assert (tmp_path / "lora" / "tokenizer").is_dir() and (tmp_path / "lora" / "backbone").is_dir()

    model = load_artifact(tmp_path / "lora")
    np.testing.assert_allclose(
        model.encode([[1, 4, 2], [7]], ["comedy night", None]), expected, atol=1e-5
    )
    np.testing.assert_allclose(model.item_embeddings, expected_items, atol=1e-5)

    frozen = write_artifact(tiny_encoder(texts, "frozen"), items, texts, tmp_path / "frozen")
    assert frozen["encoder"]["parameter_count"] == manifest["encoder"]["parameter_count"]


def test_a_new_item_is_encoded_from_its_text(
    tmp_path: Path, small_catalog: tuple[pd.DataFrame, list[str]]
) -> None:
    items, texts = small_catalog
    write_artifact(tiny_encoder(texts, "frozen", mode="rec"), items, texts, tmp_path / "a")
    model = load_artifact(tmp_path / "a")
    new = pd.DataFrame({"item_id": ["z"], "title": ["Zed"], "text": ["Zed | space, crime"]})
    (index,) = model.add_items(new)
    (recs,) = model.search_embeddings(model.item_embeddings[index][None], k=1)
    assert recs.item_indices.tolist() == [index]
    # The new item can sit in a history like any trained item.
    assert model.encode([[0, index]]).shape == (1, 8)
    # Its embedding is the item tower of its text, the same as for a catalog item with that text.
    again = model.encoder.item_embeddings(["Zed | space, crime"])
    np.testing.assert_allclose(again[0], model.item_embeddings[index], atol=1e-6)


def test_an_int8_artifact_serves_close_to_the_exact_one(
    tmp_path: Path, small_catalog: tuple[pd.DataFrame, list[str]]
) -> None:
    items, texts = small_catalog
    write_artifact(tiny_encoder(texts, "lora", mode="rec"), items, texts, tmp_path / "art")
    exact = load_artifact(tmp_path / "art")
    approx = load_artifact(tmp_path / "art", quantize="int8")
    assert approx.encoder.readout_pass.quantized and not exact.encoder.readout_pass.quantized
    histories = [[1, 4, 2], [7], [0, 3, 5, 9, 11]]
    a, b = exact.encode(histories), approx.encode(histories)
    assert not np.array_equal(a, b)
    assert (a * b).sum(1).min() > 0.98  # unit vectors: cosine


def test_the_anchored_tower_exports_and_a_new_item_gets_its_anchor(
    tmp_path: Path, small_catalog: tuple[pd.DataFrame, list[str]]
) -> None:
    items, texts = small_catalog
    trained = np.arange(len(texts)) < 15  # the last five items were never trained
    adapter = tiny_encoder(
        texts, "frozen", mode="rec", trained_items=trained, item_residual_ratio=0.5
    )
    encoder = adapter.encoder
    with torch.no_grad():  # a trained residual table: every row far past the bound
        encoder.item_residual.table.weight.normal_(std=10.0)
    expected_items = adapter.item_embeddings(texts)
    write_artifact(adapter, items, texts, tmp_path / "anchored")
    model = load_artifact(tmp_path / "anchored")
    np.testing.assert_allclose(model.item_embeddings, expected_items, atol=1e-5)
    served = model.encoder.encoder
    assert served.item_residual.trained.tolist() == trained.tolist()

    def anchor_only(index: int) -> np.ndarray:
        with torch.no_grad():
            anchor = served.item_projection(served.pooled_item_text[index : index + 1])
            return torch.nn.functional.normalize(served.item_head(anchor), dim=-1)[0].numpy()

    np.testing.assert_allclose(model.item_embeddings[17], anchor_only(17), atol=1e-6)
    assert np.abs(model.item_embeddings[3] - anchor_only(3)).max() > 1e-3  # trained: moved
    new = pd.DataFrame({"item_id": ["z"], "title": ["Zed"], "text": ["Zed | space, crime"]})
    (index,) = model.add_items(new)
    np.testing.assert_allclose(model.item_embeddings[index], anchor_only(index), atol=1e-6)
