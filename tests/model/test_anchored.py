"""The semantic-anchored item tower: the residual bound, cold items, and the encoder around it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from karma.model.anchored import BoundedResidual, bounded_residual
from karma.model.backbone import load_backbone
from karma.model.config import BackboneConfig, EncoderConfig
from karma.model.encoder import KarmaEncoder

TEXTS = [f"Item {i} {['comedy', 'drama', 'space'][i % 3]}" for i in range(8)]


def test_bounded_residual_hand_computed() -> None:
    anchors = torch.tensor([[3.0, 4.0], [3.0, 4.0], [0.0, 2.0]])  # norms 5, 5, 2
    raw = torch.tensor([[0.0, 2.0], [0.5, 0.0], [6.0, 8.0]])  # norms 2, 0.5, 10
    out = bounded_residual(anchors, raw, ratio=0.2)  # limits 1, 1, 0.4
    expected = torch.tensor([[0.0, 1.0], [0.5, 0.0], [0.24, 0.32]])  # cut, kept, cut to 0.4
    assert torch.allclose(out, expected)


def test_untrained_items_are_exactly_their_anchor() -> None:
    module = BoundedResidual(3, 2, ratio=0.5, trained=torch.tensor([True, False, True]))
    with torch.no_grad():
        module.table.weight.fill_(7.0)
    anchors = torch.tensor([[1.0, 0.0], [2.0, 2.0], [0.0, 4.0]])
    out = module(anchors, torch.tensor([0, 1, 2]))
    assert torch.equal(out[1], anchors[1])
    assert torch.allclose(out[0], torch.tensor([1.0 + 0.5 / 2**0.5, 0.5 / 2**0.5]))
    module.append(2)
    assert module.table.weight.shape == (5, 2)
    assert module.trained.tolist() == [True, False, True, False, False]
    assert torch.equal(module.table.weight[3:], torch.zeros(2, 2))
    new = torch.tensor([[1.0, 1.0], [-1.0, 3.0]])
    assert torch.equal(module(new, torch.tensor([3, 4])), new)


def test_the_bound_holds_after_any_update() -> None:
    torch.manual_seed(0)
    module = BoundedResidual(16, 6, ratio=0.25)
    anchors = torch.randn(16, 6)
    optimizer = torch.optim.SGD(module.parameters(), lr=50.0)  # huge steps: the bound must hold
    target = torch.randn(16, 6) * 100
    for _ in range(5):
        out = module(anchors, torch.arange(16))
        loss = (out - target).pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            moved = (module(anchors, torch.arange(16)) - anchors).norm(dim=1)
            assert (moved <= 0.25 * anchors.norm(dim=1) * (1 + 1e-5)).all()
    assert moved.min() > 0.2 * anchors.norm(dim=1).min()  # the residual did learn, up to the bound


def test_residual_dropout_shows_items_as_their_anchor_in_training_only() -> None:
    module = BoundedResidual(4, 2, ratio=1.0, dropout=0.5)
    with torch.no_grad():
        module.table.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 2.0]]))
    anchors = torch.tensor([[3.0, 4.0], [3.0, 4.0], [0.0, 4.0], [4.0, 0.0]])  # norms 5, 5, 4, 4
    full = anchors + torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 2.0]])  # all within
    index = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])  # each item twice in one pass
    module.eval()
    assert torch.equal(module(anchors[index], index), full[index])  # evaluation never drops
    module.train()
    torch.manual_seed(0)
    dropped = torch.zeros(4)
    for _ in range(400):
        out = module(anchors[index], index)
        is_anchor = (out == anchors[index]).all(dim=1)  # (8,)
        assert ((out == full[index]).all(dim=1) | is_anchor).all()  # the residual, or none
        assert torch.equal(is_anchor[:4], is_anchor[4:])  # one draw per item, shared in the pass
        dropped += is_anchor[:4].float()
    assert ((dropped / 400 - 0.5).abs() < 0.1).all()  # p = 0.5 per item
    torch.manual_seed(0)
    keep = BoundedResidual(4, 2, ratio=1.0, dropout=0.0)
    keep.load_state_dict(module.state_dict())
    assert torch.equal(keep(anchors, torch.arange(4)), full)  # p = 0: as before


def test_residual_dropout_is_checked() -> None:
    with pytest.raises(ValueError, match="dropout: must be in"):
        BoundedResidual(2, 2, ratio=0.5, dropout=1.0)
    with pytest.raises(ValueError, match="item_residual_dropout: needs item_residual_ratio"):
        EncoderConfig(item_residual_dropout=0.2)
    with pytest.raises(ValueError, match="item_residual_dropout: must be in"):
        EncoderConfig(item_residual_ratio=0.5, item_residual_dropout=-0.1)


def test_ratio_must_be_positive() -> None:
    with pytest.raises(ValueError, match="ratio: must be > 0"):
        BoundedResidual(2, 2, ratio=0.0)
    with pytest.raises(ValueError, match="item_residual_ratio: must be > 0"):
        EncoderConfig(item_residual_ratio=-1.0)


def make_encoder(trained: np.ndarray, **encoder: object) -> KarmaEncoder:
    torch.manual_seed(0)
    backbone, tokenizer = load_backbone(BackboneConfig(name="tiny", tuning="lora"))
    config = EncoderConfig(embedding_dim=8, item_text_tokens=6, **encoder)  # type: ignore[arg-type]
    return KarmaEncoder(config, backbone, tokenizer, TEXTS, max_history=10, trained_items=trained)


def test_encoder_trains_the_residual_of_trained_items_only() -> None:
    trained = np.array([True] * 6 + [False] * 2)  # items 6 and 7 are cold
    enc = make_encoder(trained, item_residual_ratio=0.3, item_id_embedding=False)
    anchors = enc.item_projection(enc.pooled_item_text).detach()  # (N, d)
    assert torch.equal(enc.item_tokens(torch.arange(8)), anchors)  # starts at the anchor
    optimizer = torch.optim.Adam(enc.item_token_parameters(), lr=0.5)
    for _ in range(3):  # pull every item embedding towards one direction, cold ones included
        loss = -enc.item_embeddings()[:, 0].sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        anchors = enc.item_projection(enc.pooled_item_text)
        tokens = enc.item_tokens(torch.arange(8))
        moved = (tokens - anchors).norm(dim=1)
    assert torch.equal(tokens[6:], anchors[6:])  # cold: exactly the (updated) anchor
    assert (moved[:6] > 0).all()
    assert (moved <= 0.3 * anchors.norm(dim=1) * (1 + 1e-5)).all()
    assert "item_residual.trained" in enc.state_dict()  # the mask is saved with the weights
    enc.append_items(["A brand new item"])
    with torch.no_grad():
        new = enc.item_tokens(torch.tensor([8]))
        anchor = enc.item_projection(enc.pooled_item_text[8:9])
    assert torch.equal(new, anchor)


def test_encoder_residual_dropout_reaches_the_tower() -> None:
    trained = np.ones(8, dtype=bool)
    enc = make_encoder(trained, item_residual_ratio=0.3, item_residual_dropout=0.5)
    assert enc.item_residual is not None and enc.item_residual.dropout == 0.5
    with torch.no_grad():
        enc.item_residual.table.weight.normal_()
    anchors = enc.item_projection(enc.pooled_item_text).detach()
    enc.eval()
    with torch.no_grad():
        first, second = enc.item_tokens(torch.arange(8)), enc.item_tokens(torch.arange(8))
    assert torch.equal(first, second) and not torch.equal(first, anchors)  # eval: never drops
    enc.train()
    torch.manual_seed(1)
    with torch.no_grad():
        shown = enc.item_tokens(torch.arange(8))
    as_anchor = (shown == anchors).all(dim=1)
    assert as_anchor.any() and not as_anchor.all()  # some items shown as their anchor alone
    assert torch.equal(shown[~as_anchor], first[~as_anchor])
