"""The continuous-token encoder on a tiny random backbone: shapes, padding, causality, towers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from karma.model.backbone import load_backbone
from karma.model.config import BackboneConfig, EncoderConfig
from karma.model.encoder import KarmaEncoder
from karma.model.sequence import layout_batch, length_groups

TEXTS = [f"Item {i} {['comedy', 'drama', 'space'][i % 3]}" for i in range(12)] + [""]


def make_encoder(
    mode: str = "rec", tuning: str = "lora", freeze_embeddings: bool = True, **encoder: object
) -> KarmaEncoder:
    torch.manual_seed(0)
    backbone, tokenizer = load_backbone(
        BackboneConfig(name="tiny", tuning=tuning, freeze_embeddings=freeze_embeddings)  # type: ignore[arg-type]
    )
    config = EncoderConfig(embedding_dim=8, item_text_tokens=6, **encoder)  # type: ignore[arg-type]
    return KarmaEncoder(config, backbone, tokenizer, TEXTS, mode=mode, max_history=10).eval()  # type: ignore[arg-type]


def h(*items: int) -> np.ndarray:
    return np.asarray(items, dtype=np.int64)


def test_layout_places_instruction_query_items_and_interest() -> None:
    layout = layout_batch([7, 8], [[9], []], [h(3, 4), h(5)], with_interest=True)
    assert layout.token_ids.tolist() == [[7, 8, 9, -1, -1, -1], [7, 8, -1, -1, -1, -1]]
    assert layout.item_ids.tolist() == [[-1, -1, -1, 3, 4, -1], [-1, -1, 5, -1, -1, -1]]
    assert layout.interest.nonzero().tolist() == [[0, 5], [1, 3]]
    assert layout.item_positions.tolist() == [[3, 4], [2, -1]]
    assert layout.readout_positions.tolist() == [5, 3]
    assert layout.attention_mask.sum(1).tolist() == [6, 4]


def test_layout_with_the_query_last_puts_it_between_history_and_interest() -> None:
    layout = layout_batch(
        [7, 8], [[9, 10], []], [h(3, 4), h(5)], with_interest=True, query_last=True
    )
    assert layout.token_ids.tolist() == [[7, 8, -1, -1, 9, 10, -1], [7, 8, -1, -1, -1, -1, -1]]
    assert layout.item_ids.tolist() == [[-1, -1, 3, 4, -1, -1, -1], [-1, -1, 5, -1, -1, -1, -1]]
    assert layout.interest.nonzero().tolist() == [[0, 6], [1, 3]]
    assert layout.item_positions.tolist() == [[2, 3], [2, -1]]
    assert layout.readout_positions.tolist() == [6, 3]
    assert layout.attention_mask.sum(1).tolist() == [7, 4]


def test_length_groups_cut_where_padding_costs_most() -> None:
    # Sorted lengths 1, 1, 2, 9 (rows 1, 3, 2, 0). One group pads all four to 9: 36 positions.
    # Two groups: {1, 1, 2} + {9} = 3 * 2 + 9 = 15 (the best; {1, 1} + {2, 9} = 2 + 18 = 20).
    # Three groups: {1, 1} + {2} + {9} = 2 + 2 + 9 = 13.
    lengths = np.array([9, 1, 2, 1])
    assert [g.tolist() for g in length_groups(lengths, 1)] == [[1, 3, 2, 0]]
    assert [g.tolist() for g in length_groups(lengths, 2)] == [[1, 3, 2], [0]]
    assert [g.tolist() for g in length_groups(lengths, 3)] == [[1, 3], [2], [0]]
    # A fourth group would save nothing ({1} + {1} costs what {1, 1} does): it is not made.
    assert [g.tolist() for g in length_groups(lengths, 4)] == [[1, 3], [2], [0]]
    assert [g.tolist() for g in length_groups(np.array([3, 3, 3]), 3)] == [[0, 1, 2]]
    with pytest.raises(ValueError, match="max_groups"):
        length_groups(lengths, 0)


def test_encode_users_shows_a_bar_only_when_asked_or_on_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    enc, histories = make_encoder(), [h(1, 2, 3), h(4), h(5, 6)]
    enc.encode_users(histories, batch_size=2, progress=True)
    assert "users" in capsys.readouterr().err  # 2 batches
    for progress in (False, None):  # None: tqdm's terminal check; pytest's stderr is no terminal
        enc.encode_users(histories, batch_size=2, progress=progress)
        assert capsys.readouterr().err == ""


def test_shapes_and_unit_norms() -> None:
    enc = make_encoder()
    users = enc.encode_users([h(1, 2, 3), h(4), h(5, 6)], batch_size=2)
    items = enc.item_embeddings()
    assert users.shape == (3, 8) and items.shape == (len(TEXTS), 8)
    assert torch.allclose(users.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(items.norm(dim=-1), torch.ones(len(TEXTS)), atol=1e-5)
    assert enc.item_tokens(torch.tensor([[1, 2], [3, 4]])).shape == (2, 2, enc.hidden_size)
    assert enc.item_embeddings(torch.tensor([[1, 2], [3, 4]])).shape == (2, 2, 8)


def test_item_token_dropout_drops_history_tokens_in_training_only() -> None:
    enc = make_encoder(item_token_dropout=0.5)
    layout = enc.layout([h(1, 2, 3), h(4, 5)])
    is_item = layout.item_ids >= 0
    clean = enc.inputs_embeds(layout)  # eval: no dropout
    tokens = enc.item_tokens(layout.item_ids[is_item])
    assert torch.allclose(clean[is_item], tokens, atol=1e-6)
    enc.train()
    torch.manual_seed(0)
    dropped = enc.inputs_embeds(layout)
    kept = dropped[is_item] != 0
    assert 0 < kept.float().mean() < 1
    assert torch.allclose(dropped[is_item][kept], 2 * tokens[kept], atol=1e-6)
    assert torch.equal(dropped[~is_item], clean[~is_item])  # instruction tokens untouched
    assert torch.equal(enc.item_embeddings(), enc.eval().item_embeddings())  # item tower: none
    with pytest.raises(ValueError, match="item_token_dropout"):
        EncoderConfig(item_token_dropout=1.0)


def test_item_token_starts_as_mean_text_embedding() -> None:
    enc = make_encoder()
    ids = enc.tokenizer(TEXTS[4], add_special_tokens=False)["input_ids"][:6]
    mean = enc.backbone.get_input_embeddings().weight[ids].mean(0)
    assert torch.allclose(enc.item_tokens(torch.tensor(4)), mean, atol=1e-6)
    assert torch.isfinite(enc.item_tokens(torch.tensor(len(TEXTS) - 1))).all()  # empty text


def test_padding_does_not_change_a_users_embedding() -> None:
    enc = make_encoder()
    alone = enc.encode_users([h(1, 2)])
    padded = enc.encode_users([h(1, 2), h(3, 4, 5, 6, 7, 8, 9)])
    assert torch.allclose(alone[0], padded[0], atol=1e-5)
    other = enc.encode_users([h(2, 1)])
    assert not torch.allclose(alone[0], other[0], atol=1e-3)  # order matters: it is not a bag


@pytest.mark.parametrize("mode", ["rec", "search"])
def test_users_batched_by_length_come_back_in_the_order_given(mode: str) -> None:
    enc = make_encoder(mode)
    histories = [h(1, 2, 3, 4, 5), h(6), h(7, 8, 9), h(10), h(11, 1, 2, 3), h(4, 5)]
    queries = ["comedy", None, "space drama", "drama", None, "item"] if mode == "search" else None
    batched = enc.encode_users(histories, queries, batch_size=2)  # batches: lengths 1+1, 2+3, 4+5
    alone = torch.cat(
        [
            enc.encode_users([hist], [queries[i]] if queries else None)
            for i, hist in enumerate(histories)
        ]
    )
    assert torch.allclose(batched, alone, atol=1e-5)
    assert not torch.allclose(batched[0], batched[1], atol=1e-3)  # rows are not interchangeable


def test_all_prefix_readout_equals_separate_prefix_runs() -> None:
    enc = make_encoder()
    history = h(3, 1, 4, 1, 5)
    layout = enc.layout([history, h(2, 6)])
    with torch.no_grad():
        readout = enc.readout(layout, enc.hidden_states(layout), all_prefixes=True)  # (2, 5, d)
        all_prefix = enc.interest_embeddings(readout[0])  # (5, e)
    separate = torch.cat([enc.encode_users([history[: k + 1]]) for k in range(len(history))])
    assert torch.allclose(all_prefix, separate, atol=1e-5)


def test_history_is_truncated_to_max_history() -> None:
    enc = make_encoder()
    long = np.arange(12, dtype=np.int64) % 12
    assert torch.allclose(enc.encode_users([long]), enc.encode_users([long[-10:]]), atol=1e-6)


@pytest.mark.parametrize("tower", ["projection", "llm"])
def test_item_tower_batched_equals_one_at_a_time(tower: str) -> None:
    enc = make_encoder(item_tower=tower)
    with torch.no_grad():
        batched = enc.item_embeddings(batch_size=5)
        single = torch.cat([enc.item_embeddings(torch.tensor([i])) for i in range(len(TEXTS))])
    assert torch.allclose(batched, single, atol=1e-5)


def test_search_mode_reads_the_query() -> None:
    enc = make_encoder(mode="search")
    with_query = enc.encode_users([h(1, 2), h(1, 2)], ["space films", "comedy"])
    assert not torch.allclose(with_query[0], with_query[1], atol=1e-3)
    layout = enc.layout([h(1, 2)], ["space"])
    assert layout.interest[0, layout.readout_positions[0]]


def test_item_id_embedding_is_optional_and_starts_at_zero() -> None:
    plain, with_ids = make_encoder(), make_encoder(item_id_embedding=True)
    assert plain.item_id_embedding is None
    assert torch.allclose(plain.item_tokens(torch.arange(4)), with_ids.item_tokens(torch.arange(4)))


def test_trainable_embeddings_recompute_pooling_with_gradient() -> None:
    enc = make_encoder(tuning="full", freeze_embeddings=False)
    assert enc.pooled_item_text is None
    enc.item_embeddings(torch.tensor([1, 2])).sum().backward()
    assert enc.backbone.get_input_embeddings().weight.grad is not None
    frozen = make_encoder()
    assert frozen.pooled_item_text is not None and frozen.pooled_item_text.shape == (
        len(TEXTS),
        frozen.hidden_size,
    )
