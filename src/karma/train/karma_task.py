"""The KARMA training task: batches of user histories, the loss step, validation, retriever.

Recommendation mode trains every prefix of a user's window in one causal pass: the window is the
user's last `max_history + 1` training clicks (or a window ending at a random click, with
`window: random`), inputs are its first `n` items and the target of item position t is item t+1.
Search mode has one target per sequence (its query describes that target): a random training click
t >= 1 of the user, with the preceding clicks as history and the click's query.
Batches are deterministic given `seed + epoch` (the Trainer relies on it to resume).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from karma.config import from_dict
from karma.data import schema
from karma.data.dataset import Examples, PreparedDataset
from karma.errors import ConfigError
from karma.eval.metrics import ranking_metrics
from karma.eval.ranking import rank_targets
from karma.model.config import ModelConfig
from karma.model.encoder import KarmaEncoder, encoder_from_config
from karma.model.sequence import length_groups
from karma.objectives.action import ActionConfig, ActionLoss
from karma.objectives.base import STAGES, LossOutput, Stage
from karma.objectives.knowledge import (
    KnowledgeConfig,
    KnowledgeObjectives,
    build_knowledge_objectives,
)
from karma.train.gradient_balance import GradientBalancer
from karma.train.knowledge_inputs import KnowledgeCatalog, build_knowledge_batch
from karma.train.task import StepInfo


@dataclass
class DataConfig:
    """Which prepared dataset, and how it is cut into training batches."""

    path: Path = Path("data/ml-100k")
    """Directory of a prepared dataset (`karma data prepare ... --out DIR`)."""
    mode: Literal["rec", "search"] = "rec"
    """rec = next-item recommendation from history; search = history + the target's query."""
    max_history: int = 50
    """Most recent history items fed to the LLM (one token each)."""
    batch_size: int = 32
    """Users per batch (rec mode trains every prefix of each user's window)."""
    window: Literal["last", "random"] = "last"
    """Training window per user and epoch: the last clicks, or a window ending at a random click."""
    valid_users: int = 0
    """Validate on the first N validation users only (0 = all); keeps CPU evaluation short."""
    eval_batch_size: int = 64
    """Users per forward pass during validation."""
    length_groups: int = 4
    """Training: run a batch's history pass as at most this many groups of users of similar
    history length (`karma.model.sequence.length_groups`), so short histories do not pad to the
    batch's longest. The same loss and gradients as one padded pass (1 = one pass)."""

    def __post_init__(self) -> None:
        if self.max_history < 1:
            raise ValueError(f"max_history: must be >= 1, got {self.max_history}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {self.batch_size}")
        if self.valid_users < 0:
            raise ValueError(f"valid_users: must be >= 0 (0 = all), got {self.valid_users}")
        if self.eval_batch_size < 1:
            raise ValueError(f"eval_batch_size: must be >= 1, got {self.eval_batch_size}")
        if self.length_groups < 1:
            raise ValueError(f"length_groups: must be >= 1, got {self.length_groups}")


@dataclass
class KarmaBatch:
    """One training batch (CPU, numpy); `loss_step` moves what it needs to the model's device."""

    histories: list[np.ndarray]  # B arrays (n_b,) int64 input items
    targets: np.ndarray  # rec: (B, n_max) int64 next item per position, -1 = padding; search: (B,)
    queries: list[str | None] | None  # B queries (search mode) or None
    hard_negatives: np.ndarray | None  # (B, H) int64 exposed-not-clicked items, -1 = padding
    seed: int  # seeds the negative sampler for this batch


def build_encoder(
    data: DataConfig, model: ModelConfig, dataset: PreparedDataset, seed: int
) -> KarmaEncoder:
    """The encoder a run config describes, over `dataset`'s catalog (backbone loaded, heads new).

    Seeded first, so the random `tiny` backbone and the new heads start from `seed`: the training
    task and the inference loader (`karma.runs`) build the same module.
    """
    features = dataset.features(model.encoder.features)[1] if model.encoder.features else None
    torch.manual_seed(seed)
    return encoder_from_config(
        model,
        dataset.item_texts(with_categories=model.encoder.item_text_categories),
        features=features,
        mode=data.mode,
        max_history=data.max_history,
        item_fields=dataset.item_text_fields() if model.encoder.item_text_fields else None,
        trained_items=dataset.train_item_counts() > 0,
    )


