"""Fidelity probes on synthetic embeddings whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from karma.diagnostics.probes import (
    ProbeConfig,
    TitleDecoder,
    binary_auc,
    category_matrix,
    category_probe,
    held_out_count,
    own_vs_others_auc,
    probe_split,
    retrieval_auc,
    semantic_fidelity,
    split_users,
    text_alignment,
    title_log_likelihoods,
    title_nll,
    title_probe,
    word_log_probs,
)

USERS, CATEGORIES, DIM = 300, 5, 16


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    category = rng.integers(0, CATEGORIES, USERS)
    labels = np.eye(CATEGORIES, dtype=np.float32)[category]  # (U, C)
    encoded = labels @ rng.normal(size=(CATEGORIES, DIM)) + 0.1 * rng.normal(size=(USERS, DIM))
    random = rng.normal(size=(USERS, DIM))
    return labels, encoded.astype(np.float32), random.astype(np.float32)


def test_split_is_seeded_and_disjoint() -> None:
    train, test = split_users(10, 0.8, seed=3)
    assert len(train) == 8 and len(test) == 2 and not set(train) & set(test)
    assert np.array_equal(split_users(10, 0.8, seed=3)[1], test)
    with pytest.raises(ValueError, match="train_fraction"):
        ProbeConfig(train_fraction=1.0)


def test_category_probe_reads_linearly_encoded_categories() -> None:
    labels, encoded, random = _data()
    good = category_probe(encoded, labels)
    assert good["top1_accuracy"] > 0.95 and good["micro_f1"] > 0.9 and good["macro_f1"] > 0.9
    chance = category_probe(random, labels)
    assert chance["top1_accuracy"] < 0.4  # 5 balanced categories: chance is about 0.2
    assert chance["chance_top1"] < 0.4


def test_category_matrix_is_multi_hot() -> None:
    labels, names = category_matrix([["b", "a"], [], ["b"]])
    assert names == ["a", "b"]
    assert labels.tolist() == [[1, 1], [0, 0], [0, 1]]


def test_title_probe_decodes_titles_only_from_informative_embeddings() -> None:
    labels, encoded, random = _data()
    words = [["red", "apple"], ["blue", "sky", "today"], ["green", "tea"], ["old", "man"], ["sea"]]
    titles = [" ".join(words[int(c)]) for c in labels.argmax(1)]
    config = ProbeConfig(title_epochs=15)
    good = title_probe(encoded, titles, config)
    assert good["token_accuracy"] > 0.95 and good["perplexity"] < 1.1
    # each held-out title is likelier under its own user's vector than under any other title's
    assert good["retrieval_auc"] > 0.99
    noise = title_probe(random, titles, config)
    assert noise["token_accuracy"] < good["token_accuracy"] - 0.2
    assert abs(noise["retrieval_auc"] - 0.5) < 0.1


def test_text_alignment_recovers_a_linear_map_and_not_noise() -> None:
    rng = np.random.default_rng(1)
    _, encoded, random = _data()
    features = encoded @ rng.normal(size=(DIM, 8))  # a linear image of E in another dimension
    assert text_alignment(encoded, features)["cosine"] > 0.99
    noise = text_alignment(random, features)
    # noise predicts nothing about the centered features: cosine near 0, retrieval AUC near 1/2
    assert abs(noise["cosine"]) < 0.1 and abs(noise["retrieval_auc"] - 0.5) < 0.1
    direct = text_alignment(features, features, fit_map=False)
    assert direct["cosine"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="target_features"):
        text_alignment(encoded, features, fit_map=False)


def test_semantic_fidelity_runs_the_probes_given() -> None:
    labels, encoded, _ = _data()
    cats = [[f"c{int(c)}"] for c in labels.argmax(1)]
    out = semantic_fidelity(encoded, target_categories=cats, target_features=encoded)
    assert set(out) == {"category", "text_alignment"}


# ----- controls: a constant vector scores exactly chance, the target's own text scores high -----


def test_held_out_users_reach_500_where_the_sample_allows() -> None:
    config = ProbeConfig()
    assert held_out_count(943, config) == 500  # ml-100k: 500 held out, 443 fitted
    assert held_out_count(6040, config) == 1208  # 20% is already more than 500
    assert held_out_count(600, config) == 400  # 200 users stay for fitting
    assert held_out_count(100, config) == 20
    train, test = probe_split(943, config)
    assert (len(train), len(test)) == (443, 500) and not set(train) & set(test)


def _skewed_labels(users: int, seed: int = 0) -> np.ndarray:
    """Multi-hot labels: category 0 on ~70% of users, 1 on ~30%, 2 on ~10%."""
    rng = np.random.default_rng(seed)
    return (rng.random((users, 3)) < np.array([0.7, 0.3, 0.1])).astype(np.float32)


def test_constant_vector_scores_category_chance() -> None:
    labels = _skewed_labels(700)
    constant = np.full((700, 4), 0.3, dtype=np.float32)
    config = ProbeConfig()
    out = category_probe(constant, labels, config)
    _, test = probe_split(700, config)
    truth = labels[test].astype(bool)
    # By hand: the prior predicts category 0 (training frequency ~0.7 > 0.5) for every user, and
    # the other two (~0.3, ~0.1 < 0.5) for nobody; top-1 is category 0 for everyone.
    tp = truth[:, 0].sum()
    fp = (~truth[:, 0]).sum()
    fn = truth[:, 1:].sum()
    chance_f1 = 2 * tp / (2 * tp + fp + fn)
    assert out["chance_micro_f1"] == pytest.approx(chance_f1)
    assert out["micro_f1"] == pytest.approx(chance_f1)
    assert out["chance_top1"] == pytest.approx(truth[:, 0].mean())
    assert out["top1_accuracy"] == pytest.approx(truth[:, 0].mean())
    assert out["macro_auc"] == 0.5  # every held-out user gets the same logits: all ties
    informative = labels + 0.3 * np.random.default_rng(1).normal(size=labels.shape)
    good = category_probe(informative.astype(np.float32), labels, config)
    assert good["macro_auc"] > 0.95 and good["micro_f1"] > chance_f1 + 0.2


def test_constant_vector_scores_title_chance() -> None:
    labels, _, _ = _data()
    words = [["red", "apple"], ["blue", "sky", "today"], ["green", "tea"], ["old", "man"], ["sea"]]
    titles = [" ".join(words[int(c)]) for c in labels.argmax(1)]
    out = title_probe(np.ones((USERS, 1), dtype=np.float32), titles, ProbeConfig(title_epochs=3))
    # standardized, a constant is all zeros: every user gives a title the same likelihood
    assert out["retrieval_auc"] == 0.5


def test_own_vs_others_auc_by_hand_with_excluded_pairs() -> None:
    scores = torch.tensor([[3.0, 1.0, 2.0], [0.0, 1.0, 1.0], [5.0, 0.0, 4.0]])
    # row 0: own 3 beats 1 and 2 -> 2/2; row 1: own 1 beats 0, ties 1 -> 1.5/2;
    # row 2: own 4 beats 0, loses to 5 -> 1/2. Mean over the 6 pairs: 4.5 / 6.
    assert own_vs_others_auc(scores) == pytest.approx(4.5 / 6)
    same = torch.tensor([[False, False, True], [False, False, False], [True, False, False]])
    # dropping the pairs (0, 2) and (2, 0): row 0 keeps 1/1, row 2 keeps 1/1 -> (1 + 1.5 + 1) / 4
    assert own_vs_others_auc(scores, exclude=same) == pytest.approx(3.5 / 4)
    assert own_vs_others_auc(torch.ones(1, 1)) != own_vs_others_auc(torch.ones(1, 1))  # nan


def test_title_log_likelihoods_match_the_decoder_pair_by_pair() -> None:
    torch.manual_seed(0)
    decoder = TitleDecoder(embedding_dim=3, vocab_size=9)
    x = torch.randn(4, 3)
    tokens = torch.tensor([[1, 4, 5, 2, 0], [1, 6, 2, 0, 0], [1, 7, 8, 4, 2]])  # <bos> .. <eos> pad
    table = title_log_likelihoods(decoder, x, tokens, pairs=8)  # 2 titles x 4 users, then 1
    assert table.shape == (3, 4)
    for v in range(3):
        length = int((tokens[v] != 0).sum())
        for u in range(4):
            with torch.no_grad():
                logits = decoder(x[u : u + 1], tokens[v : v + 1, : length - 1])[0]
            by_hand = torch.log_softmax(logits, -1).gather(1, tokens[v, 1:length, None]).sum()
            assert table[v, u] == pytest.approx(float(by_hand), abs=1e-5)


def testword_log_probs_in_blocks_and_the_pad_free_nll_match_the_full_softmax() -> None:
    torch.manual_seed(0)
    decoder = TitleDecoder(embedding_dim=3, vocab_size=9)
    states, words = torch.randn(5, 96), torch.tensor([4, 0, 8, 2, 5])
    with torch.no_grad():
        blocks = word_log_probs(decoder, states, words, rows=2)  # blocks of 2, 2 and 1
        full = torch.log_softmax(decoder.out(states), -1)[torch.arange(5), words]
    assert torch.allclose(blocks, full, atol=1e-6)
    x, tokens = torch.randn(2, 3), torch.tensor([[1, 4, 5, 2, 0], [1, 6, 2, 0, 0]])
    with torch.no_grad():
        logits = decoder(x, tokens[:, :-1])  # every position, pads included
        # the 5 real targets (4 5 2 | 6 2) by hand: mean of -log p over them
        by_hand = -torch.log_softmax(logits, -1)[[0, 0, 0, 1, 1], [0, 1, 2, 0, 1], [4, 5, 2, 6, 2]]
        assert float(title_nll(decoder, x, tokens)) == pytest.approx(float(by_hand.mean()))


def test_retrieval_auc_by_hand() -> None:
    truth = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # u0 predicts (1, 0.1): cos with f0 0.995, f1 0.0995, f2 -0.995 -> wins 2/2; u1 predicts (1, 0):
    # own f1 scores 0 against f0 1 and f2 -1 -> 1/2; u2 predicts (-1, 0): wins 2/2.
    predicted = torch.tensor([[1.0, 0.1], [1.0, 0.0], [-1.0, 0.0]])
    assert retrieval_auc(predicted, truth) == pytest.approx((1 + 0.5 + 1) / 3)
    # a constant prediction: exactly 1/2 whatever the targets, ties included
    assert retrieval_auc(torch.ones(3, 2), truth) == pytest.approx(0.5)
    assert binary_auc(torch.tensor([3.0, 1.0, 2.0]), torch.tensor([True, False, True])) == 1.0
    assert binary_auc(torch.zeros(3), torch.tensor([True, False, True])) == 0.5


def test_text_probe_constant_is_chance_and_own_text_scores_high() -> None:
    rng = np.random.default_rng(2)
    # MiniLM-like features: a large direction shared by every text plus a per-item part.
    shared = 3.0 * rng.normal(size=16)
    items = shared + rng.normal(size=(150, 16))
    targets = rng.integers(0, 150, size=800)
    features = items[targets]  # (U, f): each user's target text
    constant = text_alignment(np.ones((800, 1), dtype=np.float32), features)
    assert constant["cosine"] == 0.0  # predicts the (centered) mean: the zero vector
    assert constant["retrieval_auc"] == pytest.approx(0.5)
    assert constant["num_test_users"] == 500
    own = text_alignment((features + 0.1 * rng.normal(size=features.shape)), features)
    assert own["cosine"] > 0.9 and own["retrieval_auc"] > 0.95
    # Weakly informative vectors (target text buried in noise) still beat the constant.
    weak = text_alignment(features + 3.0 * rng.normal(size=features.shape), features)
    assert weak["cosine"] > constant["cosine"] + 0.1
    assert weak["retrieval_auc"] > constant["retrieval_auc"] + 0.1


def test_constant_vector_is_at_chance_on_every_probe() -> None:
    labels = _skewed_labels(300)
    names = ["a", "b", "c"]
    cats = [[names[c] for c in np.flatnonzero(row)] for row in labels]
    features = np.random.default_rng(3).normal(size=(300, 8)) + 2.0
    out = semantic_fidelity(
        np.ones((300, 1), dtype=np.float32),
        target_categories=cats,
        target_features=features,
    )
    assert out["category"]["macro_auc"] == 0.5
    assert out["category"]["micro_f1"] == pytest.approx(out["category"]["chance_micro_f1"])
    assert out["text_alignment"]["cosine"] == 0.0
    assert out["text_alignment"]["retrieval_auc"] == pytest.approx(0.5)
