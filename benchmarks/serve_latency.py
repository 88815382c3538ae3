"""Serving latency: p50/p99 and requests/s of `karma serve` under concurrent load, KARMA vs action-only.

    python benchmarks/serve_latency.py --artifacts ART_KARMA ART_ACTION
    python benchmarks/serve_latency.py --tiny        # two tiny random-Llama artifacts (pipeline check)
    python benchmarks/serve_latency.py --artifact ART --code before=/tmp/main/src --code after=src \
        --code int8=src --server-args 'int8=--quantize int8' --concurrency 1 50
        # one artifact served by several code trees / options, side by side

Each artifact is served by `karma serve` in its own subprocess on 127.0.0.1 (nothing else is
contacted); an async httpx client sends `--requests` POST /v1/search requests, at most
`--concurrency` in flight, each with a random history of `--history-len` catalog items (the same
histories, in the same order, for both artifacts). Latency is per request, client side, after
`--warmup` unmeasured requests. Both servers run at once and the measured requests are split into
`--rounds` rounds that alternate which server goes first, so load from other processes on a shared
machine falls on both alike. The two runs are reported as KARMA / action-only ratios: KARMA's
training-only heads are not exported, so the ratios should be ~1. Writes
benchmarks/results/serve_latency.json.

With `--artifact ART --code NAME=SRC ...` the same artifact is served once per code tree (each
server runs `python -m karma serve` with PYTHONPATH=SRC), rounds alternate between them in the same
way, and each `--concurrency` level is measured in turn: a before/after comparison of the service
code on one machine at one time. Writes benchmarks/results/serve_latency_compare.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from bench_record import write_result

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def tiny_artifacts(root: Path, num_items: int) -> tuple[Path, Path]:
    """Two artifacts of the same random tiny Llama: one labelled KARMA, one action-only."""
    import torch

    from karma.model.backbone import load_backbone
    from karma.model.config import BackboneConfig, EncoderConfig
    from karma.model.encoder import KarmaEncoder
    from karma.serve.export import write_artifact
    from karma.serve.karma_encoder import KarmaInterestEncoder

    genres = ["comedy", "drama", "horror", "space", "western", "romance", "crime", "music"]
    items = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(num_items)],
            "title": [f"Item {i} {genres[i % 8]}" for i in range(num_items)],
            "categories": [[genres[i % 8], genres[(i * 3) % 8]] for i in range(num_items)],
        }
    )
    texts = [f"{t} | {', '.join(c)}" for t, c in zip(items["title"], items["categories"])]
    out = []
    for name in ("karma", "action"):
        torch.manual_seed(0)
        backbone, tokenizer = load_backbone(BackboneConfig(name="tiny", tuning="lora"))
        config = EncoderConfig(embedding_dim=16, item_text_tokens=8)
        encoder = KarmaEncoder(config, backbone, tokenizer, texts, mode="search", max_history=50)
        path = root / name
        write_artifact(
            KarmaInterestEncoder(encoder, texts), items, texts, path, {"backbone": "tiny"}
        )
        out.append(path)
    return out[0], out[1]


async def send(
    port: int, histories: list[list[str]], concurrency: int, k: int
) -> tuple[list[float], float]:
    """POST every history to /v1/search, at most `concurrency` in flight: (latencies ms, wall s)."""
    limit = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=f"http://{HOST}:{port}", timeout=120, limits=limits
    ) as client:

        async def one(history: list[str]) -> None:
            async with limit:
                start = time.perf_counter()
                response = await client.post("/v1/search", json={"history": history, "k": k})
                elapsed = time.perf_counter() - start
                response.raise_for_status()
                latencies.append(elapsed * 1000)

        start = time.perf_counter()
        await asyncio.gather(*(one(h) for h in histories))
        return latencies, time.perf_counter() - start


def start_server(
    artifact: Path,
    args: argparse.Namespace,
    src: Path | None = None,
    extra: list[str] | None = None,
) -> tuple[subprocess.Popen, int]:
    """`karma serve ARTIFACT` on a free loopback port (code from `src` if given), once /healthz answers."""
    port = free_port()
    command = [sys.executable, "-m", "karma", "serve", str(artifact), "--host", HOST]
    command += ["--port", str(port), "--max-batch", str(args.max_batch), *(extra or [])]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    if src is not None:
        env["PYTHONPATH"] = str(src.resolve())
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_until_ready(server, port, args.startup_timeout)
    return server, port


def wait_until_ready(server: subprocess.Popen, port: int, timeout_s: float) -> None:
    """Poll /healthz until the server answers 200; raise if it exits or `timeout_s` passes."""
    deadline = time.time() + timeout_s
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"server exited: {server.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            if httpx.get(f"http://{HOST}:{port}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.time() > deadline:
            server.terminate()
            raise RuntimeError(f"server on port {port} not ready after {timeout_s} s")
        time.sleep(0.5)


def measure(
    artifacts: dict[str, Path],
    histories: list[list[str]],
    args: argparse.Namespace,
    sources: dict[str, Path] | None = None,
) -> dict[str, dict[str, float]]:
    """Both servers up at once; rounds alternate which goes first, so CPU drift hits both alike."""
    sources = sources or {}
    servers = {
        name: start_server(path, args, sources.get(name)) for name, path in artifacts.items()
    }
    try:
        return measure_servers(servers, histories, args, args.concurrency[0])
    finally:
        for server, _ in servers.values():
            server.terminate()
            server.wait(timeout=30)


def measure_servers(
    servers: dict[str, tuple[subprocess.Popen, int]],
    histories: list[list[str]],
    args: argparse.Namespace,
    concurrency: int,
) -> dict[str, dict[str, float]]:
    """Latency and throughput of running servers at one concurrency level (alternating rounds)."""
    latencies: dict[str, list[float]] = {name: [] for name in servers}
    walls = dict.fromkeys(servers, 0.0)
    for _, port in servers.values():
        asyncio.run(send(port, histories[: args.warmup], concurrency, args.k))
    measured = histories[args.warmup :]
    per_round = int(np.ceil(len(measured) / args.rounds))
    for r in range(args.rounds):
        chunk = measured[r * per_round : (r + 1) * per_round]
        order = list(servers) if r % 2 == 0 else list(reversed(servers))
        for name in order:
            values, wall = asyncio.run(send(servers[name][1], chunk, concurrency, args.k))
            latencies[name] += values
            walls[name] += wall
    out = {}
    for name, (_, port) in servers.items():
        health = httpx.get(f"http://{HOST}:{port}/healthz", timeout=10).json()
        values = np.asarray(latencies[name])
        out[name] = {
            "requests": len(values),
            "concurrency": concurrency,
            "p50_ms": float(np.percentile(values, 50)),
            "p99_ms": float(np.percentile(values, 99)),
            "mean_ms": float(values.mean()),
            "requests_per_s": len(values) / walls[name],
            "mean_server_batch": float(health["mean_batch"]),  # since the server started
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", nargs=2, type=Path, metavar=("KARMA", "ACTION_ONLY"))
    parser.add_argument("--tiny", action="store_true", help="build two tiny random artifacts")
    parser.add_argument("--tiny-items", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16])
    parser.add_argument(
        "--artifact", type=Path, help="with --code: one artifact, several code trees"
    )
    parser.add_argument(
        "--code", action="append", default=[], metavar="NAME=SRC", help="a code tree to serve with"
    )
    parser.add_argument(
        "--server-args",
        action="append",
        default=[],
        metavar="NAME=ARGS",
        help="extra `karma serve` options of the --code server NAME, e.g. 'int8=--quantize int8'",
    )
    parser.add_argument("--rounds", type=int, default=6, help="alternating measurement rounds")
    parser.add_argument("--history-len", type=int, default=20)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="OMP threads of each server")
    parser.add_argument("--startup-timeout", type=float, default=300)
    args = parser.parse_args()
    if args.code:
        if args.artifact is None or len(args.code) < 2:
            parser.error("--code needs --artifact ART and at least two NAME=SRC")
        compare_code(args)
        return
    if (args.artifacts is None) == (not args.tiny):
        parser.error("give --artifacts KARMA ACTION_ONLY or --tiny")

    with tempfile.TemporaryDirectory() as tmp:
        karma_dir, action_dir = args.artifacts or tiny_artifacts(Path(tmp), args.tiny_items)
        ids = pd.read_parquet(karma_dir / "items.parquet", columns=["item_id"])["item_id"]
        ids = ids.astype(str).tolist()
        rng = np.random.default_rng(0)
        total = args.warmup + args.requests
        histories = [
            [ids[i] for i in rng.choice(len(ids), args.history_len, replace=False)]
            for _ in range(total)
        ]
        paths = {"karma": karma_dir, "action_only": action_dir}
        stats = measure(paths, histories, args)
        runs = {}
        for name, path in paths.items():
            manifest = json.loads((path / "manifest.json").read_text())
            runs[name] = {
                "artifact": str(path) if args.artifacts else f"tiny:{name}",
                "parameter_count": manifest["encoder"]["parameter_count"],
                "backbone": manifest.get("backbone"),
                **stats[name],
            }
            r = runs[name]
            print(
                f"{name:>12}: p50 {r['p50_ms']:8.1f} ms  p99 {r['p99_ms']:8.1f} ms  "
                f"{r['requests_per_s']:7.1f} req/s  mean batch {r['mean_server_batch']:.1f}  "
                f"{r['parameter_count']:,} params"
            )
    ratio = {
        key: runs["karma"][key] / runs["action_only"][key]
        for key in ("p50_ms", "p99_ms", "requests_per_s", "parameter_count")
    }
    print("KARMA / action-only: " + "  ".join(f"{k} {v:.3f}" for k, v in ratio.items()))
    result = {
        "tiny": bool(args.tiny),
        "settings": {
            k: getattr(args, k)
            for k in (
                "requests",
                "warmup",
                "concurrency",
                "history_len",
                "k",
                "max_batch",
                "threads",
            )
        },
        "runs": runs,
        "ratio_karma_over_action_only": ratio,
    }
    print(f"wrote {write_result('serve_latency', result)}")


def random_histories(artifact: Path, args: argparse.Namespace) -> list[list[str]]:
    ids = pd.read_parquet(artifact / "items.parquet", columns=["item_id"])["item_id"]
    ids = ids.astype(str).tolist()
    rng = np.random.default_rng(0)
    return [
        [ids[i] for i in rng.choice(len(ids), args.history_len, replace=False)]
        for _ in range(args.warmup + args.requests)
    ]


def compare_code(args: argparse.Namespace) -> None:
    """One artifact served by each code tree; every concurrency level, rounds alternating."""
    sources = {}
    for spec in args.code:
        name, _, src = spec.partition("=")
        sources[name] = Path(src)
    histories = random_histories(args.artifact, args)
    extras: dict[str, list[str]] = {}
    for spec in args.server_args:
        name, _, rest = spec.partition("=")
        extras[name] = rest.split()
    servers = {
        name: start_server(args.artifact, args, src, extras.get(name))
        for name, src in sources.items()
    }
    results: dict[str, dict[str, dict[str, float]]] = {}
    try:
        for concurrency in args.concurrency:
            stats = measure_servers(servers, histories, args, concurrency)
            results[f"concurrency_{concurrency}"] = stats
            for name, r in stats.items():
                print(
                    f"{concurrency:>3} clients {name:>8}: p50 {r['p50_ms']:7.1f} ms  "
                    f"p99 {r['p99_ms']:7.1f} ms  {r['requests_per_s']:6.1f} req/s",
                    flush=True,
                )
    finally:
        for server, _ in servers.values():
            server.terminate()
            server.wait(timeout=30)
    settings = {
        k: getattr(args, k)
        for k in ("requests", "warmup", "rounds", "history_len", "k", "max_batch", "threads")
    }
    payload = {
        "artifact": str(args.artifact),
        "code": {name: str(src) for name, src in sources.items()},
        "server_args": extras,
        "settings": settings,
        "results": results,
    }
    print(f"wrote {write_result('serve_latency_compare', payload)}")


if __name__ == "__main__":
    main()
