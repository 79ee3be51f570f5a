"""The code style the project holds itself to, checked by ruff (configured in pyproject.toml): lines of at most
120 characters, and pyflakes' checks (unused imports and variables, undefined names, redefinitions)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _ruff() -> str:
    pytest.importorskip("ruff", reason="ruff is in the test extra: pip install -e '.[test]'")
    beside_python = Path(sys.executable).with_name("ruff")
    return str(beside_python) if beside_python.is_file() else shutil.which("ruff") or "ruff"


def test_the_code_passes_ruff():
    result = subprocess.run([_ruff(), "check", "--no-cache", "--output-format", "concise", str(REPO)],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_finds_a_long_line(tmp_path):
    """The check can fail: a file with a 121-character line and an unused import is reported."""
    (tmp_path / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
    (tmp_path / "bad.py").write_text("import os\n" + "x = '" + "a" * 115 + "'\n")
    result = subprocess.run([_ruff(), "check", "--no-cache", "--output-format", "concise", str(tmp_path)],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1
    assert "E501" in result.stdout and "F401" in result.stdout
