"""What the GPU benchmark scripts share: paths of the packed inputs, run configs, timing, JSON output.

The scripts run as `python benchmarks/gpu/<name>.py`, so this module imports as `common` and
`benchmarks/` is put on sys.path for `bench_record` (commit, machine, date) and
`karma_train_step` (the FLOP count every MFU figure uses).

Layout of the packed inputs (`benchmarks/gpu/pack.sh`, git-ignored `.gpu/` at the repository root):

    .gpu/base/COMMIT                 the commit the pack was made from (the device copy has no .git)
    .gpu/base/whl/*.whl              small wheels missing on the GPU machine (gguf, fastapi, ...)
    .gpu/base/data/ml-1m/            the prepared ml-1m dataset with its minilm features
    .gpu/base/smollm2/               SmolLM2-135M config.json + tokenizer (no weights)
    .gpu/base/gguf.sha256            sha256 of the whole SmolLM2 GGUF
    .gpu/w1/gguf.part00, .gpu/w2/gguf.part01   the GGUF in two parts (each travels in its own call)
    .gpu/serve/whl/*.whl             faiss-cpu (serving only)
    .gpu/state/                      written on the GPU machine: installed marker, assembled and
                                     converted weights, training runs, the quality plan
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))  # benchmarks/: bench_record, karma_train_step

PACK = Path(os.environ.get("KARMA_GPU_PACK", ROOT / ".gpu"))
BASE = PACK / "base"
STATE = PACK / "state"
DATA = BASE / "data" / "ml-1m"
SMOLLM2_CONFIG = BASE / "smollm2"
CONVERTED = STATE / "smollm2-135m"  # safetensors converted from the assembled GGUF (quality runs)
CONFIGS = {
    "action-only": ROOT / "configs/ml-1m/action-only-smollm2-gpu.yaml",
    "karma": ROOT / "configs/ml-1m/karma-smollm2-gpu.yaml",
}


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for the JSON results (default: $OUT when set, else out/gpu)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny dataset, tiny random backbone, CPU, a few steps: checks the script end to end",
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=None,
        help="unix time by which the script must have written its results (run_all.py sets it)",
    )


def out_dir(args: argparse.Namespace) -> Path:
    path = args.out or Path(os.environ.get("OUT") or ROOT / "out" / "gpu")
    path.mkdir(parents=True, exist_ok=True)
    return path


def seconds_left(args: argparse.Namespace, default: float = 1e9) -> float:
    return default if args.deadline is None else args.deadline - time.time()


def commit() -> str:
    """The git commit, or the one pack.sh recorded (the GPU machine's copy has no .git)."""
    from bench_record import commit as git_commit

    found = git_commit()
    if found != "unknown":
        return found
    recorded = BASE / "COMMIT"
    return recorded.read_text().strip() if recorded.is_file() else "unknown"


def device_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info |= {
            "gpu": torch.cuda.get_device_name(0),
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "multiprocessors": props.multi_processor_count,
            "cuda": torch.version.cuda,
        }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


def write_json(out: Path, name: str, payload: dict[str, Any]) -> Path:
    """out/<name>.json with the benchmark name, commit, machine, device and date (bench_record)."""
    from bench_record import write_result

    record = {"commit": commit(), "device": device_info(), **payload}
    path = write_result(name, record, out / f"{name}.json")
    print(f"wrote {path}", flush=True)
    return path


def read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


# ----------------------------------------------------------------------------- configs


def smoke_dataset(root: Path) -> Path:
    """A tiny prepared dataset with 8-dim features named `text` (for L_flow)."""
    from karma.testing.datasets import write_tiny_dataset

    path = root / "tiny-data"
    if not (path / "manifest.json").is_file():
        write_tiny_dataset(path, num_items=40, num_users=24, feature_dim=8)
    return path


SMOKE_OVERRIDES = [
    "model.backbone.name=tiny",
    "model.encoder.embedding_dim=16",
    "model.encoder.item_text_tokens=8",
    "data.max_history=6",
    "data.batch_size=4",
    "data.eval_batch_size=8",
    "action.num_negatives=8",
    "train.device=cpu",
    "train.num_threads=1",
]
SMOKE_KARMA_OVERRIDES = [
    "knowledge.feature_name=text",
    "knowledge.target_text_tokens=8",
    "knowledge.warmup_items_per_batch=8",
    "knowledge.flow_hidden=16",
]


def run_config(
    kind: str, data: Path, backbone: str | None, smoke: bool, extra: list[str] | None = None
) -> Any:
    """The RunConfig of `configs/ml-1m/<kind>-smollm2-gpu.yaml` pointed at `data` and `backbone`."""
    from karma import RunConfig, load_config

    overrides = [f"data.path={data}", "train.progress_bar=false", "train.tensorboard=false"]
    if backbone is not None:
        overrides.append(f"model.backbone.name={backbone}")
    if smoke:
        overrides += SMOKE_OVERRIDES + (SMOKE_KARMA_OVERRIDES if kind == "karma" else [])
    return load_config(RunConfig, CONFIGS[kind], overrides + list(extra or []))


def semantic_warmup_key() -> str:
    """The TrainConfig field of the semantic warm-up stage's length (renamed from
    warmup_stage_steps to semantic_warmup_steps in issue 11; both spellings are handled)."""
    from karma import TrainConfig

    return (
        "semantic_warmup_steps"
        if hasattr(TrainConfig, "semantic_warmup_steps")
        else "warmup_stage_steps"
    )


def semantic_warmup_steps(train_config: Any) -> int:
    return int(getattr(train_config, semantic_warmup_key()))


def random_smollm2_dir(smoke: bool, root: Path | None = None) -> str | None:
    """A model directory with SmolLM2-135M's config and tokenizer and random weights (seed 0).

    Timing needs no real weights: the same shapes at full depth cost the same. Built once into
    `.gpu/state/` (or `root`). Smoke mode returns None (the config's `tiny` override applies).
    """
    if smoke:
        return None
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    target = (root or STATE) / "smollm2-random"
    if (target / "model.safetensors").is_file():
        return str(target)
    if not (SMOLLM2_CONFIG / "config.json").is_file():
        raise SystemExit(f"missing {SMOLLM2_CONFIG}: carry .gpu/base (made by pack.sh)")
    config = AutoConfig.from_pretrained(str(SMOLLM2_CONFIG))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tmp = target.with_name(target.name + ".tmp")
    model.save_pretrained(str(tmp))
    AutoTokenizer.from_pretrained(str(SMOLLM2_CONFIG)).save_pretrained(str(tmp))
    tmp.rename(target)
    return str(target)


# ----------------------------------------------------------------------------- timing


def sync(device: Any) -> None:
    import torch

    if getattr(device, "type", device) == "cuda":
        torch.cuda.synchronize()


def autocast(device: Any, precision: str) -> AbstractContextManager[Any]:
    """bf16 autocast as the Trainer applies it (train.precision), or nothing for fp32."""
    import torch

    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=getattr(device, "type", device), dtype=torch.bfloat16)


