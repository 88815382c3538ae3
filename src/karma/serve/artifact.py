"""The serving artifact on disk, and `ServingModel`: load it, encode users, search the catalog.

An artifact is a directory (safetensors only, never pickle):

    manifest.json                  format, karma version, backbone, dims, normalization, hashes,
                                   encoder kind + config, parameter count, built indexes
    encoder.safetensors            serving weights only (LoRA merged): the path to e_u + item tower
    tokenizer/                     the backbone's tokenizer (absent for the toy encoder)
    item_embeddings.safetensors    "item_embeddings" (N, e) float32, L2-normalized; row = item index
    items.parquet                  item_id, title, categories, ... and `text` (what the item tower read)
    item_inputs.safetensors        per-item inputs beyond the text, rows aligned with items.parquet
                                   (only for models that need them): "item_features" (N, f) frozen
                                   features, "item_text_states" (N, d) backbone item-text states
    index/{flat,ivf,hnsw}.faiss    FAISS indexes built by `karma index` (flat is built on load)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy

from karma.errors import KarmaError
from karma.serve import index as item_index
from karma.serve.lookup import ItemLookup
from karma.serve.protocol import InterestEncoder, encoder_builder, is_train_only_key

FORMAT = "karma-serving-artifact"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
ENCODER_WEIGHTS_FILE = "encoder.safetensors"
ITEM_EMBEDDINGS_FILE = "item_embeddings.safetensors"
ITEM_EMBEDDINGS_KEY = "item_embeddings"
ITEMS_FILE = "items.parquet"
ITEM_INPUTS_FILE = "item_inputs.safetensors"
TOKENIZER_DIR = "tokenizer"


@dataclass
class Recommendations:
    """Top items for one user, best first."""

    item_indices: np.ndarray  # (k,) int64 rows of items.parquet
    scores: np.ndarray  # (k,) float32 dot products


def read_manifest(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        raise KarmaError(
            f"{directory} is not a serving artifact (no {MANIFEST_FILE}); "
            "create one with `karma export RUN_DIR --out DIR`"
        )
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT:
        raise KarmaError(f"{path}: not a karma serving artifact manifest (format != {FORMAT!r})")
    return manifest


def write_manifest(directory: str | Path, manifest: dict[str, Any]) -> None:
    text = json.dumps(manifest, indent=2, sort_keys=False)
    (Path(directory) / MANIFEST_FILE).write_text(text + "\n", encoding="utf-8")


def save_item_table(directory: Path, items: pd.DataFrame, embeddings: np.ndarray) -> None:
    """Write items.parquet and the (N, e) embedding matrix, rows aligned."""
    if len(items) != len(embeddings):
        raise ValueError(f"{len(items)} items but {len(embeddings)} embedding rows")
    items.reset_index(drop=True).to_parquet(directory / ITEMS_FILE, index=False)
    matrix = np.ascontiguousarray(embeddings, dtype=np.float32)
    save_numpy({ITEM_EMBEDDINGS_KEY: matrix}, str(directory / ITEM_EMBEDDINGS_FILE))


def save_item_inputs(directory: Path, tables: dict[str, Any]) -> str | None:
    """Write `item_inputs.safetensors` (torch tensors, rows = items); None when there are none."""
    from safetensors.torch import save_file as save_torch

    path = Path(directory) / ITEM_INPUTS_FILE
    if not tables:
        path.unlink(missing_ok=True)
        return None
    save_torch({k: v.detach().cpu().contiguous() for k, v in tables.items()}, str(path))
    return ITEM_INPUTS_FILE


def load_item_inputs(directory: Path) -> dict[str, Any]:
    """The tensors of `item_inputs.safetensors` (empty when the artifact has none)."""
    from safetensors.torch import load_file as load_torch

    path = Path(directory) / ITEM_INPUTS_FILE
    return dict(load_torch(str(path))) if path.is_file() else {}


class ServingModel:
    """An encoder plus the catalog it retrieves from (items, embeddings, a FAISS index)."""

    def __init__(
        self,
        encoder: InterestEncoder,
        items: pd.DataFrame,
        item_embeddings: np.ndarray,
        manifest: dict[str, Any],
        directory: Path | None = None,
    ) -> None:
        if "text" not in items.columns:
            raise ValueError("items need a `text` column (what the item tower reads)")
        self.encoder = encoder
        self.items = items.reset_index(drop=True)
        self.item_embeddings = np.ascontiguousarray(item_embeddings, dtype=np.float32)  # (N, e)
        self.manifest = manifest
        self.directory = directory
        self.index_config = item_index.IndexConfig("flat")
        self.index: faiss.Index = item_index.build_index(self.item_embeddings, self.index_config)
        self._reindex_refs()

    @property
    def num_items(self) -> int:
        return len(self.items)

    @property
    def embedding_dim(self) -> int:
        return int(self.item_embeddings.shape[1])

    def _reindex_refs(self) -> None:
        self._texts: list[str] = self.items["text"].astype(str).tolist()
        self.lookup = ItemLookup(self.items)

    # --- items -----------------------------------------------------------------------------

    def resolve_items(self, refs: Sequence[str | int]) -> list[int]:
        """Item indices for item ids or titles (any case, optionally "Title (year)"); see lookup."""
        return self.lookup.resolve(refs)

    def describe(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """item_id and title of item indices."""
        ids, titles = self.lookup.ids, self.lookup.titles
        return [{"item_id": ids[i], "title": titles[i]} for i in indices]

    # --- encoding and search ---------------------------------------------------------------

    def encode(
        self, histories: Sequence[Sequence[int]], queries: Sequence[str | None] | None = None
    ) -> np.ndarray:
        """Interest embeddings (B, e) for histories of item indices (+ optional queries)."""
        if queries is None:
            queries = [None] * len(histories)
        if len(queries) != len(histories):
            raise ValueError(f"{len(histories)} histories but {len(queries)} queries")
        texts = [[self._texts[i] for i in history] for history in histories]
        return np.asarray(self.encoder.interest_embeddings(texts, list(queries)), dtype=np.float32)

    def search_embeddings(
        self,
        embeddings: np.ndarray,
        k: int,
        exclude: Sequence[Sequence[int]] | None = None,
    ) -> list[Recommendations]:
        """Top-k per row of `embeddings` (B, e), skipping each row's `exclude` items."""
        exclude = exclude if exclude is not None else [[] for _ in range(len(embeddings))]
        excluded = [set(map(int, e)) for e in exclude]
        fetch = min(self.num_items, k + max([0, *(len(e) for e in excluded)]))
        scores, ids = self.index.search(np.ascontiguousarray(embeddings, dtype=np.float32), fetch)
        out = []
        for row_scores, row_ids, skip in zip(scores, ids, excluded):
            keep = [j for j, i in enumerate(row_ids) if i >= 0 and int(i) not in skip][:k]
            out.append(Recommendations(row_ids[keep].astype(np.int64), row_scores[keep]))
        return out

    def search(
        self,
        histories: Sequence[Sequence[int]],
        queries: Sequence[str | None] | None = None,
        k: int = 10,
        exclude_seen: bool = True,
    ) -> list[Recommendations]:
        """Encode the users and retrieve their top-k items (history items excluded by default)."""
        embeddings = self.encode(histories, queries)  # (B, e)
        return self.search_embeddings(embeddings, k, histories if exclude_seen else None)

    # --- index -----------------------------------------------------------------------------

    def use_index(self, kind: str, config: item_index.IndexConfig | None = None) -> None:
        """Search with the saved `kind` index (flat is built in memory when not saved)."""
        if kind not in item_index.INDEX_KINDS:
            raise KarmaError(f"--index {kind!r}: choose one of {', '.join(item_index.INDEX_KINDS)}")
        saved = self.manifest.get("indexes", {}).get(kind)
        if config is None:
            config = (
                item_index.IndexConfig(**saved["config"]) if saved else item_index.IndexConfig(kind)
            )  # type: ignore[arg-type]
        path = item_index.index_path(self.directory, kind) if self.directory else None
        if path is not None and path.is_file():
            index = item_index.load_index(self.directory, kind)  # type: ignore[arg-type]
            item_index.configure_search(index, config)
        elif kind == "flat":
            index = item_index.build_index(self.item_embeddings, config)
        else:
            raise KarmaError(
                f"{self.directory} has no {kind} index; build it with `karma index {self.directory} --kind {kind}`"
            )
        if index.ntotal != self.num_items:
            raise KarmaError(
                f"{path}: index holds {index.ntotal} items, the artifact {self.num_items}; "
                f"rebuild it with `karma index {self.directory} --kind {kind}`"
            )
        self.index, self.index_config = index, config

    # --- growing the catalog ---------------------------------------------------------------

    def add_items(self, new_items: pd.DataFrame) -> np.ndarray:
        """Append items (item_id, title, text[, ...]) via the item tower; returns their indices."""
        for column in ("item_id", "title", "text"):
            if column not in new_items.columns:
                raise KarmaError(f"new items need a {column!r} column")
        ids = new_items["item_id"].astype(str)
        clashes = [i for i in ids if i in self.lookup]
        if clashes or ids.duplicated().any():
            dup = clashes or ids[ids.duplicated()].tolist()
            raise KarmaError(f"item ids already in the catalog or repeated: {dup[:10]}")
        texts = new_items["text"].astype(str).tolist()
        embeddings = self.encoder.item_embeddings(texts)  # (M, e)
        start = self.num_items
        self.items = pd.concat([self.items, new_items], ignore_index=True)
        self.item_embeddings = np.concatenate([self.item_embeddings, embeddings]).astype(np.float32)
        self.index.add(np.ascontiguousarray(embeddings, dtype=np.float32))
        self._reindex_refs()
        return np.arange(start, self.num_items, dtype=np.int64)


