"""The GPU benchmark scripts (benchmarks/gpu/) in their --smoke mode: tiny data, tiny backbone, CPU.

No GPU figure is checked here (CI has no GPU); these keep the scripts a GPU session will run
without fixing from breaking: the throughput measurement of both steps, and the quality runs'
pause at a chunk limit, exact resume, test evaluation and paired comparison.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

GPU = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu"


def run_script(name: str, monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    """`python benchmarks/gpu/<name>.py ARGV --smoke` in this process (no second torch import)."""
    monkeypatch.syspath_prepend(str(GPU))
    monkeypatch.delenv("OUT", raising=False)
    monkeypatch.setattr(sys, "argv", [name, *argv, "--smoke"])
    module = __import__(name)
    try:
        module.main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_throughput_smoke_times_both_steps_with_flops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = run_script(
        "throughput", monkeypatch, "--out", str(tmp_path), "--no-compile", "--batches", "2", "4"
    )
    assert code == 0
    result = json.loads((tmp_path / "throughput.json").read_text())
    assert result["matmul_peak"]["flops_per_s"] > 0
    for kind in ("action-only", "karma"):
        variant = result["variants"][kind]
        assert variant["search"]["largest_batch"] == 4
        timed = variant["eager"]["4"]
        assert timed["tokens_per_s"] > 0 and timed["flops_per_step"] > 0
        assert timed["mfu"] == pytest.approx(
            timed["achieved_flops_per_s"] / result["matmul_peak"]["flops_per_s"]
        )
    # The KARMA step does strictly more work than the action-only step on the same batches.
    karma, action = (result["variants"][k]["eager"]["4"] for k in ("karma", "action-only"))
    assert karma["flops_per_step"] > action["flops_per_step"]
    assert set(result["plan_step_seconds"]) == {"action-only", "karma", "karma_warmup"}


def test_quality_smoke_pauses_resumes_evaluates_and_compares(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = ["--out", str(tmp_path)]
    assert (
        run_script("quality", monkeypatch, "train", "action-only", "--chunk-steps", "2", *out) == 3
    )
    state = tmp_path / "smoke-state" / "runs" / "action-only"
    assert not (state / "done.json").exists()
    assert sorted(p.name for p in (state / "checkpoints").iterdir())[-1] == "step_0000002"
    assert run_script("quality", monkeypatch, "train", "action-only", "karma", *out) == 0
    done = json.loads((state / "done.json").read_text())
    assert done["status"] == "complete" and done["steps"] == 6
    assert run_script("quality", monkeypatch, "evaluate", "action-only", "karma", *out) == 0
    assert run_script("quality", monkeypatch, "compare", *out) == 0
    compare = json.loads((tmp_path / "quality_compare.json").read_text())
    assert [row["run"] for row in compare["rows"]] == ["action-only", "karma"]
    paired = compare["rows"][1]["paired_vs_first"]
    assert set(paired) == {"hr@10", "ndcg@10", "hr@200"}
    for metric, value in paired.items():
        low, high = value["ci95"]
        assert low <= value["difference"] <= high, metric
    ranks = json.loads((tmp_path / "quality_karma.json").read_text())["test"]["per_user"]
    assert len(ranks["greater"]) == len(ranks["user_id"]) == 24
