"""Serving latency on the GPU: p50/p99 and requests/s of the karma service with its encoder on CUDA.

    python benchmarks/gpu/serve_latency.py [--out DIR] [--runs RUN_A RUN_B]
    python benchmarks/gpu/serve_latency.py --smoke

Each run directory is exported with `karma export` (the quality runs when they exist, else a
one-step run of the action-only config with random SmolLM2-135M weights: latency does not depend
on the weights). Each artifact is served by this script's `--serve` mode in its own process: the
same FastAPI app and micro-batcher as `karma serve` (`karma.serve.app.serve`), with the loaded
encoder moved to the GPU (fp32 weights, as exported). The client is benchmarks/serve_latency.py's
`send` (async httpx, at most `--concurrency` requests in flight, random histories of
`--history-len` catalog items, the same for every artifact); latency is per request, client side,
after `--warmup` unmeasured requests. Results: serve_latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import common


def cpu_benchmark() -> Any:
    """benchmarks/serve_latency.py (same file name as this one, so loaded by path)."""
    spec = importlib.util.spec_from_file_location(
        "cpu_serve_latency", common.ROOT / "benchmarks" / "serve_latency.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def serve_forever(args: argparse.Namespace) -> None:
    """--serve mode: `karma serve` with the encoder moved to `--device`."""
    import logging

    from karma import load_artifact
    from karma.serve.app import ServeConfig, serve

    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    model = load_artifact(args.serve)
    model.encoder.to(args.device)  # type: ignore[attr-defined]
    serve(model, ServeConfig(host="127.0.0.1", port=args.port, max_batch=args.max_batch))


def start_server(
    artifact: Path, args: argparse.Namespace, device: str, bench: Any
) -> tuple[subprocess.Popen, int]:

    port = bench.free_port()
    command = [sys.executable, __file__, "--serve", str(artifact), "--port", str(port)]
    command += ["--device", device, "--max-batch", str(args.max_batch)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    bench.wait_until_ready(server, port, args.startup_timeout)
    return server, port


def random_run(args: argparse.Namespace, state: Path) -> Path:
    """A one-step action-only run with random SmolLM2-135M weights (the shapes are what counts)."""
    from karma import train_run

    directory = state / "runs" / "serve-random"
    if (directory / "run.json").is_file():
        return directory
    data = common.smoke_dataset(state) if args.smoke else common.DATA
    extra = [
        "train.max_steps=1",
        "train.lr_warmup_steps=0" if _has_lr_warmup() else "train.warmup_steps=0",
        "train.eval_every=0",
        "data.valid_users=64",
        f"output_dir={directory}",
    ]
    config = common.run_config(
        "action-only", data, common.random_smollm2_dir(args.smoke), args.smoke, extra
    )
    train_run(config, resume=False)
    return directory


def _has_lr_warmup() -> bool:
    from karma import TrainConfig

    return hasattr(TrainConfig, "lr_warmup_steps")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common.add_common_args(parser)
    parser.add_argument("--runs", nargs="+", type=Path, default=None, help="run directories")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--history-len", type=int, default=20)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--startup-timeout", type=float, default=300)
    parser.add_argument("--serve", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve_forever(args)
        return
    import numpy as np
    import pandas as pd
    import torch

    out = common.out_dir(args)
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    if not args.smoke and device != "cuda":
        raise SystemExit("serve_latency.py measures a CUDA GPU; use --smoke on a CPU")
    if args.smoke:
        args.requests, args.warmup, args.concurrency = 12, 2, [1, 4]
    state = out / "smoke-state" if args.smoke else common.STATE
    runs = args.runs
    if runs is None:
        trained = [state / "runs" / n for n in ("karma", "action-only")]
        runs = [r for r in trained if (r / "done.json").is_file()] or [random_run(args, state)]
    bench = cpu_benchmark()
    artifacts: dict[str, Path] = {}
    for run in runs:
        target = state / "artifacts" / run.name
        if not (target / "manifest.json").is_file():
            common.run_command(
                [
                    sys.executable,
                    "-m",
                    "karma",
                    "export",
                    str(run),
                    "--out",
                    str(target),
                    "--overwrite",
                ]
            )
        artifacts[run.name] = target
    ids = pd.read_parquet(next(iter(artifacts.values())) / "items.parquet", columns=["item_id"])
    ids = ids["item_id"].astype(str).tolist()
    rng = np.random.default_rng(0)
    histories = [
        [ids[i] for i in rng.choice(len(ids), args.history_len, replace=False)]
        for _ in range(args.warmup + args.requests)
    ]
    results: dict[str, Any] = {}
    for name, artifact in artifacts.items():
        server, port = start_server(artifact, args, device, bench)
        try:
            rows = []
            for concurrency in args.concurrency:
                asyncio.run(bench.send(port, histories[: args.warmup], concurrency, args.k))
                latencies, wall = asyncio.run(
                    bench.send(port, histories[args.warmup :], concurrency, args.k)
                )
                values = np.asarray(latencies)
                rows.append(
                    {
                        "concurrency": concurrency,
                        "requests": len(values),
                        "p50_ms": float(np.percentile(values, 50)),
                        "p99_ms": float(np.percentile(values, 99)),
                        "mean_ms": float(values.mean()),
                        "requests_per_s": len(values) / wall,
                    }
                )
                r = rows[-1]
                print(
                    f"{name:>14} concurrency {concurrency:>3}: p50 {r['p50_ms']:7.1f} ms  "
                    f"p99 {r['p99_ms']:7.1f} ms  {r['requests_per_s']:7.1f} req/s",
                    flush=True,
                )
            import httpx

            health = httpx.get(f"http://{bench.HOST}:{port}/healthz", timeout=10).json()
            results[name] = {"levels": rows, "mean_server_batch": health.get("mean_batch")}
        finally:
            server.terminate()
            server.wait(timeout=30)
    common.write_json(
        out,
        "serve_latency",
        {
            "smoke": args.smoke,
            "server_device": device,
            "weights": "trained" if args.runs or "serve-random" not in artifacts else "random",
            "settings": {
                k: getattr(args, k)
                for k in ("requests", "warmup", "concurrency", "history_len", "k", "max_batch")
            },
            "runs": results,
        },
    )


if __name__ == "__main__":
    main()
