"""The serving readout pass equals the full decoder pass at the readout positions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from karma.model.backbone import load_backbone
from karma.model.config import BackboneConfig, EncoderConfig
from karma.model.encoder import KarmaEncoder
from karma.serve import fast_decoder
from karma.serve.fast_decoder import PackedLinear, PrefixCachedDecoder

TEXTS = [f"movie {i} | {g}" for i, g in enumerate(["drama", "comedy", "space", "crime"] * 5)]


def tiny_karma(mode: str, instruction: str) -> KarmaEncoder:
    torch.manual_seed(0)
    backbone, tokenizer = load_backbone(BackboneConfig(name="tiny", tuning="full"))
    config = EncoderConfig(embedding_dim=8, item_text_tokens=6, instruction=instruction)
    encoder = KarmaEncoder(config, backbone, tokenizer, TEXTS, mode=mode, max_history=12)  # type: ignore[arg-type]
    return encoder.eval()


@pytest.mark.parametrize(
    ("mode", "instruction", "queries"),
    [
        ("rec", "Movies the user watched:", [None, None, None]),
        ("search", "next:", ["space opera", None, "a long query about crime and comedy films"]),
        ("rec", "", [None, None, None]),  # no shared prefix at all
    ],
)
def test_readout_pass_equals_the_full_pass(
    mode: str, instruction: str, queries: list[str | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fast_decoder, "ROPE_TABLE", 4)  # rows longer than the table extend it
    encoder = tiny_karma(mode, instruction)
    assert PrefixCachedDecoder.supports(encoder)
    fast = PrefixCachedDecoder(encoder)
    histories = [np.array([3, 1, 4, 1, 5, 9, 2, 6]), np.array([7]), np.array([0, 19, 11])]
    with torch.inference_mode():
        layout = encoder.layout(histories, queries)  # rows of different lengths: right padding
        expected = encoder.readout(layout, encoder.hidden_states(layout))  # (B, d)
        got = fast.readout_hidden(layout)
        alone = fast.readout_hidden(encoder.layout(histories[1:2], queries[1:2]))
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone[0], expected[1], atol=1e-5, rtol=1e-5)  # batch-independent


def test_other_decoders_keep_the_full_pass() -> None:
    torch.manual_seed(0)
    backbone, tokenizer = load_backbone(BackboneConfig(name="tiny", tuning="full"))
    encoder = KarmaEncoder(EncoderConfig(embedding_dim=8), backbone, tokenizer, TEXTS)
    encoder.backbone.get_decoder().layers[0] = torch.nn.Identity()  # type: ignore[index]
    assert not PrefixCachedDecoder.supports(encoder)


def test_int8_quantization_is_opt_in_close_and_leaves_the_backbone_alone() -> None:
    encoder = tiny_karma("rec", "Movies the user watched:")
    fast = PrefixCachedDecoder(encoder)
    histories = [np.array([3, 1, 4, 1, 5]), np.array([7, 2])]
    with torch.inference_mode():
        layout = encoder.layout(histories, [None, None])
        exact = fast.readout_hidden(layout)
        full_before = encoder.readout(layout, encoder.hidden_states(layout))
        fast.quantize_int8()
        approx = fast.readout_hidden(layout)
        full_after = encoder.readout(layout, encoder.hidden_states(layout))
    assert fast.quantized and not torch.equal(approx, exact)  # int8 really runs
    cosine = torch.nn.functional.cosine_similarity(approx, exact, dim=-1)
    assert cosine.min() > 0.98
    torch.testing.assert_close(full_after, full_before)  # the HF modules were not quantized


def test_quantize_needs_a_karma_llama_artifact(artifact_dir) -> None:  # type: ignore[no-untyped-def]
    from karma.errors import KarmaError
    from karma.serve.artifact import load_artifact

    with pytest.raises(KarmaError, match="--quantize int8: supported only"):
        load_artifact(artifact_dir, quantize="int8")  # a toy-encoder artifact


@pytest.mark.skipif(
    not PackedLinear.available(torch.nn.Linear(2, 2)), reason="this torch build has no oneDNN"
)
@pytest.mark.parametrize("bias", [True, False])
def test_packed_linear_equals_the_plain_linear(bias: bool) -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(48, 80, bias=bias)
    packed = PackedLinear.wrap(linear)
    assert isinstance(packed, PackedLinear)
    with torch.inference_mode():
        for shape in [(1, 48), (1, 1, 48), (1, 20, 48), (50, 20, 48), (3, 7, 48)]:
            x = torch.randn(*shape)
            torch.testing.assert_close(packed(x), linear(x), atol=1e-5, rtol=1e-5)


def test_packed_linear_keeps_layers_it_cannot_run() -> None:
    half = torch.nn.Linear(8, 8).to(torch.bfloat16)
    assert PackedLinear.wrap(half) is half
    other = torch.nn.Identity()
    assert PackedLinear.wrap(other) is other


@pytest.mark.parametrize("length", [1, 2, 5, 12, 30])
def test_readout_pass_equals_the_full_pass_at_every_history_length(length: int) -> None:
    encoder = tiny_karma("rec", "Movies the user watched:")
    fast = PrefixCachedDecoder(encoder)
    if PackedLinear.available(torch.nn.Linear(2, 2)):  # the packed oneDNN layers really run
        assert all(isinstance(m, PackedLinear) for m in [*fast.qkv, *fast.down_proj, fast.last_q])
    history = np.random.default_rng(length).integers(0, len(TEXTS), length)  # 30 > max_history
    with torch.inference_mode():
        layout = encoder.layout([history], [None])
        expected = encoder.readout(layout, encoder.hidden_states(layout))
        got = fast.readout_hidden(layout)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
