"""Lazy re-exports for package `__init__` files, so `karma --help` does not import torch or faiss.

A package lists `{name: module}` and sets `__getattr__ = lazy_exports(__name__, exports)`: the
module is imported the first time one of its names is read from the package.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level `__getattr__` that imports `exports[name]` and returns its `name`."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    return __getattr__
