"""GastricPropagateLib.run_output: what a run writes, read back (the child process itself: test_runner.py)."""

from __future__ import annotations

import pytest

import scene_helpers  # noqa: F401  (skips without slicer-core; puts GastricPropagate/ on sys.path)
from GastricPropagateLib.run_output import Progress, parseProgressLine

pytestmark = pytest.mark.slicer


def test_progress_line_parsing():
    assert parseProgressLine("PROGRESS stage=proposer done=3 total=20\n") == Progress("proposer", 3, 20)
    assert parseProgressLine("tumour: 12.0 mL on slices 3-9") is None
    assert parseProgressLine("PROGRESS stage=proposer done=x total=20") is None
