"""Reading a prepared dataset: items, per-user sequences, and evaluation examples.

Leave-one-out (and the global time split) are stored in the `split` column; this module turns them
into what training and evaluation consume:

- `train_sequences()`: each user's clicked items with `split == "train"`, in time order;
- `examples(split)`: one example per user that has a `split` click: the target is that user's first
  click in `split`, the history is every click before it (so for leave-one-out the validation
  history is the training part, and the test history is training + validation).

Datasets prepared with the new-item protocol (`karma data prepare --cold-items`, see
`karma.data.cold`) list their cold items in the manifest (`cold_items`). A cold item is never in a
history: `examples` strips it (a user's cold validation target would otherwise enter the test
history), and a user whose history is empty after that has no example. `trainable_items` is the
(N,) mask training objectives use so a cold item is never a negative either.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from karma.data import schema
from karma.errors import DataError

DESCRIPTION = "description"  # the one long text attribute: placed last in `item_texts`

Split = Literal["train", "valid", "test"]


@dataclass(frozen=True)
class UserSequence:
    """One user's click history in time order (item indices), with per-click split and query."""

    user_id: str
    items: np.ndarray  # (n,) int64 item indices
    timestamps: np.ndarray  # (n,) int64
    splits: np.ndarray  # (n,) object: "train" | "valid" | "test"
    queries: list[str | None]


@dataclass(frozen=True)
class Examples:
    """Evaluation examples: history -> target, one per user that has a target in the split."""

    user_ids: list[str]
    histories: list[np.ndarray]  # each (n_u,) int64 item indices, time order
    targets: np.ndarray  # (U,) int64
    queries: list[str | None]

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, index: np.ndarray | list[int]) -> Examples:
        idx = list(np.asarray(index, dtype=np.int64))
        return Examples(
            user_ids=[self.user_ids[i] for i in idx],
            histories=[self.histories[i] for i in idx],
            targets=self.targets[idx],
            queries=[self.queries[i] for i in idx],
        )


