"""L_gen's LM head: only on labelled positions vs full-sequence logits (forward + backward, CPU).

    python benchmarks/knowledge_lm_head.py [--layers 2] [--reps 3]

A random Llama with SmolLM2-135M's width and vocabulary (hidden 576, 9 heads / 3 KV heads, vocab
49152), truncated to a few layers as the CPU configs do; B sequences of a P-token prefix (continuous
item tokens) followed by Y target text tokens. Times `target_token_nll` (trunk once, LM head on
the B*Y labelled positions) against `full_logits_target_token_nll` (the model's forward with
full (B, P+Y, V) logits) and writes benchmarks/results/knowledge_lm_head.json.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from bench_record import write_result
from karma.objectives.lm_head import full_logits_target_token_nll, target_token_nll


def time_loss(fn, model, inputs, reps: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Median seconds of forward+backward, and the loss value."""
    times, value = [], 0.0
    for _ in range(reps + 1):  # first run warms up allocators
        model.zero_grad(set_to_none=True)
        prefix = inputs[0].detach().requires_grad_(True)
        start = time.perf_counter()
        out = fn(model, prefix, *inputs[1:])
        loss = out[0] if isinstance(out, tuple) else out
        loss.backward()
        times.append(time.perf_counter() - start)
        value = float(loss.detach())
    return sorted(times[1:])[len(times[1:]) // 2], value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--prefix", type=int, default=40)
    parser.add_argument("--target", type=int, default=24)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=int(os.environ.get("KARMA_BENCH_THREADS", "1"))
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=576, intermediate_size=1536, num_hidden_layers=args.layers,
        num_attention_heads=9, num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    b, p, y = args.batch, args.prefix, args.target
    inputs = (
        torch.randn(b, p, 576) * 0.02,
        torch.ones(b, p, dtype=torch.bool),
        torch.randint(0, 49152, (b, y)),
        torch.ones(b, y, dtype=torch.bool),
    )
    fast_s, fast_loss = time_loss(target_token_nll, model, inputs, args.reps)
    full_s, full_loss = time_loss(full_logits_target_token_nll, model, inputs, args.reps)
    result = {
        "setup": {
            "layers": args.layers,
            "batch": b,
            "prefix": p,
            "target": y,
            "vocab": 49152,
            "hidden": 576,
        },
        "head_on_labels_s": round(fast_s, 4),
        "full_logits_s": round(full_s, 4),
        "speedup": round(full_s / fast_s, 2),
        "loss_abs_diff": abs(fast_loss - full_loss),
    }
    print(write_result("knowledge_lm_head", result).read_text(encoding="utf-8"), end="")


if __name__ == "__main__":
    main()
