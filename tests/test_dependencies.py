"""Every third-party module imported anywhere in src/karma is a declared dependency.

A fresh `pip install -e .` installs only what pyproject.toml declares, so an import that works
here only because something else pulled the package in (scipy did, once) breaks a new user's
machine. The scan reads every `import x` / `from x import y` with `ast` — at module level, inside
functions and inside `if TYPE_CHECKING:` blocks alike — and maps the top-level module name to
its distribution.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "karma"

# Import name -> distribution name, for packages whose two names differ. Needed where the
# package is not installed (packages_distributions() cannot know it then), and to make the
# common cases independent of what happens to be installed.
IMPORT_TO_DIST = {
    "yaml": "pyyaml",
    "faiss": "faiss-cpu",
    "sklearn": "scikit-learn",
    "PIL": "pillow",
    "google": "protobuf",
    "cv2": "opencv-python",
}

# Imported but deliberately not declared. Each entry must be guarded (try/except ImportError with
# a clear message) and justified here. Empty today: every import of src/karma is declared.
OPTIONAL_IMPORTS: dict[str, str] = {}


def normalize(name: str) -> str:
    """PEP 503 normalized distribution name: 'Faiss_CPU' -> 'faiss-cpu'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_dependencies() -> set[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    names = set()
    for requirement in pyproject["project"]["dependencies"]:
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
        assert match, f"unparseable requirement {requirement!r} in pyproject.toml"
        names.add(normalize(match.group(0)))
    return names


def imported_modules(path: Path) -> set[str]:
    """Top-level names of the absolute imports in one file (relative imports are karma's own)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def third_party_imports() -> dict[str, set[str]]:
    """{top-level module: files importing it} for every module outside the stdlib and karma."""
    found: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        for name in imported_modules(path):
            if name in sys.stdlib_module_names or name == "karma" or name == "__future__":
                continue
            found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def distributions(module: str) -> set[str]:
    """Distribution names that may provide `module` (normalized)."""
    dists = {normalize(d) for d in importlib.metadata.packages_distributions().get(module, [])}
    if module in IMPORT_TO_DIST:
        dists.add(normalize(IMPORT_TO_DIST[module]))
    return dists or {normalize(module)}


def test_scan_sees_imports_in_functions_and_type_checking_blocks(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "import numpy.linalg as la\n"
        "from . import sibling\n"
        "if TYPE_CHECKING:\n"
        "    from pandas import DataFrame\n"
        "def f():\n"
        "    import scipy.stats\n"
        "    from yaml import safe_load\n",
        encoding="utf-8",
    )
    assert imported_modules(source) == {"typing", "numpy", "pandas", "scipy", "yaml"}
    assert distributions("yaml") == {"pyyaml"}
    assert "faiss-cpu" in distributions("faiss")


def test_every_third_party_import_is_declared() -> None:
    declared = declared_dependencies()
    found = third_party_imports()
    assert {"torch", "numpy", "yaml"} <= set(found), "the scan found too little; is SRC right?"
    missing = [
        f"{file}: imports {module!r} (distribution {' or '.join(sorted(distributions(module)))})"
        for module, files in sorted(found.items())
        if module not in OPTIONAL_IMPORTS and not distributions(module) & declared
        for file in sorted(files)
    ]
    assert not missing, "undeclared in pyproject.toml dependencies:\n" + "\n".join(missing)


def test_optional_imports_are_still_imported() -> None:
    """A stale allow-list entry would silently excuse a future undeclared import."""
    assert set(OPTIONAL_IMPORTS) <= set(third_party_imports())
