"""The canonical on-disk layout of a prepared dataset (the contract every adapter writes).

A prepared dataset is a directory:

- `items.parquet`, one row per item; the row number is the item's dense index used everywhere
  inside karma (embedding rows, logits columns):
    - `item_id` (string): the source's id;
    - `title` (string);
    - `categories` (list<string>): category / genre words, possibly empty;
    - any further string attribute columns (e.g. `year`, `brand`) listed in the manifest as
      `text_attributes`;
    - optional `image_path` (string).
- `interactions.parquet`, one row per event, sorted by (`user_id`, time order):
    - `user_id` (string), `item_id` (string), `timestamp` (int64, seconds);
    - `event` (string): `click` (part of the behaviour history) or `exposure` (shown, not clicked:
      a hard negative only);
    - `query` (string, nullable): the search query that led to the event (given or synthesized);
    - `split` (string): `train`, `valid` or `test`.
  The position within a user's rows is the time order after deterministic tie-breaking.
- `features/NAME.npy` (optional): float32 matrix (num_items, dim), row i = item index i, recorded in
  the manifest under `features`.
- `manifest.json`: source, sha256 of the inputs, counts, split protocol, karma version, features.
"""

from __future__ import annotations

ITEMS_FILE = "items.parquet"
INTERACTIONS_FILE = "interactions.parquet"
MANIFEST_FILE = "manifest.json"
FEATURES_DIR = "features"

ITEM_COLUMNS = ("item_id", "title", "categories")
INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp", "event", "query", "split")

CLICK = "click"
EXPOSURE = "exposure"
SPLITS = ("train", "valid", "test")