QUANTIZE_CHOICES = ("int8",)


def load_artifact(
    directory: str | Path, index: str = "flat", quantize: str | None = None
) -> ServingModel:
    """Rebuild the encoder, load its weights, the catalog and the chosen index.

    quantize="int8": int8 dynamic quantization of the LLM's linear layers on the serving pass
    (faster on CPU, approximate; see `karma.serve.fast_decoder.PrefixCachedDecoder.quantize_int8`).
    """
    import torch
    from safetensors.torch import load_file as load_torch

    directory = Path(directory)
    manifest = read_manifest(directory)
    spec = manifest["encoder"]
    module = encoder_builder(spec["kind"])(directory, spec["config"])
    state = load_torch(str(directory / spec["weights"]))
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatch
        first = str(exc).splitlines()[0]
        raise KarmaError(
            f"{directory}: weights do not match a {spec['kind']} encoder ({first})"
        ) from None
    # Train-only heads the rebuilt module has (an LM head) are legitimately absent from the file.
    missing = [k for k in result.missing_keys if not is_train_only_key(k)]
    if missing or result.unexpected_keys:
        raise KarmaError(
            f"{directory}: weights do not match a {spec['kind']} encoder "
            f"(missing {missing[:3]}, unexpected {result.unexpected_keys[:3]})"
        )
    if hasattr(module, "after_load"):
        module.after_load()
    module.eval()
    if dtype := spec.get("dtype"):
        module.to(getattr(torch, dtype))
    if quantize is not None:
        readout_pass = getattr(module, "readout_pass", None)
        if quantize not in QUANTIZE_CHOICES or readout_pass is None:
            raise KarmaError(
                f"--quantize {quantize}: supported only as int8, for KARMA artifacts of a "
                f"Llama-family backbone ({directory} has encoder kind {spec['kind']!r})"
            )
        readout_pass.quantize_int8()
    items = pd.read_parquet(directory / ITEMS_FILE)
    embeddings = load_numpy(str(directory / ITEM_EMBEDDINGS_FILE))[ITEM_EMBEDDINGS_KEY]
    model = ServingModel(module, items, embeddings, manifest, directory)  # type: ignore[arg-type]
    model.use_index(index)
    return model


def save_catalog(model: ServingModel) -> None:
    """Persist a grown catalog: items, embeddings, and every saved index (new items appended)."""
    if model.directory is None:
        raise ValueError("this ServingModel was not loaded from a directory")
    directory = model.directory
    previous = load_numpy(str(directory / ITEM_EMBEDDINGS_FILE))[ITEM_EMBEDDINGS_KEY]
    added = model.item_embeddings[len(previous) :]  # (M, e)
    save_item_table(directory, model.items, model.item_embeddings)
    if hasattr(model.encoder, "save_item_inputs"):  # rows of the new items' features
        model.encoder.save_item_inputs(directory)
    for kind in model.manifest.get("indexes", {}):
        if not item_index.index_path(directory, kind).is_file():
            continue
        saved = item_index.load_index(directory, kind)
        if saved.ntotal == len(previous):
            saved.add(np.ascontiguousarray(added))
            item_index.save_index(saved, directory, kind)
        model.manifest["indexes"][kind]["num_items"] = int(saved.ntotal)
    model.manifest["num_items"] = model.num_items
    write_manifest(directory, model.manifest)