class KarmaModel(nn.Module):
    """Everything the trainer optimizes and checkpoints: the encoder and the objectives' parameters.

    Checkpoint keys start with `encoder.` (what inference loads) or with one of
    `TRAIN_ONLY_PREFIXES` (heads and tables only training uses).
    """

    ENCODER_PREFIX = "encoder."
    TRAIN_ONLY_PREFIXES = ("action.", "knowledge.", "knowledge_catalog.")

    def __init__(
        self,
        encoder: KarmaEncoder,
        action: ActionLoss,
        knowledge: KnowledgeObjectives | None = None,
        knowledge_catalog: KnowledgeCatalog | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.action = action
        # Knowledge objectives (g, the flow head) train and checkpoint with the rest; export keeps
        # only `encoder`. None when every knowledge weight is 0 (an action-only run).
        self.knowledge = knowledge
        self.knowledge_catalog = knowledge_catalog


class KarmaTask:
    """The KARMA `TrainTask`: continuous-token encoder + action (+ knowledge) objectives."""

    def __init__(
        self,
        data: DataConfig,
        model: ModelConfig,
        action: ActionConfig,
        knowledge: KnowledgeConfig | dict[str, Any] | None = None,
        seed: int = 0,
        dataset: PreparedDataset | None = None,
    ) -> None:
        self.data_config = data
        self.action_config = action
        if isinstance(knowledge, dict):
            knowledge = from_dict(KnowledgeConfig, knowledge, prefix="knowledge.")
        self.knowledge_config = knowledge or KnowledgeConfig()
        self.seed = seed
        self.dataset = dataset if dataset is not None else PreparedDataset(data.path)
        ds = self.dataset
        encoder = build_encoder(data, model, ds, seed)
        self.head_lr = model.encoder.head_lr
        self.model = KarmaModel(
            encoder,
            ActionLoss(action, ds.train_item_counts(), ds.trainable_items),
            *self._knowledge_modules(encoder),
        )
        self._users = self._training_users()
        self._valid: Examples | None = None
        self._step: StepInfo | None = None  # set by the Trainer before each optimizer step

    @property
    def encoder(self) -> KarmaEncoder:
        return self.model.encoder

    def _knowledge_modules(
        self, encoder: KarmaEncoder
    ) -> tuple[KnowledgeObjectives | None, KnowledgeCatalog | None]:
        """The knowledge objectives and their catalog tables; (None, None) when all weights are 0."""
        config = self.knowledge_config
        if not any(w > 0 for stage in STAGES for w in config.weights(stage).values()):
            return None, None
        features = self.dataset.features(config.feature_name)[1] if config.flow_weight > 0 else None
        # The knowledge targets are the item's own text: its composed fields when the encoder
        # composes them (a short title-only text would leave a description unused), else the
        # short text with categories.
        targets = (
            encoder.item_texts
            if encoder.config.item_text_fields
            else self.dataset.item_texts(with_categories=True)
        )
        catalog = KnowledgeCatalog(
            encoder.tokenizer,
            targets,
            config.target_text_tokens,
            features,
            config.standardize_features,
            self.dataset.trainable_items,
        )
        feature_dim = int(features.shape[1]) if features is not None else None
        objectives = build_knowledge_objectives(
            config, encoder.hidden_size, encoder.embedding_dim, feature_dim
        )
        return objectives, catalog

    # ----- data -----------------------------------------------------------------------------

    def _training_users(self) -> list[tuple[np.ndarray, list[str | None], np.ndarray]]:
        """(train clicks, their queries, exposures) of every user with at least two training clicks."""
        ds = self.dataset
        exposures: dict[str, np.ndarray] = {}
        if self.action_config.hard_negatives > 0:
            frame = ds.interactions
            frame = frame[(frame["event"] == schema.EXPOSURE) & (frame["split"] == "train")]
            for user_id, group in frame.groupby("user_id", sort=False):
                exposures[str(user_id)] = (
                    group["item_id"].astype(str).map(ds.item_index).dropna().to_numpy(np.int64)
                )
        users = []
        for seq in ds.sequences:
            train = seq.splits == "train"
            if train.sum() < 2:
                continue
            queries = [q for q, keep in zip(seq.queries, train) if keep]
            users.append(
                (seq.items[train], queries, exposures.get(seq.user_id, np.zeros(0, np.int64)))
            )
        if not users:
            raise ConfigError(f"data.path: {ds.root} has no user with two or more training clicks")
        return users

    def num_batches(self, epoch: int) -> int:
        return math.ceil(len(self._users) / self.data_config.batch_size)

    def batches(self, epoch: int) -> Iterator[KarmaBatch]:
        """Shuffled batches of users; deterministic given `seed + epoch`."""
        rng = np.random.default_rng(self.seed + epoch)
        order = rng.permutation(len(self._users))
        size = self.data_config.batch_size
        for start in range(0, len(order), size):
            rows = [self._users[i] for i in order[start : start + size]]
            yield self._make_batch(rows, rng, seed=int(rng.integers(2**31)))

    def _make_batch(self, rows: list[Any], rng: np.random.Generator, seed: int) -> KarmaBatch:
        cfg = self.data_config
        histories, targets, queries = [], [], []
        for items, item_queries, _ in rows:
            end = len(items) if cfg.window == "last" else int(rng.integers(2, len(items) + 1))
            if cfg.mode == "rec":
                window = items[max(0, end - cfg.max_history - 1) : end]  # (n + 1,)
                histories.append(window[:-1])
                targets.append(window[1:])
            else:
                t = int(rng.integers(1, end))  # the target click; its query describes it
                histories.append(items[max(0, t - cfg.max_history) : t])
                targets.append(items[t : t + 1])
                queries.append(item_queries[t])
        width = max(len(t) for t in targets)
        target_matrix = np.full((len(rows), width), -1, dtype=np.int64)
        for row, target in enumerate(targets):
            target_matrix[row, : len(target)] = target
        hard = None
        num_hard = self.action_config.hard_negatives
        if num_hard > 0:
            hard = np.full((len(rows), num_hard), -1, dtype=np.int64)
            for row, (_, _, exposed) in enumerate(rows):
                if len(exposed):
                    picked = rng.choice(exposed, size=min(num_hard, len(exposed)), replace=False)
                    hard[row, : len(picked)] = picked
        return KarmaBatch(
            histories=histories,
            targets=target_matrix if cfg.mode == "rec" else target_matrix[:, 0],
            queries=queries if cfg.mode == "search" else None,
            hard_negatives=hard,
            seed=seed,
        )

    # ----- loss -----------------------------------------------------------------------------

    def history_groups(self, batch: KarmaBatch) -> list[np.ndarray]:
        """The batch's rows as the groups of similar history length its history pass runs in
        (one backbone pass each; `data.length_groups`)."""
        lengths = self.encoder.history_lengths(batch.histories)
        return length_groups(lengths, self.data_config.length_groups)

    def interest_embeddings(
        self, batch: KarmaBatch
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training readout: (K, e) e_u, (K, d) hidden h and (K,) target ids, one row per target.

        Rec mode: K = number of (user, prefix) targets, read out at every item position; search
        mode: K = B, read out at [INTEREST]. The knowledge objectives reuse h and the targets.
        """
        enc = self.encoder
        parts, keys = [], []
        for rows in self.history_groups(batch):
            queries = [batch.queries[i] for i in rows] if batch.queries is not None else None
            layout = enc.layout([batch.histories[i] for i in rows], queries)
            hidden = enc.hidden_states(layout)  # (G, T, d)
            if self.data_config.mode == "rec":
                readout = enc.readout(layout, hidden, all_prefixes=True)  # (G, n_g, d)
                valid = batch.targets[rows, : readout.shape[1]] >= 0  # (G, n_g)
                parts.append(readout[torch.as_tensor(valid, device=hidden.device)])  # (K_g, d)
                row, position = np.nonzero(valid)
                keys.append(rows[row] * batch.targets.shape[1] + position)
            else:
                parts.append(enc.readout(layout, hidden))  # (G, d)
                keys.append(rows)
        # Back to the batch's order: row by row, each row's targets left to right.
        order = torch.as_tensor(np.argsort(np.concatenate(keys), kind="stable"))
        h = torch.cat(parts)[order.to(parts[0].device)]  # (K, d) or (B, d)
        targets = torch.as_tensor(batch.targets, device=h.device)
        target_ids = targets[targets >= 0] if self.data_config.mode == "rec" else targets
        return enc.interest_embeddings(h), h, target_ids

    def action_loss(
        self, batch: KarmaBatch, user_emb: torch.Tensor, target_ids: torch.Tensor
    ) -> LossOutput:
        """Sampled softmax of (K, e) interest embeddings against their (K,) targets."""
        action = self.model.action
        if self.action_config.negatives == "full":
            return action.full_softmax(user_emb, self.encoder.item_embeddings(), target_ids)
        device = user_emb.device
        generator = torch.Generator().manual_seed(batch.seed)
        sampled = action.sample_negatives(generator).to(device)  # (M,)
        hard = (
            torch.as_tensor(batch.hard_negatives, device=device)
            if batch.hard_negatives is not None
            else None
        )
        if hard is not None and self.data_config.mode == "rec":
            # One row of hard negatives per user, repeated for each of that user's prefixes.
            per_row = torch.as_tensor(batch.targets >= 0, device=device).sum(1)  # (B,)
            hard = hard.repeat_interleave(per_row, dim=0)  # (K, H)
        needed = [target_ids, sampled] + (
            [hard.clamp(min=0).reshape(-1)] if hard is not None else []
        )
        unique, inverse = torch.cat(needed).unique(return_inverse=True)
        item_emb = self.encoder.item_embeddings(unique)[inverse]  # each distinct item encoded once
        k, m = len(target_ids), len(sampled)
        return action(
            user_emb,
            item_emb[:k],
            target_ids,
            item_emb[k : k + m],
            sampled,
            item_emb[k + m :].reshape(k, -1, item_emb.shape[-1]) if hard is not None else None,
            hard,
        )

    def start_step(self, info: StepInfo) -> None:
        """The Trainer's next optimizer step: it sets the scheduled weights and the log steps."""
        self._step = info

    def stage_weights(self, stage: Stage) -> dict[str, float]:
        """The knowledge weights of `stage` at the current step (scheduled in the joint stage).

        Outside the Trainer (no `start_step` yet) the joint stage is taken at its step 0.
        """
        step = self._step if self._step is not None and self._step.stage == stage else None
        if stage == "warmup":
            return self.knowledge_config.weights(stage)
        if step is None:
            return self.knowledge_config.weights(stage, 0, 1)
        return self.knowledge_config.weights(stage, step.stage_step, step.stage_steps)

    def loss_step(self, batch: KarmaBatch, stage: Stage) -> LossOutput:
        """Total loss L = L_act + Σ λ·L_knowledge of the stage ("warmup" has no action term).

        The output's `terms` name the additive terms ("action", "generation", ...) for `backward`.
        """
        weights = self.stage_weights(stage)
        needs_readout = stage != "warmup" or any(
            weights[name] > 0 for name in ("generation", "reconstruction", "flow")
        )
        # Warm-up with only the item-text loss needs no pass over the histories.
        user_emb, target_ids = None, None
        if needs_readout:
            user_emb, _, target_ids = self.interest_embeddings(batch)
        parts: dict[str, float] = {}
        terms: dict[str, torch.Tensor] = {}
        total: torch.Tensor | None = None
        if stage != "warmup":
            assert user_emb is not None and target_ids is not None
            action = self.action_loss(batch, user_emb, target_ids)
            total, parts = action.loss, dict(action.parts)
            terms["action"] = action.loss
        knowledge, catalog = self.model.knowledge, self.model.knowledge_catalog
        if knowledge is not None and catalog is not None and any(w > 0 for w in weights.values()):
            # Only objectives whose weight in this stage is > 0 get inputs and run.
            inputs = build_knowledge_batch(
                self.encoder,
                catalog,
                self.knowledge_config,
                stage,
                batch.histories,
                batch.queries,
                batch.targets,
                user_emb,
                batch.seed,
                weights,
                separate_readout=stage != "warmup" and self._per_term_backward(),
            )
            out = knowledge(self.encoder.backbone, inputs, stage, weights)
            total = out.loss if total is None else total + out.loss
            parts.update(out.parts)
            terms.update(out.terms)
        if total is None:
            raise ConfigError(
                f"stage {stage!r} has no objective with a non-zero weight; enable a knowledge "
                "objective or set train.semantic_warmup_steps=0"
            )
        parts["loss"] = float(total.detach())
        return LossOutput(loss=total, parts=parts, terms=terms)

    def _per_term_backward(self) -> bool:
        """Whether every joint-stage step backpropagates each term on its own (`GradientBalancer`
        under gradient control or item-token protection). The knowledge inputs then re-read e_u by
        a forward over their few sampled sequences, so that L_rec's and L_flow's own backward
        passes run through those rows rather than the whole batch (same values; see
        `knowledge_inputs.interest_at`). Measuring alone keeps the single forward: a measured run
        stays bit-identical to an unmeasured one."""
        config = self.knowledge_config
        return config.grad_control != "none" or config.protect_item_tokens

    def backward(self, output: LossOutput, scale: float) -> dict[str, float]:
        """Backpropagate `scale * output.loss`, measuring / controlling the terms' gradients.

        With `knowledge.grad_control: none`, `protect_item_tokens` off and gradient-norm logging
        off (or not a log step) this is exactly `(output.loss * scale).backward()`. Otherwise
        `GradientBalancer` takes each term's gradient; the shared parameters are the encoder's trainable weights except W_v
        (only the action's item tower reads it) that the action term and a knowledge term reach.
        Not for `train.distributed: fsdp` (the task must then call the root module's forward).
        """
        config = self.knowledge_config
        measure = config.log_grad_norms and (self._step is None or self._step.log)
        if not self._per_term_backward() and not measure:
            (output.loss * scale).backward()
            return {}
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        item_head = {id(p) for p in self.encoder.item_head.parameters()}
        candidates = [
            p for p in self.encoder.parameters() if p.requires_grad and id(p) not in item_head
        ]
        protected = self.encoder.item_token_parameters() if config.protect_item_tokens else []
        balancer = GradientBalancer(
            trainable, candidates, config.grad_control, config.grad_ratio, protected
        )
        return balancer.backward(output.loss, output.terms, scale, measure)

    # ----- optimization and evaluation ------------------------------------------------------

    def optimizer_groups(self, base_lr: float) -> list[dict[str, Any]]:
        """AdamW groups: the LLM's trainable weights at `base_lr`, the new heads at `head_lr`.

        Vectors (biases, norm gains, [INTEREST], log τ) get no weight decay: pulling them to 0 hurts.
        """
        head_params = self.encoder.head_parameters() + list(self.model.action.parameters())
        if self.model.knowledge is not None:  # g and the flow head are new heads too
            head_params += list(self.model.knowledge.parameters())
        head_ids = {id(p) for p in head_params}
        backbone = [p for p in self.model.parameters() if p.requires_grad and id(p) not in head_ids]
        heads = [p for p in head_params if p.requires_grad]
        head_lr = self.head_lr or base_lr
        groups: list[dict[str, Any]] = []
        for name, params, lr in (("backbone", backbone, base_lr), ("heads", heads, head_lr)):
            groups.append({"name": name, "params": [p for p in params if p.ndim >= 2], "lr": lr})
            groups.append(
                {
                    "name": f"{name}_no_decay",
                    "params": [p for p in params if p.ndim < 2],
                    "lr": lr,
                    "weight_decay": 0.0,
                }
            )
        return [g for g in groups if g["params"]]

    def validation_examples(self) -> Examples:
        if self._valid is None:
            examples = self.dataset.examples("valid")
            limit = self.data_config.valid_users
            self._valid = (
                examples.subset(np.arange(min(limit, len(examples)))) if limit else examples
            )
        return self._valid

    def validate(self) -> dict[str, float]:
        """Full-ranking NDCG@10 / HR@10 on the validation split (history items masked)."""
        retriever = KarmaRetriever(self.encoder, batch_size=self.data_config.eval_batch_size)
        examples = self.validation_examples()
        return full_ranking_metrics(
            retriever.user_vectors(examples),
            retriever.item_vectors(),
            examples.histories,
            examples.targets,
        )


def full_ranking_metrics(
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    histories: list[np.ndarray],
    targets: np.ndarray,
    k: int = 10,
) -> dict[str, float]:
    """NDCG@k, HR@k and MRR of dot-product scores over the whole catalog, history items masked.

    The same ranking as `karma evaluate` (`karma.eval.ranking.rank_targets`: the target is never
    masked, ties count as expected under random tie-breaking), restricted to what validation needs.
    """
    ranks = rank_targets(user_vectors, item_vectors, targets, exclude=histories)
    metrics = ranking_metrics(ranks, [k])
    return {name: metrics[name] for name in (f"ndcg@{k}", f"hr@{k}", "mrr")}


class KarmaRetriever:
    """The `Retriever` protocol over a trained encoder (eval mode, no gradients)."""

    def __init__(
        self,
        encoder: KarmaEncoder,
        name: str = "karma",
        batch_size: int = 64,
        progress: bool | None = False,
    ) -> None:
        self.encoder = encoder
        self.name = name
        self.batch_size = batch_size
        self.progress = progress
        """a bar while encoding users (None: only on a terminal; see `encode_users`)"""

    def item_vectors(self) -> np.ndarray:
        """(num_items, e) float32 unit item embeddings."""
        with _eval_mode(self.encoder), torch.no_grad():
            return self.encoder.item_embeddings(batch_size=self.batch_size).float().cpu().numpy()

    def user_vectors(self, examples: Examples) -> np.ndarray:
        """(len(examples), e) float32 unit interest embeddings."""
        queries = examples.queries if self.encoder.mode == "search" else None
        with _eval_mode(self.encoder):
            vectors = self.encoder.encode_users(
                examples.histories, queries, self.batch_size, progress=self.progress
            )
        return vectors.float().cpu().numpy()


class _eval_mode:
    """Context manager: module in eval mode inside, its previous mode restored after."""

    def __init__(self, module: nn.Module) -> None:
        self.module, self.was_training = module, module.training

    def __enter__(self) -> None:
        self.module.eval()

    def __exit__(self, *exc: object) -> None:
        self.module.train(self.was_training)