class PreparedDataset:
    """A prepared dataset directory (see `karma.data.schema`)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        manifest_path = self.root / schema.MANIFEST_FILE
        if not manifest_path.is_file():
            raise DataError(
                f"{self.root} is not a prepared dataset (no {schema.MANIFEST_FILE}); "
                "create one with `karma data prepare NAME_OR_PATH --out DIR`"
            )
        self.manifest: dict[str, Any] = json.loads(manifest_path.read_text(encoding="utf-8"))
        self.items: pd.DataFrame = pd.read_parquet(self.root / schema.ITEMS_FILE)
        self.interactions: pd.DataFrame = pd.read_parquet(self.root / schema.INTERACTIONS_FILE)
        self.item_index: dict[str, int] = {
            item_id: i for i, item_id in enumerate(self.items["item_id"].astype(str))
        }

    @property
    def num_items(self) -> int:
        return len(self.items)

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", self.root.name))

    @cached_property
    def cold_items(self) -> np.ndarray:
        """(C,) int64 sorted indices of the cold items (empty without the new-item protocol)."""
        ids = (self.manifest.get("cold_items") or {}).get("item_ids", [])
        missing = [i for i in ids if str(i) not in self.item_index]
        if missing:
            raise DataError(f"{self.root}: manifest names cold item {missing[0]!r}, not an item")
        return np.sort(np.array([self.item_index[str(i)] for i in ids], dtype=np.int64))

    @cached_property
    def trainable_items(self) -> np.ndarray:
        """(N,) bool: items that exist while training (every item but the cold ones)."""
        mask = np.ones(self.num_items, dtype=bool)
        mask[self.cold_items] = False
        return mask

    @cached_property
    def titles(self) -> list[str]:
        return self.items["title"].fillna("").astype(str).tolist()

    @cached_property
    def categories(self) -> list[list[str]]:
        return [list(c) if c is not None else [] for c in self.items["categories"]]

    def item_texts(self, with_categories: bool = True, with_attributes: bool = True) -> list[str]:
        """Item text: `title (attr, attr) | cat, cat [| description]` — what the LLM reads for an
        item (unless `model.encoder.item_text_fields` composes it) and what text features encode.

        A `description` attribute comes last, after the categories: an encoder that truncates the
        text then loses the end of the description, never the categories."""
        attributes = self.manifest.get("text_attributes", []) if with_attributes else []
        short = [a for a in attributes if a != DESCRIPTION]
        texts = []
        for i, title in enumerate(self.titles):
            text = title
            extra = [str(self.items[a].iloc[i]) for a in short if pd.notna(self.items[a].iloc[i])]
            extra = [e for e in extra if e and e not in title]
            if extra:
                text += f" ({', '.join(extra)})"
            if with_categories and self.categories[i]:
                text += " | " + ", ".join(self.categories[i])
            if DESCRIPTION in attributes and pd.notna(self.items[DESCRIPTION].iloc[i]):
                text += f" | {self.items[DESCRIPTION].iloc[i]}"
            texts.append(text)
        return texts

    def item_text_fields(self) -> dict[str, list[str]]:
        """Each text field of every item ("" where missing): `title`, `categories` (the path
        joined by ", ") and each text attribute of the manifest (e.g. `brand`, `description`).
        `model.encoder.item_text_fields` composes the item text from these with token budgets."""
        fields = {"title": self.titles, "categories": [", ".join(c) for c in self.categories]}
        for attribute in self.manifest.get("text_attributes", []):
            values = self.items[attribute]
            fields[attribute] = [str(v) if pd.notna(v) else "" for v in values]
        return fields

    @cached_property
    def sequences(self) -> list[UserSequence]:
        """Click sequences per user, in stored (time) order."""
        clicks = self.interactions[self.interactions["event"] == schema.CLICK]
        item_idx = clicks["item_id"].astype(str).map(self.item_index)
        if item_idx.isna().any():
            bad = clicks["item_id"][item_idx.isna()].iloc[0]
            raise DataError(f"{self.root}: interaction names unknown item {bad!r}")
        clicks = clicks.assign(_item=item_idx.astype(np.int64))
        has_query = "query" in clicks.columns
        out = []
        for user_id, group in clicks.groupby("user_id", sort=False):
            queries = group["query"].tolist() if has_query else [None] * len(group)
            out.append(
                UserSequence(
                    user_id=str(user_id),
                    items=group["_item"].to_numpy(np.int64),
                    timestamps=group["timestamp"].to_numpy(np.int64),
                    splits=group["split"].to_numpy(object),
                    queries=[q if isinstance(q, str) else None for q in queries],
                )
            )
        return out

    def train_sequences(self) -> list[np.ndarray]:
        """Each user's training clicks (item indices, time order); users with none are skipped."""
        seqs = [s.items[s.splits == "train"] for s in self.sequences]
        return [s for s in seqs if len(s) > 0]

    def train_queries(self) -> list[list[str | None]]:
        """Queries aligned with `train_sequences()` (None where the data has none)."""
        out = []
        for s in self.sequences:
            mask = s.splits == "train"
            if mask.any():
                out.append([q for q, m in zip(s.queries, mask) if m])
        return out

    def examples(self, split: Split) -> Examples:
        """History -> target examples for `split` (first click of the user in that split).

        Cold items are removed from the histories; a user with no history left is skipped.
        """
        user_ids, histories, targets, queries = [], [], [], []
        warm = self.trainable_items
        strip = not warm.all()
        for s in self.sequences:
            positions = np.flatnonzero(s.splits == split)
            if len(positions) == 0:
                continue
            t = int(positions[0])
            history = s.items[:t]
            if strip:
                history = history[warm[history]]
            if len(history) == 0:
                continue  # no history to condition on
            user_ids.append(s.user_id)
            histories.append(history)
            targets.append(s.items[t])
            queries.append(s.queries[t])
        return Examples(user_ids, histories, np.asarray(targets, dtype=np.int64), queries)

    def train_item_counts(self) -> np.ndarray:
        """(num_items,) number of training clicks per item (popularity, logQ, cold-item segments)."""
        counts = np.zeros(self.num_items, dtype=np.int64)
        for seq in self.train_sequences():
            np.add.at(counts, seq, 1)
        return counts

    def features(self, name: str | None = None) -> tuple[str, np.ndarray]:
        """A frozen feature matrix (num_items, dim) and its name; `name=None` takes the only one."""
        available: dict[str, Any] = self.manifest.get("features", {})
        if not available:
            raise DataError(
                f"{self.root} has no item features; add them with "
                f"`karma data features {self.root} --encoder minilm`"
            )
        if name is None:
            name = next(iter(available))
        if name not in available:
            raise DataError(
                f"{self.root} has no features named {name!r}; it has {sorted(available)}"
            )
        matrix = np.load(self.root / schema.FEATURES_DIR / f"{name}.npy")
        if matrix.shape[0] != self.num_items:
            raise DataError(
                f"{self.root}: features {name!r} have {matrix.shape[0]} rows, dataset has "
                f"{self.num_items} items; recompute them with `karma data features`"
            )
        return name, matrix.astype(np.float32, copy=False)
