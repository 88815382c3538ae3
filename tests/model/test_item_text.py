"""Backbone item-text states (`item_text_pooling: backbone`) on the tiny random Llama.

Hand-run: the untruncated, untuned backbone reads one item text at a time (no padding), its
final-normed hidden states are pooled by hand, and the catalog matrix is scaled to the mean row
norm of the input-embedding pooling.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LlamaForCausalLM

from karma.errors import ConfigError
from karma.model import item_text
from karma.model.backbone import load_backbone, load_pretrained
from karma.model.config import BackboneConfig, EncoderConfig, ModelConfig
from karma.model.encoder import KarmaEncoder, encoder_from_config

TEXTS = [f"Item {i} {['comedy', 'drama', 'space'][i % 3]}" for i in range(9)] + [
    "",
    "A much longer title",
]
TOKENS = 6


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("KARMA_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def model_config(**encoder: object) -> ModelConfig:
    backbone = BackboneConfig(name="tiny", tuning="lora", num_layers=1, tiny_num_layers=2)
    return ModelConfig(backbone, EncoderConfig(embedding_dim=8, item_text_tokens=TOKENS, **encoder))  # type: ignore[arg-type]


def build(**encoder: object) -> KarmaEncoder:
    torch.manual_seed(0)
    return encoder_from_config(model_config(**encoder), TEXTS, max_history=10).eval()


def pretrained() -> LlamaForCausalLM:
    """The same random tiny backbone, before truncation and LoRA."""
    torch.manual_seed(0)
    model, _ = load_pretrained(model_config().backbone)
    return model.eval()  # type: ignore[return-value]


def hand_states(model: LlamaForCausalLM, layers: int, readout: str) -> torch.Tensor:
    """(N, d): each text alone through a `layers`-layer copy of the model, pooled, then scaled."""
    if layers != model.config.num_hidden_layers:
        config = model.config.__class__(**{**model.config.to_dict(), "num_hidden_layers": layers})
        short = LlamaForCausalLM(config).eval()
        short.load_state_dict(model.state_dict(), strict=False)  # drops the layers beyond `layers`
        model = short
    table = model.get_input_embeddings().weight
    rows, input_rows = [], []
    with torch.no_grad():
        for text in TEXTS:
            ids = model_tokenizer(text)
            if not ids:
                rows.append(torch.zeros(table.shape[1]))
                input_rows.append(torch.zeros(table.shape[1]))
                continue
            hidden = model.model(input_ids=torch.tensor([ids])).last_hidden_state[0]  # (T, d)
            rows.append(hidden.mean(0) if readout == "mean" else hidden[-1])
            input_rows.append(table[ids].mean(0))
    states, inputs = torch.stack(rows), torch.stack(input_rows)
    return states * inputs.norm(dim=1).mean() / states.norm(dim=1).mean()


def model_tokenizer(text: str) -> list[int]:
    from karma.model.backbone import tiny_tokenizer

    return tiny_tokenizer()(text, add_special_tokens=False)["input_ids"][:TOKENS]


@pytest.mark.parametrize(("layers", "readout"), [(None, "mean"), (1, "mean"), (None, "last")])
def test_cached_states_equal_a_hand_run_of_the_frozen_backbone(
    layers: int | None, readout: str
) -> None:
    enc = build(item_text_pooling="backbone", item_text_layers=layers, item_text_readout=readout)
    expected = hand_states(pretrained(), layers or 2, readout)
    torch.testing.assert_close(enc.pooled_item_text, expected, atol=1e-5, rtol=1e-5)
    assert not enc.pooled_item_text[TEXTS.index("")].any()  # empty text: zero row
    # The user-side stack is cut to 1 layer; the item text was read by all of them.
    assert len(enc.backbone.get_decoder().layers) == 1
    # P_item starts as the identity: the item token (and the item tower's input) is that state.
    torch.testing.assert_close(enc.item_tokens(torch.tensor(3)), expected[3], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        enc.item_embeddings(torch.tensor([3])),
        torch.nn.functional.normalize(enc.item_head(expected[3:4]), dim=-1),
        atol=1e-5,
        rtol=1e-5,
    )


def test_second_build_reads_the_disk_cache(monkeypatch: pytest.MonkeyPatch, cache_dir) -> None:  # type: ignore[no-untyped-def]
    calls = []
    real = item_text.backbone_pass

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(args[3])  # num_layers
        return real(*args, **kwargs)

    monkeypatch.setattr(item_text, "backbone_pass", counting)
    first = build(item_text_pooling="backbone")
    second = build(item_text_pooling="backbone")
    assert calls == [2]
    assert torch.equal(first.pooled_item_text, second.pooled_item_text)
    assert len(list((cache_dir / item_text.CACHE_DIR).glob("*.safetensors"))) == 1
    build(item_text_pooling="backbone", item_text_layers=1)  # another depth: another key
    assert calls == [2, 1]
    torch.manual_seed(1)  # other backbone weights: another key
    encoder_from_config(model_config(item_text_pooling="backbone"), TEXTS)
    assert calls == [2, 1, 2]


def test_default_path_is_bit_identical_to_loading_the_backbone_directly() -> None:
    config = model_config()
    torch.manual_seed(0)
    backbone, tokenizer = load_backbone(config.backbone)
    legacy = KarmaEncoder(config.encoder, backbone, tokenizer, TEXTS, max_history=10).eval()
    new = build()
    old_state, new_state = legacy.state_dict(), new.state_dict()
    assert old_state.keys() == new_state.keys()
    assert all(torch.equal(old_state[k], new_state[k]) for k in old_state)
    assert torch.equal(legacy.pooled_item_text, new.pooled_item_text)
    histories = [np.array([1, 2, 3]), np.array([4])]
    assert torch.equal(legacy.encode_users(histories), new.encode_users(histories))
    # The backbone pass draws no random numbers: the new heads start from the same values.
    deep = build(item_text_pooling="backbone")
    assert torch.equal(deep.user_head.weight, new.user_head.weight)
    assert torch.equal(deep.item_projection.weight, new.item_projection.weight)


def test_depth_beyond_the_backbone_and_zero_layers_are_refused() -> None:
    with pytest.raises(ConfigError, match="item_text_layers: 3, but the backbone has 2"):
        build(item_text_pooling="backbone", item_text_layers=3)
    with pytest.raises(ValueError, match="item_text_layers: must be >= 1"):
        EncoderConfig(item_text_layers=0)
    torch.manual_seed(0)
    backbone, tokenizer = load_backbone(model_config().backbone)
    with pytest.raises(ValueError, match="needs item_text_states"):
        KarmaEncoder(EncoderConfig(item_text_pooling="backbone"), backbone, tokenizer, TEXTS)


def test_compose_item_texts_cuts_each_field_to_its_budget() -> None:
    from karma.model.backbone import tiny_tokenizer

    tokenizer = tiny_tokenizer()  # byte-level: one token per byte, so budgets count characters
    fields = {
        "title": ["Relay kit", "Glue", ""],
        "brand": ["Supco", "", "Acme"],
        "description": ["A long description", "Gap filling", ""],
    }
    budgets = {"title": 5, "description": 6, "brand": 2}
    texts = item_text.compose_item_texts(tokenizer, fields, budgets)
    # Budget order, empty fields skipped, each field cut on its own.
    assert texts == ["Relay | A long | Su", "Glue | Gap fi", "Ac"]
    with pytest.raises(ConfigError, match="no field 'year'; it has title, brand, description"):
        item_text.compose_item_texts(tokenizer, fields, {"year": 4})


def test_item_text_fields_config_checks() -> None:
    with pytest.raises(ValueError, match="item_text_tokens: 16 is below the item_text_fields"):
        EncoderConfig(item_text_fields={"title": 12, "description": 12})
    with pytest.raises(ValueError, match="budgets must be integers >= 1"):
        EncoderConfig(item_text_tokens=64, item_text_fields={"title": 0})
    with pytest.raises(ValueError, match="give at least one field"):
        EncoderConfig(item_text_fields={})


def test_encoder_composes_fields() -> None:
    config = model_config()
    config.encoder = EncoderConfig(
        embedding_dim=8, item_text_tokens=16, item_text_fields={"title": 4, "categories": 3}
    )
    fields = {"title": ["Alpha Beta", "Gamma"], "categories": ["Tools", ""]}
    torch.manual_seed(0)
    encoder = encoder_from_config(config, ["unused", "unused"], item_fields=fields)
    assert encoder.item_texts == ["Alph | Too", "Gamm"]
    # The token matrix is built from the composed texts (byte tokens: 10 and 4 of them).
    assert encoder.item_text_mask.sum(1).tolist() == [10.0, 4.0]
