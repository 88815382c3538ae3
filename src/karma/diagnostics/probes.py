"""Semantic fidelity of interest embeddings: how much of the target's meaning a probe recovers.

Every model's user-embedding matrix `E (U, e)` goes through the same three frozen-embedding probes,
each trained on a seeded split of users and scored on the held-out users:

- `category_probe`: multi-label logistic regression over the target item's categories;
- `title_probe`: a one-layer GRU decoder conditioned on `E` that reconstructs the target's title
  words (token accuracy, perplexity), next to the same decoder given no embedding (the floor);
- `text_alignment`: held-out cosine between a least-squares linear map of `E` and the target's
  text features (or `E` itself when the two share a space and `fit_map=False`).

Embeddings are standardized with train-split statistics so the probes' step sizes fit any model.
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

    def __post_init__(self) -> None:
        if not 0.0 < self.train_fraction < 1.0:
            raise ValueError(f"train_fraction: must be in (0, 1), got {self.train_fraction}")
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


def split_users(num_users: int, train_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded permutation cut into (train, held-out) user indices, both non-empty."""
    if num_users < 2:
        raise ValueError(f"num_users: need at least 2 users to hold some out, got {num_users}")
    order = np.random.default_rng(seed).permutation(num_users)
    cut = min(max(1, round(num_users * train_fraction)), num_users - 1)
    return np.sort(order[:cut]), np.sort(order[cut:])


def _standardize(embeddings: np.ndarray, train: np.ndarray) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
    mean, std = x[train].mean(0), x[train].std(0).clamp_min(1e-6)
    return (x - mean) / std


def category_probe(
    embeddings: np.ndarray, labels: np.ndarray, config: ProbeConfig | None = None
) -> dict[str, float]:
    """Logistic regression `σ(E W + b)` on multi-hot target categories `labels (U, C)`.

    Held-out scores: `top1_accuracy` (the highest-scoring category is one of the target's),
    `micro_f1` and `macro_f1` at threshold 0.5 (macro over categories present in the held-out
    users), and `chance_top1` (always guessing the most frequent training category).
    """
    config = config or ProbeConfig()
    torch.manual_seed(config.seed)
    train, test = split_users(len(embeddings), config.train_fraction, config.seed)
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
    most_frequent = int(y[train].sum(0).argmax())
    predicted = logits > 0
    tp = (predicted & truth).sum(0).float()  # (C,)
    fp = (predicted & ~truth).sum(0).float()
    fn = (~predicted & truth).sum(0).float()
    micro = 2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum()).clamp_min(1)
    present = truth.any(0)
    macro = (2 * tp / (2 * tp + fp + fn).clamp_min(1))[present].mean()
    return {
        "top1_accuracy": float(top1),
        "micro_f1": float(micro),
        "macro_f1": float(macro) if present.any() else math.nan,
        "chance_top1": float(truth[:, most_frequent].float().mean()),
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
        h0 = torch.tanh(self.init_state(embeddings)).unsqueeze(0)  # (1, B, H)
        states, _ = self.gru(self.words(tokens), h0)  # (B, T, H)
        return self.out(states)


def _title_nll(decoder: TitleDecoder, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean next-word negative log-likelihood over the non-pad targets."""
    logits = decoder(x, tokens[:, :-1])  # (B, T, vocab)
    target = tokens[:, 1:]
    return nn.functional.cross_entropy(
        logits.flatten(0, 1), target.flatten(), ignore_index=TitleVocabulary.PAD
    )


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
            _title_nll(decoder, x[batch], tokens[batch]).backward()
            optimizer.step()
        decoder.eval()
        with torch.no_grad():
            nll = float(_title_nll(decoder, x[held], tokens[held]))
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


def title_probe(
    embeddings: np.ndarray, titles: list[str], config: ProbeConfig | None = None
) -> dict[str, float]:
    """Reconstruct each target's title words from the frozen `E` with a small GRU decoder.

    Reports held-out `token_accuracy` and `perplexity` (over title words and `<eos>`; words never
    seen in training titles count as `<unk>`), and the same two for a decoder fitted with `E`
    replaced by zeros (`unconditional_*`): the gap is what `E` tells about the title.
    """
    config = config or ProbeConfig()
    train, test = split_users(len(embeddings), config.train_fraction, config.seed)
    vocab = TitleVocabulary([titles[i] for i in train])
    tokens = vocab.encode(titles, config.max_title_words)  # (U, T)
    x = _standardize(embeddings, train)  # (U, e)
    scores: dict[str, float] = {"vocab_size": len(vocab), "num_test_users": len(test)}
    for prefix, inputs in (("", x), ("unconditional_", torch.zeros_like(x))):
        decoder = _fit_title_decoder(inputs[train], tokens[train], len(vocab), config)
        accuracy, perplexity = _score_title_decoder(decoder, inputs[test], tokens[test])
        scores[f"{prefix}token_accuracy"] = accuracy
        scores[f"{prefix}perplexity"] = perplexity
    return scores


def text_alignment(
    embeddings: np.ndarray,
    target_features: np.ndarray,
    config: ProbeConfig | None = None,
    fit_map: bool = True,
) -> dict[str, float]:
    """Held-out mean cosine between `E` (mapped) and the target items' text features `F (U, f)`.

    With `fit_map`, `W = argmin ||[E 1] W - F||² + λ||W||²` on train users (ridge, λ =
    `weight_decay · U_train`) and the cosine is `cos([e_u 1] W, f_u)`; without it `E` and `F` must
    share a dimension and the cosine is direct. `mean_feature_cosine` is the floor: the cosine of
    the mean training feature vector with each held-out `f_u`.
    """
    config = config or ProbeConfig()
    train, test = split_users(len(embeddings), config.train_fraction, config.seed)
    e = torch.as_tensor(np.asarray(embeddings, dtype=np.float64))
    f = torch.as_tensor(np.asarray(target_features, dtype=np.float64))
    if fit_map:
        x = torch.cat([_standardize(embeddings, train).double(), torch.ones(len(e), 1)], dim=1)
        gram = x[train].T @ x[train]
        ridge = config.weight_decay * len(train) * torch.eye(gram.shape[0], dtype=gram.dtype)
        mapping = torch.linalg.solve(gram + ridge, x[train].T @ f[train])  # (e + 1, f)
        predicted = x[test] @ mapping
    else:
        if e.shape[1] != f.shape[1]:
            raise ValueError(
                f"target_features: dim {f.shape[1]} differs from the embeddings' {e.shape[1]}; "
                "use fit_map=True"
            )
        predicted = e[test]
    cosine = nn.functional.cosine_similarity(predicted, f[test], dim=1)
    floor = nn.functional.cosine_similarity(f[train].mean(0, keepdim=True), f[test], dim=1)
    return {
        "cosine": float(cosine.mean()),
        "mean_feature_cosine": float(floor.mean()),
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
