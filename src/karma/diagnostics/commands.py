"""`karma diagnose RUN_DIR [--users N] [--split test] [--layers ...] [--compare OTHER_RUN_DIR]`.

Loads a run through `karma.runs.load_retriever` (so any run kind works), picks the same
seeded N users of the split for every run compared, and writes to `RUN_DIR/diagnostics/`:

- `diagnostics.json`: per run, the attention summary (per layer and head) and the fidelity probes;
- `diagnostics.md`: the per-layer table(s) and the probe scores;
- `heatmaps.png` (users × history slots, chosen layers), `layers.png` (per-layer curves) and, with
  `--compare`, `compare.png` (both runs side by side on the same users).

Attention diagnostics need a run whose retriever exposes `.encoder` (a KARMA run); for other runs
(popularity, SASRec) only the fidelity probes on their user vectors are reported.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from karma.data.dataset import Examples, PreparedDataset
    from karma.diagnostics.attention import ReadoutAttention

log = logging.getLogger(__name__)

OUTPUT_DIR = "diagnostics"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "diagnose",
        help="attention-sink / barcode diagnostics and semantic-fidelity probes of a run",
        description="Measure semantic collapse of a trained run: readout attention per layer and "
        "head (sink mass, entropy, barcode), heatmaps, and how well probes recover the target's "
        "category, title and text features from the interest embeddings.",
    )
    parser.add_argument(
        "run_dir", type=Path, help="run directory (`karma train` output, or one with run.json)"
    )
    parser.add_argument(
        "--users", type=int, default=500, help="users for the attention diagnostics (seeded sample)"
    )
    parser.add_argument(
        "--probe-users",
        type=int,
        default=2000,
        help="users for the fidelity probes (seeded sample; 500 of them held out where possible)",
    )
    parser.add_argument("--split", choices=("valid", "test"), default="test", help="examples split")
    parser.add_argument(
        "--layers",
        type=int,
        nargs="+",
        default=None,
        help="layers shown in heatmaps (default: first, middle, last)",
    )
    parser.add_argument(
        "--compare",
        type=Path,
        default=None,
        help="a second run directory diagnosed on the same users",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="prepared dataset (default: the one the run was trained on)",
    )
    parser.add_argument(
        "--features",
        default=None,
        help="item feature name for the text-alignment probe (default: the first)",
    )
    parser.add_argument(
        "--width",
        type=int,
        default=None,
        help="history slots aligned across users (default: median length)",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="users per attention batch")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the user sample and probes")
    parser.add_argument(
        "--save-attention",
        action="store_true",
        help="also save the readout attention tensors (attention_0.pt, attention_1.pt)",
    )
    parser.set_defaults(func=diagnose_command)


@dataclass
class RunDiagnostics:
    """Everything measured on one run for the chosen users."""

    label: str
    fidelity: dict[str, dict[str, float]]
    attention: ReadoutAttention | None = None
    summary: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class LoadedRun:
    """A run as diagnostics sees it: something with `user_vectors(examples)` (and `.encoder` for
    KARMA runs), and the prepared dataset it was trained on."""

    label: str
    retriever: Any
    data: Path


def load_run(run_dir: Path) -> LoadedRun:
    """Any run directory, loaded through the run layer (`karma.runs`): KARMA, SASRec, popularity,
    frozen. A KARMA run's retriever exposes its `.encoder` for the attention diagnostics."""
    from karma.runs import load_retriever, open_run  # torch: kept out of `karma --help`

    run = open_run(run_dir)
    return LoadedRun(run.name, load_retriever(run), run.data)


def sample_examples(examples: Examples, users: int, seed: int) -> Examples:
    """A seeded sample of `users` examples, kept in dataset order (same users for every run)."""
    import numpy as np

    if users >= len(examples):
        return examples
    chosen = np.sort(np.random.default_rng(seed).choice(len(examples), users, replace=False))
    return examples.subset(chosen)


def diagnose_run(
    run: LoadedRun,
    dataset: PreparedDataset,
    examples: Examples,
    features: str | None = None,
    batch_size: int = 8,
    width: int | None = None,
    seed: int = 0,
    probe_examples: Examples | None = None,
    progress: bool = True,
) -> RunDiagnostics:
    """Attention summary (KARMA runs) on `examples` and fidelity probes on `probe_examples`
    (default: the same examples)."""
    from karma.diagnostics.attention import collect_readout_attention
    from karma.diagnostics.metrics import summarize
    from karma.diagnostics.probes import ProbeConfig, semantic_fidelity
    from karma.errors import DataError

    retriever = run.retriever
    result = RunDiagnostics(label=run.label, fidelity={})
    encoder = getattr(retriever, "encoder", None)
    if encoder is not None:
        result.attention = collect_readout_attention(
            encoder, examples, batch_size=batch_size, progress=progress
        )
        result.summary = summarize(result.attention, width)
    else:
        result.notes.append(f"{type(retriever).__name__} has no LLM encoder: no attention metrics")
    if probe_examples is None:
        probe_examples = examples
    embeddings = retriever.user_vectors(probe_examples)  # (U, e)
    targets = probe_examples.targets
    try:
        _, matrix = dataset.features(features)
        target_features = matrix[targets]
    except DataError as exc:
        target_features = None
        result.notes.append(f"no text-alignment probe: {exc}")
    result.fidelity = semantic_fidelity(
        embeddings,
        target_categories=[dataset.categories[t] for t in targets],
        target_titles=[dataset.titles[t] for t in targets],
        target_features=target_features,
        config=ProbeConfig(seed=seed),
    )
    return result


