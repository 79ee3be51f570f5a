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


def test_a_child_that_flooded_stderr_is_read_from_its_end_only(tmp_path, monkeypatch):
    """Its error line is the last thing it prints; the panel reads the file on Slicer's main thread."""
    from GastricPropagateLib import run_output

    path = tmp_path / "stderr.txt"
    path.write_bytes(b"error: an early error, not the last one\n" + b"noise line\n" * 200_000
                     + b"error: the last error\n")
    assert run_output.stderrMessage(path) == "the last error"
    read = []
    real_open = open

    def counting_open(file, mode="r", *args, **kwargs):
        stream = real_open(file, mode, *args, **kwargs)
        real_read = stream.read
        stream.read = lambda *a: read.append(len(data := real_read(*a))) or data
        return stream

    monkeypatch.setattr("builtins.open", counting_open)
    run_output.stderrMessage(path)
    assert read and sum(read) <= run_output.STDERR_TAIL_BYTES < path.stat().st_size
    path.write_bytes(b"Traceback\nValueError: something\n")
    assert run_output.stderrMessage(path) == "Traceback\nValueError: something"
