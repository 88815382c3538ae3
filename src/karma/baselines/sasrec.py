"""SASRec+ : an ID-based causal transformer trained with full softmax over the catalog.

Kang & McAuley (2018) train SASRec with one sampled negative and binary cross-entropy; Klenitskiy
& Vasilev (RecSys 2023, "Turning Dross Into Gold Loss: is BERT4Rec really better than SASRec?")
show that cross-entropy over *all* items makes it much stronger. That is what we train: at every
position t the hidden state predicts item t+1 against the whole catalog, with the input and output
item embeddings tied, so the retriever is `user = h_last`, `item = E[item]`, score = dot product.

Evaluation rows are right-padded, so with a causal mask a real position never attends to padding;
training packs several windows into each row (`packed_windows`), each attending only to itself.
Item index i (dataset row) is embedding row i + 1; row 0 is padding.

On a new-item (cold) split the cold items get logit -inf in the training softmax: they are never
negatives, so their embeddings keep their seeded initial values, which is all an ID model can
score a never-seen item with.

Text-based variant (`item_features`: the UniSRec / RecFormer family at its simplest): the item
embedding is a learned projection of frozen content features (e.g. MiniLM over the item text),
shared by every item, so a new item is embedded from its text like any other; with
`item_residual_ratio` each trained item also gets a bounded residual (the semantic-anchored tower,
`karma.model.anchored`). The feature matrix is saved with the weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from karma.config import load_config, save_config
from karma.data.dataset import Examples, PreparedDataset
from karma.errors import KarmaError
from karma.eval.metrics import hit_rate, ndcg
from karma.eval.ranking import rank_targets
from karma.model.anchored import BoundedResidual
from karma.objectives.base import LossOutput, Stage
from karma.objectives.full_softmax import full_softmax_cross_entropy

PAD = 0
WEIGHTS_FILE = "sasrec.safetensors"
CONFIG_FILE = "sasrec.yaml"


@dataclass
class SASRecConfig:
    """Model size and training schedule of the SASRec+ baseline."""

    hidden: int = 64
    """Width of item / position embeddings and of the transformer."""
    num_blocks: int = 2
    """Number of causal transformer blocks."""
    num_heads: int = 1
    """Attention heads per block (must divide hidden)."""
    max_len: int = 200
    """Longest history read (older items are dropped); also the number of positions."""
    dropout: float = 0.3
    """Dropout on embeddings, attention and feed-forward outputs."""
    lr: float = 1e-3
    """Adam learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    batch_size: int = 128
    """Users (sequences) per batch."""
    epochs: int = 200
    """Maximum number of passes over the training sequences."""
    patience: int = 10
    """Stop after this many validations without a better valid NDCG@10 (0 = never stop early)."""
    windows: Literal["all", "last"] = "all"
    """Training windows per user and epoch: `all` cuts each history into windows of max_len + 1
    clicks so that every next-item step is trained once an epoch; `last` keeps only the most
    recent window (older clicks of a history longer than max_len are never trained; the data
    loader of the published SASRec+ code)."""
    seed: int = 0
    """Seed for initialisation and batch order."""
    item_features: str | None = None
    """Embed items as a learned projection of these frozen dataset features (e.g. minilm) instead
    of free ID vectors: the text-based sequential baseline; None = ID embeddings."""
    item_residual_ratio: float | None = None
    """With item_features: a per-item residual bounded to this fraction of the projected
    feature's norm, zero for items never trained (the semantic-anchored tower); None = off."""
    item_residual_dropout: float = 0.0
    """With item_residual_ratio: in training, zero each item's residual with this probability, one
    draw per item per pass (a step's input and output item vectors draw separately; DropoutNet-style:
    it learns to rank items shown as their anchor, as new items are)."""
    device: str = "auto"
    """`auto` (cuda if available), `cpu` or `cuda`."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """Training arithmetic: `fp32`, or `bf16` (mixed precision: bf16 autocast over the transformer
    and bf16 operands for the full-softmax matmuls, the softmax and its sums in fp32): ~1.9x an
    ml-1m epoch on a CPU with AVX512-BF16 (docs/benchmarks.md), slower on one without; evaluation
    and serving stay fp32."""

    def __post_init__(self) -> None:
        for name in ("hidden", "num_blocks", "num_heads", "max_len", "batch_size", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide hidden ({self.hidden})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0, got {self.patience}")
        if self.item_residual_ratio is not None and (
            self.item_features is None or self.item_residual_ratio <= 0
        ):
            raise ValueError(
                "item_residual_ratio needs item_features and must be > 0, got "
                f"{self.item_residual_ratio} with item_features={self.item_features!r}"
            )
        if not 0.0 <= self.item_residual_dropout < 1.0 or (
            self.item_residual_dropout > 0 and self.item_residual_ratio is None
        ):
            raise ValueError(
                "item_residual_dropout needs item_residual_ratio and must be in [0, 1), got "
                f"{self.item_residual_dropout} with item_residual_ratio={self.item_residual_ratio!r}"
            )
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.windows not in ("all", "last"):
            raise ValueError(f"windows must be all or last, got {self.windows!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, got {self.precision!r}")

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


class SASRec(nn.Module):
    """Causal transformer over item ids; `forward` gives one hidden state per position."""

    def __init__(
        self,
        num_items: int,
        config: SASRecConfig,
        features: torch.Tensor | None = None,
        trained: torch.Tensor | None = None,
    ) -> None:
        """`features` (N, f): frozen item features (needed with `config.item_features`);
        `trained` (N,) bool: items the anchored residual may move (None = all)."""
        super().__init__()
        self.config = config
        self.item_projection: nn.Linear | None = None
        self.item_residual: BoundedResidual | None = None
        if config.item_features is not None:
            if features is None or features.shape[0] != num_items:
                got = None if features is None else tuple(features.shape)
                raise KarmaError(f"item_features: need a ({num_items}, f) matrix, got {got}")
            self.register_buffer("item_features", features.detach().float().clone())
            self.item_projection = nn.Linear(features.shape[1], config.hidden)
            if config.item_residual_ratio is not None:
                self.item_residual = BoundedResidual(
                    num_items,
                    config.hidden,
                    config.item_residual_ratio,
                    trained,
                    config.item_residual_dropout,
                )
        # Free ID vectors, or none when the items are embedded from their features.
        self.item_embedding = (
            nn.Embedding(num_items + 1, config.hidden, padding_idx=PAD)
            if self.item_projection is None
            else None
        )
        self.position_embedding = nn.Embedding(config.max_len, config.hidden)
        block = nn.TransformerEncoderLayer(
            d_model=config.hidden,
            nhead=config.num_heads,
            dim_feedforward=config.hidden,
            dropout=config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        # The layers hold the weights (their names are the checkpoint format); `forward` runs
        # them through `transformer_block`, the same maths with cheaper dropout.
        self.blocks = nn.TransformerEncoder(block, config.num_blocks, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(config.hidden)
        nn.init.normal_(self.position_embedding.weight, std=0.02)
        if self.item_embedding is not None:
            nn.init.normal_(self.item_embedding.weight, std=config.hidden**-0.5)
            with torch.no_grad():
                self.item_embedding.weight[PAD].zero_()

    def forward(
        self,
        items: torch.Tensor,
        positions: torch.Tensor | None = None,
        segments: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """items (B, T) embedding rows (0 = padding) -> hidden (B, T, D).

        By default each row is one right-padded sequence. A packed row holds several: then
        `positions` (B, T) is each token's index in its own sequence and `segments` (B, T) which
        sequence it belongs to; a token attends only to earlier tokens of its own segment, so every
        sequence's hidden states are exactly those it would get alone in a row.
        """
        length = items.shape[1]
        if positions is None:
            positions = torch.arange(length, device=items.device)[None, :]  # (1, T)
        x = self.embed_items(items) * self.config.hidden**0.5 + self.position_embedding(positions)
        p, training = self.config.dropout, self.training
        x = dropout(x, p, training)  # (B, T, D)
        attention_bias = None  # None: plain causal
        if segments is not None:
            # -inf = may not attend: later tokens and other sequences' tokens of a packed row.
            blocked = torch.triu(
                torch.ones(length, length, dtype=torch.bool, device=items.device), diagonal=1
            ) | (segments[:, :, None] != segments[:, None, :])  # (B, T, T)
            attention_bias = torch.zeros(
                blocked.shape, dtype=compute_dtype(x), device=items.device
            ).masked_fill_(blocked, float("-inf"))[:, None]  # (B, 1, T, T)
        for layer in self.blocks.layers:
            x = transformer_block(layer, x, attention_bias, p, training)
        return self.final_norm(x)  # (B, T, D)

    def embed_items(self, items: torch.Tensor) -> torch.Tensor:
        """(B, T) embedding rows -> (B, T, D) input item vectors (padding -> zeros)."""
        if self.item_embedding is not None:
            return self.item_embedding(items)  # padding_idx keeps row 0 at zero
        return self.item_rows()[items]

    def item_rows(self) -> torch.Tensor:
        """(N + 1, D) item embedding rows, row 0 = padding (zeros)."""
        if self.item_embedding is not None:
            return self.item_embedding.weight
        assert self.item_projection is not None
        anchors = self.item_projection(self.item_features)  # (N, D)
        if self.item_residual is not None:
            index = torch.arange(anchors.shape[0], device=anchors.device)
            anchors = self.item_residual(anchors, index)
        return torch.cat([anchors.new_zeros(1, anchors.shape[1]), anchors])

    def catalog_embeddings(self) -> torch.Tensor:
        """(N, D): output item embeddings, tied with the input ones (padding row dropped)."""
        return self.item_rows()[1:]


DROP_LEVELS = 1 << 16
"""Dropout compares 16-bit random integers: a rate is kept to within 2^-17."""


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout, as `F.dropout`, with 16 random bits an element instead of a float.

    Each element is dropped with probability k / 2^16, k = round(p · 2^16) (p to within 2^-17),
    and a kept one is scaled by 2^16 / (2^16 - k), so E[output] = x exactly. The bits are one
    full-range int64 draw per four elements: SASRec+ drops ~13 M activations and attention weights
    a batch, and on a CPU this mask costs a third of `torch.rand_like`'s and a quarter of
    `F.dropout`'s `bernoulli_` (`benchmarks/sasrec_epoch.py`).
    """
    if not training or p == 0.0:
        return x
    dropped = min(round(p * DROP_LEVELS), DROP_LEVELS - 1)
    words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64, device=x.device)
    bits = words.random_(-(2**63), None).view(torch.int16)[: x.numel()].view(x.shape)
    # bits are uniform on [-2^15, 2^15): keep the top 2^16 - k of them
    keep = bits.ge(dropped - DROP_LEVELS // 2).to(x.dtype)
    return x * keep.mul_(DROP_LEVELS / (DROP_LEVELS - dropped))


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype matmuls on `x` run in: autocast's where it is on (an additive attention mask
    built in it is not cast again by every layer), else x's."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def transformer_block(
    layer: nn.TransformerEncoderLayer,
    x: torch.Tensor,
    attention_bias: torch.Tensor | None,
    p: float,
    training: bool,
) -> torch.Tensor:
    """`layer`'s pre-norm block (norm_first=True, GELU) on its own weights, x (B, T, D) -> (B, T, D).

    The maths of `nn.TransformerEncoderLayer.forward`, written out so that attention dropout uses
    `dropout` above and evaluation uses `F.scaled_dot_product_attention` with `is_causal` (the CPU
    flash kernel skips the masked half). attention_bias (B, 1, T, T) additive (-inf = blocked), or
    None for plain causal attention.
    """
    attn = layer.self_attn
    batch, length, width = x.shape
    heads = attn.num_heads
    h = layer.norm1(x)
    qkv = F.linear(h, attn.in_proj_weight, attn.in_proj_bias)  # (B, T, 3D)
    q, k, v = qkv.view(batch, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
    if training:  # (B, H, T, Dh) each; attention weights written out to drop some
        if attention_bias is None:  # (T, T), broadcast over the batch by baddbmm
            bias = torch.zeros(length, length, dtype=compute_dtype(x), device=x.device)
            bias.masked_fill_(
                torch.ones(length, length, dtype=torch.bool, device=x.device).triu_(1),
                float("-inf"),
            )
        else:  # (B, 1, T, T) -> (B·H, T, T): a view for one head, a copy for several
            bias = attention_bias.expand(batch, heads, length, length).reshape(-1, length, length)
        # bias + (q / sqrt(Dh)) k^T as one batched matmul: no separate scale and add passes.
        scores = torch.baddbmm(
            bias,
            (q * (width // heads) ** -0.5).reshape(-1, length, width // heads),
            k.reshape(-1, length, width // heads).transpose(1, 2),
        ).view(batch, heads, length, length)  # (B, H, T, T)
        h = dropout(scores.softmax(dim=-1), p, training) @ v  # (B, H, T, Dh)
    else:
        h = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attention_bias, is_causal=attention_bias is None
        )
    h = attn.out_proj(h.transpose(1, 2).reshape(batch, length, width))  # (B, T, D)
    x = x + dropout(h, p, training)
    h = layer.linear2(dropout(F.gelu(layer.linear1(layer.norm2(x))), p, training))
    return x + dropout(h, p, training)


def right_padded(histories: list[np.ndarray], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Last `max_len` items of each history as embedding rows (B, T), and each length (B,)."""
    recent = [np.asarray(h, dtype=np.int64)[-max_len:] for h in histories]
    width = max(1, max((len(r) for r in recent), default=1))
    batch = np.zeros((len(recent), width), dtype=np.int64)
    for row, items in enumerate(recent):
        batch[row, : len(items)] = items + 1
    lengths = np.array([len(r) for r in recent], dtype=np.int64)
    return torch.from_numpy(batch), torch.from_numpy(lengths)


def packed_windows(
    windows: list[np.ndarray], max_len: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pack next-item steps of `windows` (each <= max_len + 1 clicks) into rows of max_len tokens.

    Returns inputs and labels (R, T) as embedding rows (0 = padding / no loss), positions (R, T)
    (index within the window) and segments (R, T) (which window of the row; -1 = padding). Windows
    are placed longest first into the first row with room (first-fit decreasing), so a batch of
    windows averaging ~55% of max_len needs ~55% of the rows right padding would: the transformer
    no longer runs over padding that carries no target.
    """
    windows = [np.asarray(w, dtype=np.int64)[-(max_len + 1) :] for w in windows]
    steps = [len(w) - 1 for w in windows]
    order = sorted(range(len(windows)), key=lambda i: -steps[i])
    room: list[int] = []  # free tokens left in each row
    placed: list[tuple[int, int, int]] = []  # (window, row, offset)
    for index in order:
        need = steps[index]
        if need < 1:
            continue
        row = next((r for r, free in enumerate(room) if free >= need), len(room))
        if row == len(room):
            room.append(max_len)
        placed.append((index, row, max_len - room[row]))
        room[row] -= need
    rows = max(1, len(room))
    width = max(1, max((max_len - free for free in room), default=1))
    inputs = np.zeros((rows, width), dtype=np.int64)
    labels = np.zeros((rows, width), dtype=np.int64)
    positions = np.zeros((rows, width), dtype=np.int64)
    segments = np.full((rows, width), -1, dtype=np.int64)
    for index, row, offset in placed:
        window = windows[index]
        span = slice(offset, offset + steps[index])
        inputs[row, span] = window[:-1] + 1
        labels[row, span] = window[1:] + 1
        positions[row, span] = np.arange(steps[index])
        segments[row, span] = index
    return (
        torch.from_numpy(inputs),
        torch.from_numpy(labels),
        torch.from_numpy(positions),
        torch.from_numpy(segments),
    )


def training_windows(
    sequences: list[np.ndarray], max_len: int, last_only: bool = False
) -> list[np.ndarray]:
    """Cut each sequence into windows of at most max_len + 1 clicks, from the end backwards.

    Consecutive windows overlap by one click, so every next-item step of a long history is
    trained exactly once (a window of n clicks teaches n - 1 steps) instead of only the last
    max_len; the most recent window keeps the full context. `last_only`: that most recent window
    alone (sequences of one click, which teach nothing, are dropped either way).
    """
    if last_only:
        return [seq[-(max_len + 1) :] for seq in sequences if len(seq) > 1]
    windows = []
    for seq in sequences:
        stop = len(seq)
        while stop > 1:
            start = max(0, stop - (max_len + 1))
            windows.append(seq[start:stop])
            stop = start + 1
    return windows


class SASRecRetriever:
    """A trained `SASRec` as a dot-product retriever: user = hidden state after the last item."""

    name = "sasrec"

    def __init__(self, model: SASRec, batch_size: int = 256) -> None:
        self.model = model
        self.batch_size = batch_size

    def item_vectors(self) -> np.ndarray:
        return self.model.catalog_embeddings().detach().float().cpu().numpy()  # (N, D)

    @torch.no_grad()
    def user_vectors(self, examples: Examples) -> np.ndarray:
        was_training = self.model.training
        self.model.eval()
        device = next(self.model.parameters()).device
        max_len = self.model.config.max_len
        out = np.zeros((len(examples), self.model.config.hidden), dtype=np.float32)  # (U, D)
        # Users in order of history length, so each batch is padded to its own longest history
        # rather than nearly always to max_len.
        order = np.argsort([-min(len(h), max_len) for h in examples.histories], kind="stable")
        for start in range(0, len(order), self.batch_size):
            chosen = order[start : start + self.batch_size]
            items, lengths = right_padded([examples.histories[i] for i in chosen], max_len)
            hidden = self.model(items.to(device))  # (B, T, D)
            last = (lengths - 1).clamp(min=0).to(device)
            users = hidden[torch.arange(len(chosen), device=device), last]  # (B, D)
            users[lengths.to(device) == 0] = 0.0  # no history: no preference
            out[chosen] = users.float().cpu().numpy()
        self.model.train(was_training)
        return out

    def save(self, directory: str | Path) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_FILE))
        save_config(self.model.config, directory / CONFIG_FILE)

    @classmethod
    def load(cls, directory: str | Path, num_items: int) -> SASRecRetriever:
        from safetensors.torch import load_file

        directory = Path(directory)
        if not (directory / WEIGHTS_FILE).is_file():
            raise KarmaError(
                f"{directory / WEIGHTS_FILE} is missing; train with `karma baseline sasrec`"
            )
        config = load_config(SASRecConfig, directory / CONFIG_FILE)
        state = load_file(str(directory / WEIGHTS_FILE))
        model = SASRec(num_items, config, features=state.get("item_features"))
        model.load_state_dict(state)
        model.eval()
        return cls(model)


@dataclass
class SASRecBatch:
    """Inputs (B, T) and next-item labels (B, T) as embedding rows; label 0 = no loss there.

    Packed rows (`packed_windows`) also carry each token's positions and segments (B, T).
    """

    inputs: torch.Tensor
    labels: torch.Tensor
    positions: torch.Tensor | None = None
    segments: torch.Tensor | None = None


def next_item_loss(
    model: SASRec, batch: SASRecBatch, untrainable: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean full-catalog softmax cross-entropy of every label; untrainable (N,) bool: never a
    candidate (logit -inf). With `precision: bf16` the logits' matmuls take bf16 operands (the
    caller runs the model under bf16 autocast, as the Trainer does)."""
    device = model.position_embedding.weight.device  # the Trainer may have moved it
    positions, segments = batch.positions, batch.segments
    hidden = model(
        batch.inputs.to(device),
        positions.to(device) if positions is not None else None,
        segments.to(device) if segments is not None else None,
    )  # (B, T, D)
    labels = batch.labels.to(device)
    real = labels != PAD
    # Logits only where a target is: the (M, N) softmax is most of the step's arithmetic.
    return full_softmax_cross_entropy(
        hidden[real],  # (M, D)
        model.catalog_embeddings(),  # (N, D)
        labels[real] - 1,  # (M,)
        untrainable.to(device) if untrainable is not None else None,
        matmul_dtype=torch.bfloat16 if model.config.precision == "bf16" else None,
    )


class SASRecTask:
    """SASRec+ as a `TrainTask` for the generic Trainer (`karma.runs.recipes.sasrec`)."""

    def __init__(self, dataset: PreparedDataset, config: SASRecConfig) -> None:
        self.dataset = dataset
        self.config = config
        self.device = config.torch_device()
        features = None
        if config.item_features is not None:
            features = torch.from_numpy(dataset.features(config.item_features)[1])
        torch.manual_seed(config.seed)
        self.model = SASRec(
            dataset.num_items,
            config,
            features=features,
            trained=torch.from_numpy(dataset.train_item_counts() > 0),
        ).to(self.device)
        self.sequences = training_windows(
            dataset.train_sequences(), config.max_len, last_only=config.windows == "last"
        )
        if not self.sequences:
            raise KarmaError(
                f"{dataset.root}: no user has two training clicks; SASRec cannot train"
            )
        self.valid_examples = dataset.examples("valid")
        trainable = dataset.trainable_items
        # (N,) bool, True = cold item (never a candidate in training); None when there is none.
        self.untrainable = (
            torch.as_tensor(~trainable, device=self.device) if not trainable.all() else None
        )

    def num_batches(self, epoch: int) -> int:
        return -(-len(self.sequences) // self.config.batch_size)

    def batches(self, epoch: int) -> Iterator[SASRecBatch]:
        order = np.random.default_rng(self.config.seed + epoch).permutation(len(self.sequences))
        for start in range(0, len(order), self.config.batch_size):
            chosen = [self.sequences[i] for i in order[start : start + self.config.batch_size]]
            yield SASRecBatch(*packed_windows(chosen, self.config.max_len))

    def loss_step(self, batch: SASRecBatch, stage: Stage) -> LossOutput:
        """Full-catalog softmax cross-entropy of the next item at every real position."""
        loss = next_item_loss(self.model, batch, self.untrainable)
        return LossOutput(loss, {"ce": float(loss.detach())})

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Full-ranking HR@10 / NDCG@10 on the validation split, history masked."""
        examples = self.valid_examples
        if len(examples) == 0:
            return {"ndcg@10": float("nan"), "hr@10": float("nan")}
        retriever = SASRecRetriever(self.model)
        ranks = rank_targets(
            retriever.user_vectors(examples),
            retriever.item_vectors(),
            examples.targets,
            examples.histories,
        )
        return {
            "ndcg@10": float(ndcg(ranks, 10).mean()),
            "hr@10": float(hit_rate(ranks, 10).mean()),
        }
