"""`.ci/run` on a stand-in README: the command runs in a brand-new virtualenv that sees neither the
machine's site-packages nor PYTHONPATH, on a copy of the tree, and its exit status is CI's.

One run (a venv with pip costs ~6 s of CPU). The real README command installs torch and runs the
whole suite; exit 0 on success is what `bash .ci/run` itself shows.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def ci_run(tmp_path: Path, test_command: str) -> subprocess.CompletedProcess[str]:
    """Run .ci/run in a checkout whose README's second set-up command is `test_command`."""
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy(ROOT / ".ci" / "run", repo / ".ci" / "run")
    (repo / "README.md").write_text(
        f"# x\n\n```bash\necho first command\n{test_command}\n```\n", encoding="utf-8"
    )
    (repo / "marker.txt").write_text("copied\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TMPDIR": str(tmp_path)}
    return subprocess.run(
        ["bash", str(repo / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=300
    )


def test_runs_the_second_command_in_a_fresh_venv_on_a_copy(tmp_path: Path) -> None:
    # Exit 7 only if: in a venv, on a copy of the tree (not the checkout), karma not importable.
    check = (
        "import sys, os, importlib.util as u; "
        "assert sys.prefix != sys.base_prefix; "
        f"assert os.getcwd() != {str(tmp_path / 'repo')!r}; "
        "assert open('marker.txt').read() == 'copied\\n'; "
        "assert u.find_spec('karma') is None and u.find_spec('pytest') is None; "
        "sys.exit(7)"
    )
    result = ci_run(tmp_path, f'python -c "{check}"')
    assert result.returncode == 7, result.stdout + result.stderr
    assert f'+ python -c "{check}"' in result.stdout
    assert "fresh virtualenv" in result.stdout
    assert "CI failed: exit status 7" in result.stderr
    assert not list(tmp_path.glob("karma-ci.*")), "the temporary virtualenv was not removed"
