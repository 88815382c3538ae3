"""Export strips training-only heads, merges LoRA, and load_artifact reproduces the encoder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from karma.errors import KarmaError
from karma.serve.artifact import load_artifact
from karma.serve.export import serving_state_dict, write_artifact
from karma.serve.protocol import InterestEncoder, is_train_only_key
from karma.testing.toy_encoder import ToyInterestEncoder


def test_toy_encoder_implements_the_protocol() -> None:
    assert isinstance(ToyInterestEncoder(), InterestEncoder)


def test_karma_and_action_only_artifacts_hold_the_same_serving_weights(
    tmp_path: Path, export_toy
) -> None:
    karma = export_toy(tmp_path / "karma", with_train_heads=True)
    action = export_toy(tmp_path / "action", with_train_heads=False)
    assert karma["encoder"]["parameter_count"] == action["encoder"]["parameter_count"]
    full = sum(p.numel() for p in ToyInterestEncoder(with_train_heads=True).parameters())
    assert karma["encoder"]["parameter_count"] < full  # the heads were really there to strip
    keys = set(load_file(str(tmp_path / "karma" / "encoder.safetensors")))
    assert keys == set(load_file(str(tmp_path / "action" / "encoder.safetensors")))
    assert not any(is_train_only_key(k) for k in keys)
    assert not any(k.startswith(("lm_head", "reconstruction", "flow")) for k in keys)


def test_artifact_has_no_pickle_and_a_complete_manifest(artifact_dir: Path) -> None:
    files = {p.name for p in artifact_dir.iterdir()}
    assert files == {
        "manifest.json",
        "encoder.safetensors",
        "item_embeddings.safetensors",
        "items.parquet",
    }
    manifest = json.loads((artifact_dir / "manifest.json").read_text())
    for key in (
        "backbone",
        "embedding_dim",
        "normalization",
        "data_hash",
        "config_hash",
        "karma_version",
    ):
        assert key in manifest
    assert manifest["encoder"]["parameter_count"] == sum(
        v.numel() for v in load_file(str(artifact_dir / "encoder.safetensors")).values()
    )


def test_loaded_artifact_encodes_like_the_exported_module(tmp_path: Path, catalog) -> None:
    items, texts = catalog
    encoder = ToyInterestEncoder(seed=3)
    histories = [[texts[1], texts[5]], [texts[7]]]
    expected = encoder.interest_embeddings(histories, ["space", None])
    write_artifact(encoder, items, texts, tmp_path / "a")
    model = load_artifact(tmp_path / "a")
    got = model.encode([[1, 5], [7]], ["space", None])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(model.item_embeddings, encoder.item_embeddings(texts), atol=1e-6)


def test_lora_adapters_are_merged_before_export(tmp_path: Path, catalog, export_toy) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    items, texts = catalog
    encoder = ToyInterestEncoder(seed=1)
    inject_adapter_in_model(LoraConfig(r=4, target_modules=["layers.0", "layers.1"]), encoder)
    with torch.no_grad():  # LoRA B starts at zero; make the adapters change the output
        for name, param in encoder.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    assert any("lora_" in k for k in encoder.state_dict())
    expected = encoder.interest_embeddings([[texts[2], texts[3]]], [None])
    manifest = write_artifact(encoder, items, texts, tmp_path / "a")
    assert manifest["encoder"]["lora_adapters_merged"] == 2
    keys = load_file(str(tmp_path / "a" / "encoder.safetensors"))
    assert not any("lora_" in k or "base_layer" in k for k in keys)
    assert (
        manifest["encoder"]["parameter_count"]
        == export_toy(tmp_path / "plain")["encoder"]["parameter_count"]
    )
    got = load_artifact(tmp_path / "a").encode([[2, 3]])
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_export_refuses_a_train_only_key_listed_as_serving(tmp_path: Path) -> None:
    encoder = ToyInterestEncoder(with_train_heads=True)
    encoder.serving_prefixes = (*encoder.serving_prefixes, "flow_head.")
    with pytest.raises(KarmaError, match="flow_head"):
        serving_state_dict(encoder)


def test_export_refuses_a_non_empty_directory(tmp_path: Path, catalog) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "keep.txt").write_text("x")
    items, texts = catalog
    with pytest.raises(KarmaError, match="not empty"):
        write_artifact(ToyInterestEncoder(), items, texts, tmp_path / "a")


def test_load_artifact_names_a_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(KarmaError, match="karma export"):
        load_artifact(tmp_path)
