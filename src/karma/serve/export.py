"""Export: a trained encoder -> a serving artifact holding only what serving runs.

Steps: merge LoRA adapters into the base weights (peft `merge_and_unload`), keep the state-dict keys
under the encoder's `serving_prefixes` (the path to e_u and the item tower), refuse any key of a
training-only head, encode the catalog with the item tower, and write the layout described in
`karma.serve.artifact`. A KARMA run and an action-only run of the same backbone therefore export the
same parameter count: the regularizers cost nothing at serving time.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file as save_torch
from torch import nn
from tqdm import tqdm

from karma import __version__
from karma.errors import KarmaError
from karma.model.encoder import KarmaEncoder
from karma.runs import load_encoder, open_run
from karma.serve import artifact
from karma.serve.item_features import feature_source
from karma.serve.karma_encoder import KarmaInterestEncoder
from karma.serve.protocol import count_parameters, is_train_only_key


def merge_lora(module: nn.Module) -> int:
    """Merge every peft adapter inside `module` into its base weights, in place; returns how many."""
    from peft import PeftModel
    from peft.tuners.tuners_utils import BaseTunerLayer

    merged = 0
    for name, child in list(module.named_children()):
        if isinstance(child, PeftModel):
            setattr(module, name, child.merge_and_unload())
            merged += 1
        else:
            merged += merge_lora(child)
    # Adapters injected without a PeftModel wrapper (peft.inject_adapter_in_model) live as layers.
    for name, child in list(module.named_modules()):
        if isinstance(child, BaseTunerLayer) and name:
            child.merge()
            parent_name, _, attr = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            setattr(parent, attr, child.get_base_layer())
            merged += 1
    return merged


def serving_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The encoder's serving weights: keys under `serving_prefixes`, none of a train-only head."""
    prefixes = tuple(module.serving_prefixes)  # type: ignore[attr-defined]
    state = {k: v for k, v in module.state_dict().items() if k.startswith(prefixes)}
    leaked = [k for k in state if is_train_only_key(k) or "lora_" in k]
    if leaked:
        raise KarmaError(
            f"refusing to export training-only or unmerged adapter weights: {leaked[:5]}; "
            "fix the encoder's serving_prefixes"
        )
    # Cloned so tensors that share storage (tied embeddings) save as independent safetensors.
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def item_text_table(items: pd.DataFrame, texts: list[str]) -> pd.DataFrame:
    """The artifact's items table: the dataset's columns plus the `text` the item tower read."""
    if len(items) != len(texts):
        raise ValueError(f"{len(items)} items but {len(texts)} texts")
    table = items.reset_index(drop=True).copy()
    table["item_id"] = table["item_id"].astype(str)
    table["text"] = texts
    return table


def encode_catalog(encoder: Any, texts: list[str], batch_size: int = 512) -> np.ndarray:
    """Item-tower embeddings (N, e) of all item texts, in batches with a progress bar."""
    chunks = []
    for start in tqdm(range(0, len(texts), batch_size), desc="item tower", unit="batch"):
        chunks.append(np.asarray(encoder.item_embeddings(texts[start : start + batch_size])))
    return np.concatenate(chunks).astype(np.float32)  # (N, e)


def write_artifact(
    encoder: nn.Module,
    items: pd.DataFrame,
    item_texts: list[str],
    out: str | Path,
    provenance: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the serving artifact of `encoder` (an `InterestEncoder` module) to `out`.

    `encoder` is modified in place (adapters merged, eval mode). `provenance` goes into the manifest
    (backbone, data_hash, config_hash, run directory, objective weights, ...). Returns the manifest.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise KarmaError(
                f"{out} exists and is not empty; choose another --out or pass --overwrite"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)

    merged = merge_lora(encoder)
    encoder.eval()
    state = serving_state_dict(encoder)
    save_torch(state, str(out / artifact.ENCODER_WEIGHTS_FILE), metadata={"format": "pt"})
    has_tokenizer = False
    if hasattr(encoder, "save_assets"):
        has_tokenizer = bool(encoder.save_assets(out))  # type: ignore[operator]

    table = item_text_table(items, item_texts)
    embeddings = encode_catalog(encoder, item_texts)  # (N, e)
    artifact.save_item_table(out, table, embeddings)

    dtypes = {str(v.dtype).removeprefix("torch.") for v in state.values()}
    provenance = dict(provenance or {})
    manifest: dict[str, Any] = {
        "format": artifact.FORMAT,
        "format_version": artifact.FORMAT_VERSION,
        "karma_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "backbone": provenance.pop("backbone", None),
        "data_hash": provenance.pop("data_hash", None),
        "config_hash": provenance.pop("config_hash", None),
        "embedding_dim": int(embeddings.shape[1]),
        "num_items": len(table),
        "normalization": "l2",
        "similarity": "inner_product",
        "encoder": {
            "kind": encoder.kind,  # type: ignore[attr-defined]
            "config": encoder.encoder_config(),  # type: ignore[operator]
            "weights": artifact.ENCODER_WEIGHTS_FILE,
            "parameter_count": count_parameters(state),
            "dtype": dtypes.pop() if len(dtypes) == 1 else None,
            "lora_adapters_merged": merged,
            "serving_prefixes": list(encoder.serving_prefixes),  # type: ignore[attr-defined]
        },
        "tokenizer": artifact.TOKENIZER_DIR if has_tokenizer else None,
        "items": artifact.ITEMS_FILE,
        "item_inputs": (
            artifact.ITEM_INPUTS_FILE if (out / artifact.ITEM_INPUTS_FILE).is_file() else None
        ),
        "item_embeddings": artifact.ITEM_EMBEDDINGS_FILE,
        "indexes": {},
        "run": provenance,
    }
    artifact.write_manifest(out, manifest)
    return manifest


def export_run(run_dir: str | Path, out: str | Path, overwrite: bool = False) -> dict[str, Any]:
    """`karma export RUN_DIR --out DIR`: load a training run's encoder and write its artifact.

    The encoder comes from the run layer without any training-only part (`karma.runs.load_encoder`).
    """
    run = open_run(run_dir)
    if run.kind != "karma":
        raise KarmaError(
            f"{run_dir} is a {run.kind} run; only karma runs export (serving reads item text)"
        )
    trained = load_encoder(run)
    encoder = trained.module
    if not isinstance(encoder, KarmaEncoder) or trained.item_texts is None:
        raise KarmaError(f"{run_dir}: the run's encoder is not a KarmaEncoder")
    source = None
    if name := encoder.config.features:  # how `karma add-items` gets new items' feature rows
        dataset = trained.dataset
        source = feature_source(dataset.manifest, name, dataset.item_texts(), trained.item_texts)
    serving = KarmaInterestEncoder(encoder, trained.item_texts, source)
    return write_artifact(
        serving, trained.dataset.items, trained.item_texts, out, trained.provenance, overwrite
    )
