"""The top-level API: every advertised name resolves, and importing karma stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import karma


@pytest.mark.parametrize("name", sorted(karma._EXPORTS))
def test_every_export_resolves(name: str) -> None:
    assert getattr(karma, name) is not None


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute"):
        karma.does_not_exist  # noqa: B018


def test_import_and_help_do_not_import_torch() -> None:
    code = "import sys, karma, karma.cli; karma.cli.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
