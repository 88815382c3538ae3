"""How long the backbone item-text pass (`item_text_pooling: backbone`) takes over a catalog (CPU).

    python benchmarks/item_text_pass.py --data /tmp/tokens/data/ml-100k [--layers N] [--threads 2]

Loads the frozen backbone (default smollm2-135m, every layer), tokenizes the dataset's item texts
exactly as `karma train` does, and times one uncached `backbone_pass` over the whole catalog, then
one cached `backbone_item_states` call (a second build). The disk cache goes to a temporary
$KARMA_CACHE so the first call is always a miss. Writes benchmarks/results/item_text_pass.json.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from bench_record import write_result
from karma.data.dataset import PreparedDataset
from karma.model.backbone import load_pretrained
from karma.model.config import BackboneConfig, EncoderConfig
from karma.model.item_text import backbone_item_states, item_text_matrix, resolve_layers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--backbone", default="smollm2-135m")
    parser.add_argument("--layers", type=int, default=None, help="item_text_layers (default all)")
    parser.add_argument("--readout", choices=("mean", "last"), default="mean")
    parser.add_argument("--item-text-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    ds = PreparedDataset(args.data)
    texts = ds.item_texts(with_categories=True)
    config = EncoderConfig(
        item_text_tokens=args.item_text_tokens,
        item_text_pooling="backbone",
        item_text_layers=args.layers,
        item_text_readout=args.readout,
    )
    start = time.perf_counter()
    model, tokenizer = load_pretrained(BackboneConfig(name=args.backbone, tuning="frozen"))
    load_s = time.perf_counter() - start
    ids, mask = item_text_matrix(tokenizer, texts, config.item_text_tokens)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["KARMA_CACHE"] = cache
        start = time.perf_counter()
        states = backbone_item_states(model, tokenizer, texts, config)
        first_s = time.perf_counter() - start
        start = time.perf_counter()
        again = backbone_item_states(model, tokenizer, texts, config)
        cached_s = time.perf_counter() - start
    assert torch.equal(states, again)
    payload = {
        "dataset": ds.name,
        "items": len(texts),
        "text_tokens": int(mask.sum()),
        "max_text_tokens": int(ids.shape[1]),
        "backbone": args.backbone,
        "layers": resolve_layers(model, args.layers),
        "readout": args.readout,
        "threads": args.threads,
        "load_backbone_s": round(load_s, 2),
        "first_build_s": round(first_s, 2),
        "cached_build_s": round(cached_s, 2),
        "load_average_1min": os.getloadavg()[0],
    }
    print(payload)
    print(write_result("item_text_pass", payload))


if __name__ == "__main__":
    main()
