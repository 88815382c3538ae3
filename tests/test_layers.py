"""The layer contract (pyproject.toml [tool.importlinter]) holds, covers every module, and bites."""

from __future__ import annotations

import os
import pkgutil
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import karma

ROOT = Path(__file__).resolve().parents[1]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
    "importlinter"
]
# Packages split across layers: only their (import-light) __init__ sits outside the contract.
SPLIT_PACKAGES = {"karma", "karma.train", "karma.eval", "karma.diagnostics", "karma.serve"}
LINT = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"

pytest.importorskip("importlinter")


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on the karma package under `root/src`, with `root/pyproject.toml`."""
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    return subprocess.run(
        [sys.executable, "-c", LINT], cwd=root, env=env, capture_output=True, text=True
    )


def layer_modules() -> list[str]:
    layers = next(c for c in CONFIG["contracts"] if c["id"] == "layers")["layers"]
    return [m.strip() for layer in layers for m in layer.replace(":", "|").split("|")]


def test_the_layer_contracts_hold() -> None:
    out = lint(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def test_every_module_has_a_layer() -> None:
    placed = layer_modules()
    root = Path(karma.__file__).parent
    modules = [m.name for m in pkgutil.walk_packages([str(root)], prefix="karma.")]
    missing = [
        name
        for name in modules
        if name not in SPLIT_PACKAGES
        and not name.startswith("karma.testing")
        and not any(name == p or name.startswith(p + ".") for p in placed)
    ]
    assert not missing, f"place these modules in a layer in pyproject.toml: {missing}"


def test_an_upward_import_inside_a_function_breaks_the_contract(tmp_path: Path) -> None:
    shutil.copytree(Path(karma.__file__).parent, tmp_path / "src" / "karma")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    encoder = tmp_path / "src" / "karma" / "model" / "encoder.py"
    with encoder.open("a", encoding="utf-8") as handle:
        handle.write(
            "\n\ndef _dodge():\n    from karma.runs import open_run\n\n    return open_run\n"
        )
    out = lint(tmp_path)
    assert out.returncode != 0
    assert "karma.model.encoder -> karma.runs" in out.stdout
    assert "core > data BROKEN" in out.stdout.replace("\n", " ")
