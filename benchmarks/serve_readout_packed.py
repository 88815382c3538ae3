"""The serving readout pass with and without oneDNN-prepacked linears, in process, CPU time.

    python benchmarks/serve_readout_packed.py ARTIFACT [--threads 1] [--requests 400]

Builds `PrefixCachedDecoder` twice on one loaded artifact: as served (fp32 linears wrapped in
`PackedLinear` where oneDNN can run them) and with the wrapping turned off (plain `F.linear`, the
sgemm path). For batches of 1 and 32 random 20-item histories it alternates the two passes on the
same layout, checks they agree (allclose), and records each pass's thread CPU time (less sensitive
than wall time to other processes on a shared machine). Writes
benchmarks/results/serve_readout_packed.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from bench_record import write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--requests", type=int, default=400, help="batches of one user")
    parser.add_argument("--batches", type=int, default=30, help="batches of 32 users")
    parser.add_argument("--history-len", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from karma.serve import fast_decoder
    from karma.serve.artifact import load_artifact

    model = load_artifact(args.artifact)
    encoder = model.encoder.encoder
    packed = model.encoder.readout_pass
    assert isinstance(packed, fast_decoder.PrefixCachedDecoder), "not a Llama KARMA artifact"
    wrap = fast_decoder.PackedLinear.wrap
    fast_decoder.PackedLinear.wrap = classmethod(lambda cls, m: m)  # type: ignore[method-assign,assignment,arg-type,return-value]
    try:
        plain = fast_decoder.PrefixCachedDecoder(encoder)
    finally:
        fast_decoder.PackedLinear.wrap = wrap  # type: ignore[method-assign]
    rng = np.random.default_rng(0)
    result: dict[str, object] = {}
    for batch, count in ((1, args.requests), (32, args.batches)):
        times: dict[str, list[float]] = {"plain": [], "packed": []}
        with torch.inference_mode():
            for n in range(count + 3):
                histories = [
                    rng.choice(encoder.num_items, args.history_len, replace=False)
                    for _ in range(batch)
                ]
                layout = encoder.layout(histories, [None] * batch)
                passes = [("plain", plain), ("packed", packed)][:: 1 if n % 2 else -1]
                outputs = {}
                for name, readout in passes:
                    start = time.thread_time()
                    outputs[name] = readout.readout_hidden(layout)
                    if n >= 3:  # warm-up
                        times[name].append((time.thread_time() - start) * 1000)
                torch.testing.assert_close(
                    outputs["packed"], outputs["plain"], atol=1e-4, rtol=1e-4
                )
        for name, values in times.items():
            row = {
                "p50_cpu_ms": float(np.percentile(values, 50)),
                "p99_cpu_ms": float(np.percentile(values, 99)),
            }
            result[f"batch{batch}_{name}"] = row
            print(
                f"batch {batch:>2} {name:>6}: CPU p50 {row['p50_cpu_ms']:7.2f} ms  "
                f"p99 {row['p99_cpu_ms']:7.2f} ms"
            )
    settings = {k: getattr(args, k) for k in ("threads", "requests", "batches", "history_len")}
    print(f"wrote {write_result('serve_readout_packed', {'settings': settings, **result})}")


if __name__ == "__main__":
    main()