def default_layers(num_layers: int) -> list[int]:
    """First, middle and last layer (deduplicated for shallow models)."""
    return sorted({0, num_layers // 2, num_layers - 1})


def write_report(
    results: list[RunDiagnostics],
    out_dir: Path,
    layers: list[int] | None = None,
    width: int | None = None,
    meta: dict[str, Any] | None = None,
) -> list[Path]:
    """diagnostics.json, diagnostics.md and the PNG figures for one run (or two compared)."""
    from karma.diagnostics.metrics import per_layer_markdown
    from karma.diagnostics.plots import plot_attention_heatmaps, plot_comparison, plot_layer_curves

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    attentions = {r.label: r.attention for r in results if r.attention is not None}
    summaries = {r.label: r.summary for r in results if r.summary is not None}
    if attentions:
        first_label, first = next(iter(attentions.items()))
        chosen = layers or default_layers(first.num_layers)
        bad = [layer for layer in chosen if not 0 <= layer < first.num_layers]
        if bad:
            from karma.errors import ConfigError

            raise ConfigError(
                f"--layers: {bad} out of range; the model has {first.num_layers} layers"
            )
        title = f"{first_label}: readout attention over history"
        written.append(
            plot_attention_heatmaps(first, chosen, out_dir / "heatmaps.png", width, title=title)
        )
        written.append(plot_layer_curves(summaries, out_dir / "layers.png"))
        if len(attentions) > 1:
            compare = out_dir / "compare.png"
            written.append(plot_comparison(attentions, summaries, chosen[-1], compare, width))
    report = {
        "meta": meta or {},
        "runs": {
            r.label: {"attention": r.summary, "fidelity": r.fidelity, "notes": r.notes}
            for r in results
        },
    }
    json_path = out_dir / "diagnostics.json"
    json_path.write_text(json.dumps(report, indent=2), encoding="utf-8")
    md_path = out_dir / "diagnostics.md"
    sections = ["# Semantic collapse diagnostics\n"]
    for r in results:
        sections.append(f"## {r.label}\n")
        if r.summary is not None:
            sections.append(
                f"Readout attention, {r.summary['num_users']} users, {r.summary['num_heads']} "
                f"heads averaged, barcode over the last {r.summary['width']} history slots.\n"
            )
            sections.append(per_layer_markdown(r.summary))
        sections.extend(f"- {note}" for note in r.notes)
        sections.append(fidelity_markdown(r.fidelity))
    md_path.write_text("\n".join(sections), encoding="utf-8")
    return [json_path, md_path, *written]


def fidelity_markdown(fidelity: dict[str, dict[str, float]]) -> str:
    """One line per probe: `probe: name=value, ...`."""
    lines = ["\nSemantic fidelity (held-out users):\n"]
    for probe, scores in fidelity.items():
        cells = ", ".join(
            f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in scores.items()
        )
        lines.append(f"- {probe}: {cells}")
    return "\n".join(lines) + "\n"


def diagnose_command(args: argparse.Namespace) -> int:
    from karma.data.dataset import PreparedDataset
    from karma.errors import ConfigError

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    if args.users < 2:
        raise ConfigError(f"--users: need at least 2 users, got {args.users}")
    if args.probe_users < 2:
        raise ConfigError(f"--probe-users: need at least 2 users, got {args.probe_users}")
    run_dirs = [args.run_dir] + ([args.compare] if args.compare else [])
    results: list[RunDiagnostics] = []
    data: Path | None = args.data
    dataset = examples = probe_examples = None
    for run_dir in run_dirs:  # one model in memory at a time
        run = load_run(run_dir)
        if data is None:
            data = run.data
        elif args.data is None and run.data.resolve() != data.resolve():
            raise ConfigError(
                f"--compare: {run_dir} was trained on {run.data}, not {data}; "
                "compare runs on the same dataset or pass --data"
            )
        if dataset is None or examples is None:
            dataset = PreparedDataset(data)
            split_examples = dataset.examples(args.split)
            examples = sample_examples(split_examples, args.users, args.seed)
            probe_examples = sample_examples(split_examples, args.probe_users, args.seed)
        log.info("diagnosing %s on %d %s users", run_dir, len(examples), args.split)
        result = diagnose_run(
            run,
            dataset,
            examples,
            args.features,
            args.batch_size,
            args.width,
            args.seed,
            probe_examples,
        )
        del run
        layers = result.attention.num_layers if result.attention is not None else None
        if args.layers and layers is not None and not all(0 <= k < layers for k in args.layers):
            raise ConfigError(
                f"--layers: {args.layers} out of range; {run_dir} has {layers} layers"
            )
        if any(r.label == result.label for r in results):
            result.label += " (compare)"
        results.append(result)
    out_dir = args.run_dir / OUTPUT_DIR
    meta = {
        "data": str(data),
        "split": args.split,
        "users": len(examples) if examples is not None else 0,
        "probe_users": len(probe_examples) if probe_examples is not None else 0,
        "seed": args.seed,
        "runs": [str(run_dir) for run_dir in run_dirs],
    }
    written = write_report(results, out_dir, args.layers, args.width, meta)
    if args.save_attention:
        for i, r in enumerate(results):
            if r.attention is not None:
                r.attention.save(str(out_dir / f"attention_{i}.pt"))
    for path in written:
        print(path)
    return 0
