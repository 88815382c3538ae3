"""Semantic fidelity of interest embeddings: how much of the target's meaning a probe recovers.

Every model's user-embedding matrix `E (U, e)` goes through the same three frozen-embedding probes,
each trained on a seeded split of users and scored on the held-out users (at least
`min_held_out_users`, 500 by default, where the sample allows):

- `category_probe`: multi-label logistic regression over the target item's categories;
- `title_probe`: a one-layer GRU decoder conditioned on `E` that reconstructs the target's title
  words. Its headline is `retrieval_auc`: is a held-out title likelier under its own user's
  embedding than under the other held-out users'? (Token accuracy and perplexity, next to the same
  decoder given no embedding, are kept as secondary numbers: on ml-100k's ~440 fit users the
  argmax accuracy of every model sat at or below that floor, while the AUC separates them.)
- `text_alignment`: a ridge map of `E` onto the target's text features, scored by the centered
  cosine and by a retrieval AUC (is the user's own target text closer than other users'?).

Embeddings are standardized with train-split statistics so the probes' step sizes fit any model;
a dimension that is constant on the training users becomes 0.

Controls. A constant `E` (the popularity baseline's user vector) carries no information about the
target, and every score reports its chance level next to it: `chance_top1`, `chance_micro_f1`
(the training prior, thresholded), `macro_auc` 0.5, the title's `retrieval_auc` 0.5,
`cosine` 0 and `retrieval_auc` 0.5 for the text features. A constant vector scores *exactly*
those (its standardized `E` is 0, so each probe falls back to its prior). Text features are
centered on the training users' mean before any cosine: MiniLM-style features all share a large
common direction, and an uncentered cosine rewarded predicting that mean direction (a constant
vector's 0.563 on ml-100k beat every informative model).
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class ProbeConfig:
    """Settings shared by the fidelity probes (the same for every model compared)."""

    train_fraction: float = 0.8
    """Share of users the probes are fitted on; the rest are held out for the scores."""
    seed: int = 0
    """Seed of the user split and of the probes' initialization."""
    category_steps: int = 300
    """Full-batch Adam steps of the logistic-regression category probe."""
    title_epochs: int = 15
    """Max epochs of the title decoder probe (the best epoch on 10% of train users is kept)."""
    weight_decay: float = 1e-3
    """L2 penalty of the category probe (and ridge of the linear text map)."""
    max_title_words: int = 16
    """Title words decoded per target (longer titles are cut)."""
    min_held_out_users: int = 500
    """Hold out at least this many users (more than 1 - train_fraction would) as long as
    `min_fit_users` remain to fit the probes on."""
    min_fit_users: int = 200
    """Users always left to fit the probes on when `min_held_out_users` raises the held-out set."""

    def __post_init__(self) -> None:
        if not 0.0 < self.train_fraction < 1.0:
            raise ValueError(f"train_fraction: must be in (0, 1), got {self.train_fraction}")
        for name in ("min_held_out_users", "min_fit_users"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        for name in ("category_steps", "title_epochs", "max_title_words"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay: must be >= 0, got {self.weight_decay}")


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread inside: the probes' ops are tiny, and a thread pool only adds
    synchronization (100x slower than one thread on a busy 2-core machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def held_out_count(num_users: int, config: ProbeConfig) -> int:
    """Users held out: `1 - train_fraction` of them, raised to `min_held_out_users` while
    `min_fit_users` remain for fitting (943 users -> 500 held out, 443 fitted)."""
    share = round(num_users * (1.0 - config.train_fraction))
    raised = min(config.min_held_out_users, num_users - config.min_fit_users)
    return max(share, raised)


def split_users(
    num_users: int, train_fraction: float, seed: int, held_out: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded permutation cut into (train, held-out) user indices, both non-empty.

    `held_out` users are held out when given, else `1 - train_fraction` of them.
    """
    if num_users < 2:
        raise ValueError(f"num_users: need at least 2 users to hold some out, got {num_users}")
    order = np.random.default_rng(seed).permutation(num_users)
    cut = num_users - held_out if held_out is not None else round(num_users * train_fraction)
    cut = min(max(1, cut), num_users - 1)
    return np.sort(order[:cut]), np.sort(order[cut:])


def probe_split(num_users: int, config: ProbeConfig) -> tuple[np.ndarray, np.ndarray]:
    """The (fit, held-out) users every probe uses."""
    return split_users(
        num_users, config.train_fraction, config.seed, held_out_count(num_users, config)
    )


def _standardize(embeddings: np.ndarray, train: np.ndarray) -> torch.Tensor:
    """Z-score with the training users' statistics; a dimension constant on them becomes 0."""
    x = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
    mean, std = x[train].mean(0), x[train].std(0)
    varies = std > 1e-6 * x[train].abs().amax(0).clamp_min(1.0)
    return torch.where(varies, (x - mean) / std.clamp_min(1e-12), torch.zeros_like(x))


def binary_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """ROC AUC = P(score(pos) > score(neg)) + 0.5 P(equal); NaN without both classes."""
    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    greater = (pos[:, None] > neg[None, :]).double().mean()
    equal = (pos[:, None] == neg[None, :]).double().mean()
    return float(greater + 0.5 * equal)


def _micro_f1(predicted: torch.Tensor, truth: torch.Tensor) -> tuple[float, torch.Tensor]:
    """(micro F1, (C,) per-category F1) of boolean (U, C) predictions."""
    tp = (predicted & truth).sum(0).double()  # (C,)
    fp = (predicted & ~truth).sum(0).double()
    fn = (~predicted & truth).sum(0).double()
    micro = 2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum()).clamp_min(1)
    return float(micro), 2 * tp / (2 * tp + fp + fn).clamp_min(1)


def category_probe(
    embeddings: np.ndarray, labels: np.ndarray, config: ProbeConfig | None = None
) -> dict[str, float]:
    """Logistic regression `σ(E W + b)` on multi-hot target categories `labels (U, C)`.

    Held-out scores: `top1_accuracy` (the highest-scoring category is one of the target's),
    `micro_f1` and `macro_f1` at threshold 0.5 (macro over categories present in the held-out
    users), and `macro_auc` (mean per-category ROC AUC over categories with positive and negative
    held-out users; threshold-free, 0.5 = chance). Chance levels, from the training prior alone
    (what a constant `E` reduces the probe to): `chance_top1` (always the most frequent training
    category) and `chance_micro_f1` (every category with training frequency > 0.5, for everyone).
    """
    config = config or ProbeConfig()
    torch.manual_seed(config.seed)
    train, test = probe_split(len(embeddings), config)
    x = _standardize(embeddings, train)  # (U, e)
    y = torch.as_tensor(np.asarray(labels, dtype=np.float32))  # (U, C)
    probe = nn.Linear(x.shape[1], y.shape[1])
    optimizer = torch.optim.Adam(probe.parameters(), lr=0.05, weight_decay=config.weight_decay)
    for _ in range(config.category_steps):
        optimizer.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(probe(x[train]), y[train])
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        logits = probe(x[test])  # (U_test, C)
    truth = y[test].bool()
    top1 = truth.gather(1, logits.argmax(1, keepdim=True)).float().mean()
    frequency = y[train].mean(0)  # (C,) training prior
    most_frequent = int(frequency.argmax())
    micro, per_category = _micro_f1(logits > 0, truth)
    prior = (frequency > 0.5)[None, :].expand_as(truth)
    chance_micro, _ = _micro_f1(prior, truth)
    present = truth.any(0)
    aucs = [binary_auc(logits[:, c], truth[:, c]) for c in range(truth.shape[1])]
    aucs = [a for a in aucs if not math.isnan(a)]
    return {
        "top1_accuracy": float(top1),
        "micro_f1": micro,
        "macro_f1": float(per_category[present].mean()) if present.any() else math.nan,
        "macro_auc": float(np.mean(aucs)) if aucs else math.nan,
        "chance_top1": float(truth[:, most_frequent].float().mean()),
        "chance_micro_f1": chance_micro,
        "num_test_users": len(test),
    }


class TitleVocabulary:
    """Word-level vocabulary from training titles (lower-cased, whitespace split)."""

    PAD, BOS, EOS, UNK = 0, 1, 2, 3

    def __init__(self, titles: list[str], max_size: int = 5000) -> None:
        counts = Counter(word for title in titles for word in title.lower().split())
        self.words = ["<pad>", "<bos>", "<eos>", "<unk>"] + [
            w for w, _ in counts.most_common(max_size)
        ]
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, titles: list[str], max_words: int) -> torch.Tensor:
        """(U, max_words + 2) ids: `<bos> w_1 .. w_n <eos>` right-padded with `<pad>`."""
        out = torch.full((len(titles), max_words + 2), self.PAD, dtype=torch.long)
        for row, title in enumerate(titles):
            ids = [self.index.get(w, self.UNK) for w in title.lower().split()[:max_words]]
            seq = [self.BOS, *ids, self.EOS]
            out[row, : len(seq)] = torch.tensor(seq)
        return out


class TitleDecoder(nn.Module):
    """A one-layer GRU whose initial state is `tanh(W e_u)`: it reads the title from `e_u` alone."""

    def __init__(self, embedding_dim: int, vocab_size: int, hidden: int = 96) -> None:
        super().__init__()
        self.init_state = nn.Linear(embedding_dim, hidden)
        self.words = nn.Embedding(vocab_size, 64, padding_idx=TitleVocabulary.PAD)
        self.gru = nn.GRU(64, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab_size)

    def forward(self, embeddings: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """`embeddings (B, e)`, `tokens (B, T)` -> next-word logits (B, T, vocab)."""
        return self.out(self.states(embeddings, tokens))

    def states(self, embeddings: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The GRU's states (B, T, H) after each of `tokens`, started from `tanh(W e_u)`."""
        h0 = torch.tanh(self.init_state(embeddings)).unsqueeze(0)  # (1, B, H)
        return self.gru(self.words(tokens), h0)[0]


def title_nll(decoder: TitleDecoder, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean next-word negative log-likelihood over the non-pad targets (the vocabulary's logits
    are computed at those positions alone)."""
    target = tokens[:, 1:]
    real = target != TitleVocabulary.PAD
    states = decoder.states(x, tokens[:, :-1])[real]  # (R, H)
    return nn.functional.cross_entropy(decoder.out(states), target[real])


def word_log_probs(
    decoder: TitleDecoder, states: torch.Tensor, words: torch.Tensor, rows: int = 1024
) -> torch.Tensor:
    """`log p(words[r] | states[r])` (R,), `rows` states at a time: each block's (rows, vocab)
    logits stay small enough to be read back from cache by the log-sum-exp."""
    out = torch.empty(len(states))
    for r0 in range(0, len(states), rows):
        block = slice(r0, r0 + rows)
        logits = decoder.out(states[block])  # (rows, vocab)
        picked = logits.gather(1, words[block, None]).squeeze(1)
        out[block] = picked - torch.logsumexp(logits, dim=1)
    return out


def _fit_title_decoder(
    x: torch.Tensor, tokens: torch.Tensor, vocab_size: int, config: ProbeConfig
) -> TitleDecoder:
    """Adam on teacher-forced NLL; keeps the epoch with the best NLL on 10% of the training
    users (early stopping), so an uninformative `E` cannot overfit below the unconditional floor."""
    torch.manual_seed(config.seed)
    decoder = TitleDecoder(x.shape[1], vocab_size)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(x), generator=generator)
    cut = max(1, len(x) // 10)
    held, fit = order[:cut], order[cut:]
    best_nll, best_state = math.inf, copy.deepcopy(decoder.state_dict())
    for _ in range(config.title_epochs):
        decoder.train()
        for batch in fit[torch.randperm(len(fit), generator=generator)].split(128):
            optimizer.zero_grad()
            title_nll(decoder, x[batch], tokens[batch]).backward()
            optimizer.step()
        decoder.eval()
        with torch.no_grad():
            nll = float(title_nll(decoder, x[held], tokens[held]))
        if nll < best_nll:
            best_nll, best_state = nll, copy.deepcopy(decoder.state_dict())
    decoder.load_state_dict(best_state)
    return decoder


def _score_title_decoder(
    decoder: TitleDecoder, x: torch.Tensor, tokens: torch.Tensor
) -> tuple[float, float]:
    """(token accuracy, perplexity = exp(mean NLL)) over the non-pad next-word targets."""
    decoder.eval()
    with torch.no_grad():
        logits = decoder(x, tokens[:, :-1])  # (U, T, vocab)
    target = tokens[:, 1:]
    real = target != TitleVocabulary.PAD
    nll = nn.functional.cross_entropy(logits[real], target[real])
    accuracy = (logits.argmax(-1)[real] == target[real]).float().mean()
    return float(accuracy), float(nll.exp())


def title_log_likelihoods(
    decoder: TitleDecoder, x: torch.Tensor, tokens: torch.Tensor, pairs: int = 1024
) -> torch.Tensor:
    """`L (V, U)`: log-likelihood of title v (`tokens[v]`, summed over its words and `<eos>`)
    under the decoder started from user u's embedding `x[u]`, about `pairs` pairs at a time."""
    decoder.eval()
    users = len(x)
    target = tokens[:, 1:]  # (V, T)
    real = target != TitleVocabulary.PAD
    out = torch.empty(len(tokens), users)
    per_batch = max(1, pairs // max(1, users))  # titles per batch
    with torch.no_grad():
        h0 = torch.tanh(decoder.init_state(x))  # (U, H)
        words = decoder.words(tokens[:, :-1])  # (V, T, 64)
        for v0 in range(0, len(tokens), per_batch):
            rows = slice(v0, min(len(tokens), v0 + per_batch))
            n = rows.stop - rows.start
            # pair (v, u) sits at v·U + u: each title repeated for every user
            states, _ = decoder.gru(
                words[rows].repeat_interleave(users, 0), h0.repeat(n, 1).unsqueeze(0)
            )  # (n·U, T, H)
            keep = real[rows].repeat_interleave(users, 0)  # (n·U, T): the title's own words
            logp = word_log_probs(
                decoder, states[keep], target[rows].repeat_interleave(users, 0)[keep]
            )
            pair = torch.arange(n * users).repeat_interleave(keep.sum(1))  # each word's pair
            out[rows] = torch.zeros(n * users).index_add_(0, pair, logp).view(n, users)
    return out


def title_probe(
    embeddings: np.ndarray, titles: list[str], config: ProbeConfig | None = None
) -> dict[str, float]:
    """Reconstruct each target's title words from the frozen `E` with a small GRU decoder.

    `retrieval_auc` (chance exactly 0.5): for each held-out title, the share of the other held-out
    users (those whose target has another title) under whose embedding the title is less likely
    than under its own user's. Comparing users on the same title cancels the title's prior
    (length, word frequency), which dominates its likelihood. Also reported: held-out
    `token_accuracy` and `perplexity` (over title words and `<eos>`; words never seen in training
    titles count as `<unk>`). Those two are no evidence on their own: on ml-100k (~440 fit users)
    a decoder fed zeros scored between 160 and 270 perplexity depending only on its initialization.
    """
    config = config or ProbeConfig()
    train, test = probe_split(len(embeddings), config)
    vocab = TitleVocabulary([titles[i] for i in train])
    tokens = vocab.encode(titles, config.max_title_words)  # (U, T)
    x = _standardize(embeddings, train)  # (U, e)
    decoder = _fit_title_decoder(x[train], tokens[train], len(vocab), config)
    accuracy, perplexity = _score_title_decoder(decoder, x[test], tokens[test])
    held_titles = [titles[i] for i in test]
    same = torch.tensor([[a == b for b in held_titles] for a in held_titles])
    likelihood = title_log_likelihoods(decoder, x[test], tokens[test])  # (V, U)
    return {
        "retrieval_auc": own_vs_others_auc(likelihood, exclude=same),
        "token_accuracy": accuracy,
        "perplexity": perplexity,
        "vocab_size": len(vocab),
        "num_test_users": len(test),
    }


def own_vs_others_auc(scores: torch.Tensor, exclude: torch.Tensor | None = None) -> float:
    """Mean over rows u of P(scores[u, v] < scores[u, u]) over the other columns v (ties 1/2).

    `exclude (U, U)` (symmetric) drops pairs that are no negatives, e.g. two users with the same
    target. When `scores[u, v] = c_v` does not depend on u (a constant embedding), summed over all
    ordered pairs the wins and half-ties count each unordered pair exactly once: exactly 1/2.
    """
    num_users = len(scores)
    if num_users < 2:
        return math.nan
    own = scores.diagonal()[:, None]  # (U, 1)
    other = ~torch.eye(num_users, dtype=torch.bool)
    if exclude is not None:
        other &= ~exclude
    if not other.any():
        return math.nan
    wins = ((scores < own).double() + 0.5 * (scores == own).double()) * other
    return float(wins.sum() / other.sum())


def retrieval_auc(predicted: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean over users u of P(cos(p_u, f_v) < cos(p_u, f_u)) over the other users v (ties 1/2):
    each user's own target text ranked against the other users' (see `own_vs_others_auc`)."""
    if len(predicted) < 2:
        return math.nan
    scores = nn.functional.normalize(predicted, dim=1) @ nn.functional.normalize(truth, dim=1).T
    return own_vs_others_auc(scores)


def text_alignment(
    embeddings: np.ndarray,
    target_features: np.ndarray,
    config: ProbeConfig | None = None,
    fit_map: bool = True,
) -> dict[str, float]:
    """How well `E` predicts the target items' text features `F (U, f)`, on held-out users.

    `F` is centered on the training users' mean first (so the shared direction of all texts
    counts for nothing). With `fit_map`, `W = argmin ||X W - F_c||² + λ||W||²` on train users
    (ridge, λ = `weight_decay · U_train`, X = standardized `E`, both sides zero-mean so no bias);
    without it `E` (centered) is compared directly and must share `F`'s dimension. Scores:
    `cosine`, the mean centered cosine `cos(x_u W, f_u - mean)` (0 = chance: a constant `E`
    predicts the zero vector), and `retrieval_auc` (see `retrieval_auc`; 0.5 = chance).
    """
    config = config or ProbeConfig()
    train, test = probe_split(len(embeddings), config)
    f = torch.as_tensor(np.asarray(target_features, dtype=np.float64))
    f = f - f[train].mean(0)
    if fit_map:
        x = _standardize(embeddings, train).double()
        gram = x[train].T @ x[train]
        ridge = config.weight_decay * len(train) * torch.eye(gram.shape[0], dtype=gram.dtype)
        mapping = torch.linalg.solve(gram + ridge, x[train].T @ f[train])  # (e, f)
        predicted = x[test] @ mapping
    else:
        e = torch.as_tensor(np.asarray(embeddings, dtype=np.float64))
        if e.shape[1] != f.shape[1]:
            raise ValueError(
                f"target_features: dim {f.shape[1]} differs from the embeddings' {e.shape[1]}; "
                "use fit_map=True"
            )
        predicted = (e - e[train].mean(0))[test]
    cosine = nn.functional.cosine_similarity(predicted, f[test], dim=1)
    return {
        "cosine": float(cosine.mean()),
        "retrieval_auc": retrieval_auc(predicted, f[test]),
        "num_test_users": len(test),
    }


def category_matrix(categories: list[list[str]]) -> tuple[np.ndarray, list[str]]:
    """Multi-hot `(U, C)` float32 labels and the category names (sorted) from per-user lists."""
    names = sorted({c for cats in categories for c in cats})
    index = {c: i for i, c in enumerate(names)}
    labels = np.zeros((len(categories), len(names)), dtype=np.float32)
    for row, cats in enumerate(categories):
        labels[row, [index[c] for c in cats]] = 1.0
    return labels, names


def semantic_fidelity(
    embeddings: np.ndarray,
    target_categories: list[list[str]] | None = None,
    target_titles: list[str] | None = None,
    target_features: np.ndarray | None = None,
    config: ProbeConfig | None = None,
) -> dict[str, dict[str, float]]:
    """Every probe whose targets are given, keyed `category`, `title`, `text_alignment`."""
    out: dict[str, dict[str, float]] = {}
    with single_thread():
        if target_categories is not None:
            labels, _ = category_matrix(target_categories)
            if labels.shape[1] > 0:
                out["category"] = category_probe(embeddings, labels, config)
        if target_titles is not None:
            out["title"] = title_probe(embeddings, target_titles, config)
        if target_features is not None:
            out["text_alignment"] = text_alignment(embeddings, target_features, config)
    return out
