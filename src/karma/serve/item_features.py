"""Item features at serving time: where a model's feature matrix came from, and new items' rows.

A model trained with `model.encoder.features: NAME` concatenates a frozen feature row f_i to every
item token. Its artifact carries the catalog's rows (`item_inputs.safetensors`, see
`karma.serve.artifact`) and a *feature source* in the manifest's encoder config: the dataset
manifest's record of the encoder that computed them (`karma data features`). An item added after
export (`karma add-items`) gets its row from the same text encoder over the same text, or is
refused with a one-line reason when that cannot be done.

The serving runtime may not import the data layer (`pyproject.toml`, import-linter), so this module
sits with export: `karma add-items` installs `new_item_features` as the encoder's
`feature_encoder`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from karma.errors import KarmaError


def feature_source(
    manifest: dict[str, Any], name: str, feature_text: list[str], serving_text: list[str]
) -> dict[str, Any]:
    """The feature source of features `name`, from a prepared dataset's manifest.

    `feature_text` is the item text the features were computed from (`item_texts()`), and
    `serving_text` the text the artifact stores per item: new items' features can be computed
    from their stored text only when the two layouts agree.
    """
    entry = dict((manifest.get("features") or {}).get(name) or {})
    return {
        "name": name,
        "encoder": entry.get("encoder"),
        "kind": entry.get("kind"),
        "dim": entry.get("dim"),
        "from_item_text": feature_text == serving_text,
    }


def new_item_features(source: dict[str, Any] | None, texts: list[str]) -> np.ndarray:
    """(M, f) float32 feature rows of new items' texts, computed like the catalog's rows."""
    name = (source or {}).get("name", "?")
    refuse = f"cannot add items: this model needs item features {name!r} for them, but"
    if not source or not source.get("encoder"):
        raise KarmaError(
            f"{refuse} the dataset does not record which encoder computed them "
            "(compute features with `karma data features` to make them reproducible)"
        )
    if source.get("kind") != "text":
        raise KarmaError(f"{refuse} they are {source.get('kind')} features, not text features")
    if not source.get("from_item_text"):
        raise KarmaError(
            f"{refuse} they were computed from another item text than the one the artifact "
            "stores (model.encoder.item_text_categories=false, or item_text_fields cut the "
            "stored text field by field)"
        )
    from karma.data.features import encode_texts, resolve_encoder

    _, model_dir = resolve_encoder(str(source["encoder"]))
    rows = encode_texts(list(texts), model_dir)
    if source.get("dim") is not None and rows.shape[1] != int(source["dim"]):
        raise KarmaError(
            f"{refuse} encoder {source['encoder']!r} gives {rows.shape[1]}-dimensional rows, "
            f"the model was trained on {source['dim']}"
        )
    return rows