def matmul_peak(device: Any, smoke: bool) -> dict[str, Any]:
    """Best FLOP/s of a square matmul measured now: bf16 8192^3 on CUDA (the MFU denominator),
    fp32 256^3 on CPU (smoke). Mean of 10 products after 3 warm-ups, best of 3 rounds."""
    import torch

    cuda = getattr(device, "type", device) == "cuda"
    size, dtype = (8192, torch.bfloat16) if cuda else (256, torch.float32)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(10):
            a @ b
        sync(device)
        best = max(best, 10 * 2 * size**3 / (time.perf_counter() - start))
    return {"size": size, "dtype": str(dtype).removeprefix("torch."), "flops_per_s": best}


def full_batches(task: Any, batch_size: int, start_epoch: int = 0) -> Iterator[Any]:
    """Batches of exactly `batch_size` users, cycling through epochs (the last partial one skipped)."""
    task.data_config.batch_size = batch_size
    epoch = start_epoch
    while True:
        found = False
        for batch in task.batches(epoch):
            if len(batch.histories) == batch_size:
                found = True
                yield batch
        if not found:
            raise ValueError(f"batch size {batch_size} is larger than the training users")
        epoch += 1


def is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def free_memory() -> None:
    """Return freed CUDA blocks (after an OOM or between variants); nothing to do on a CPU."""
    import gc

    import torch

    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def timed(fn: Callable[[], Any], device: Any) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def run_command(command: list[str], env: dict[str, str] | None = None) -> None:
    print("+ " + " ".join(command), flush=True)
    subprocess.run(command, check=True, env=env)
