"""Where one /v1/search request's time goes, stage by stage, in process (no HTTP).

    python benchmarks/serve_stages.py ARTIFACT [--requests 200] [--history-len 20] [--threads 2]

Stages of one request (batch of 1), each timed with perf_counter over `--requests` random
histories of catalog ids, after `--warmup` unmeasured ones:

- resolve: item references -> catalog rows (`ServingModel.resolve_items`);
- layout: item texts -> encoder indices, the token/item layout of the sequence (CPU bookkeeping);
- forward: the LLM pass and the interest head (the serving readout pass when the code has one,
  else `hidden_states` + readout; then W_u);
- search: the FAISS top-k with the history excluded (`search_embeddings`);
- describe: item ids and titles of the results.

Plus the HTTP round trip of the same requests through FastAPI's TestClient (app + pydantic +
micro-batcher + thread hop, no socket), whose excess over the stages is the service overhead.
Writes benchmarks/results/serve_stages[_LABEL].json. Run it with PYTHONPATH=OTHER/src to time
another code tree on the same artifact.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from bench_record import write_result


def percentiles(values: list[float]) -> dict[str, float]:
    array = np.asarray(values)
    return {
        "p50_ms": float(np.percentile(array, 50)),
        "p99_ms": float(np.percentile(array, 99)),
        "mean_ms": float(array.mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--history-len", type=int, default=20)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--label", default="", help="suffix of the results file (e.g. before)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from fastapi.testclient import TestClient

    from karma.serve.app import ServeConfig, create_app
    from karma.serve.artifact import load_artifact

    model = load_artifact(args.artifact)
    encoder = model.encoder.encoder  # the KarmaEncoder inside the serving adapter
    ids = model.items["item_id"].astype(str).tolist()
    readout_pass = getattr(model.encoder, "readout_pass", None)  # absent in older code trees
    rng = np.random.default_rng(0)
    histories = [
        [ids[i] for i in rng.choice(len(ids), args.history_len, replace=False)]
        for _ in range(args.warmup + args.requests)
    ]
    stages: dict[str, list[float]] = {
        k: [] for k in ("resolve", "layout", "forward", "search", "describe", "total")
    }
    with torch.inference_mode():
        for n, history in enumerate(histories):
            t0 = time.perf_counter()
            rows = model.resolve_items(history)
            t1 = time.perf_counter()
            texts = [model._texts[i] for i in rows]
            indexed = [np.asarray(model.encoder._indices(texts), dtype=np.int64)]
            layout = encoder.layout(indexed, [None])
            t2 = time.perf_counter()
            if readout_pass is not None:
                hidden = readout_pass.readout_hidden(layout)
            else:
                hidden = encoder.readout(layout, encoder.hidden_states(layout))
            users = encoder.interest_embeddings(hidden).numpy()
            t3 = time.perf_counter()
            (recs,) = model.search_embeddings(users, args.k, [rows])
            t4 = time.perf_counter()
            model.describe(recs.item_indices.tolist())
            t5 = time.perf_counter()
            if n >= args.warmup:
                for name, (a, b) in {
                    "resolve": (t0, t1),
                    "layout": (t1, t2),
                    "forward": (t2, t3),
                    "search": (t3, t4),
                    "describe": (t4, t5),
                    "total": (t0, t5),
                }.items():
                    stages[name].append((b - a) * 1000)

    http: list[float] = []
    with TestClient(create_app(model, ServeConfig())) as client:
        for n, history in enumerate(histories):
            start = time.perf_counter()
            response = client.post("/v1/search", json={"history": history, "k": args.k})
            elapsed = (time.perf_counter() - start) * 1000
            response.raise_for_status()
            if n >= args.warmup:
                http.append(elapsed)

    result: dict[str, object] = {name: percentiles(values) for name, values in stages.items()}
    result["http_testclient"] = percentiles(http)
    for name, row in result.items():
        assert isinstance(row, dict)
        print(f"{name:>16}: p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms")
    settings = {k: getattr(args, k) for k in ("requests", "warmup", "history_len", "k", "threads")}
    settings["readout_pass"] = readout_pass is not None
    name = f"serve_stages_{args.label}" if args.label else "serve_stages"
    print(f"wrote {write_result(name, {'settings': settings, 'stages': result})}")


if __name__ == "__main__":
    main()
