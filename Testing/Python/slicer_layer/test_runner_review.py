"""GastricPropagateLib's child-process run path, from a review: the retry of a run whose worker died after writing its
outputs, and the environment the launchers give the child."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from scene_helpers import (  # noqa: F401  (fixtures are used by name)
    assertSnapshotsEqual,
    case,
    logic,
    tinyWeights,
)
from GastricPropagateLib.launchers import PopenLauncher, childEnvironment

pytestmark = pytest.mark.slicer

# The first worker's stand-in: it takes the run's request, writes the mask as a worker does just before its RESULT
# line (the outputs are in place), and dies then, before answering.
DIES_AFTER_WRITING = ("import json, os, signal, sys; request = json.loads(sys.stdin.readline()); "
                      "open(request['output'], 'wb').write(b'written before the crash'); "
                      "os.kill(os.getpid(), signal.SIGKILL)")


class DiesOnceAfterWriting(PopenLauncher):
    """Starts the stand-in above first, then the real worker."""

    def __init__(self) -> None:
        self.starts = 0

    def start(self, program, arguments, environment, *rest):
        self.starts += 1
        if self.starts == 1:
            return super().start(sys.executable, ["-c", DIES_AFTER_WRITING], environment, *rest)
        return super().start(program, arguments, environment, *rest)


def test_a_run_retried_after_its_worker_died_having_written_its_outputs_replaces_them(case, logic):
    """The retry sent the same request to the new worker, which refused to replace the outputs the dead one had
    written ("already exists ... --overwrite"): the retry failed with an input error about a file of our own."""
    logic.launcher = DiesOnceAfterWriting()
    prepared = logic.prepare(case.volume, case.segmentation, case.paintedId)
    before = case.snapshot()
    job = logic.start(prepared)
    assert job.wait(timeout=300)
    result = job.result()
    assert logic.launcher.starts == 2 and job.restarts == 1 and "retried" in job.notice
    np.testing.assert_array_equal(result.mask[case.paintedSlice] > 0, case.annotation[case.paintedSlice] > 0)
    assert not job.folder.exists()
    assertSnapshotsEqual(before, case.snapshot())


def test_the_child_is_told_which_process_started_it():
    """The engine's parent watch takes a parent of 1 for an orphan unless process 1 started it (parent_watch.py)."""
    from gastric_propagate.protocol import EXIT_WITH_PARENT_ENV, PARENT_PID_ENV

    environment, _ = childEnvironment()
    assert environment[EXIT_WITH_PARENT_ENV] == "1" and environment[PARENT_PID_ENV] == str(os.getpid())


def test_the_child_writes_its_output_in_utf_8_whatever_the_console_s_encoding(tmp_path, monkeypatch):
    """The module reads the child's stdout and stderr files as UTF-8; a Windows child would write them in its ANSI code
    page (simulated here: ASCII), failing on "≥" and garbling "mm²"."""
    import subprocess

    monkeypatch.setenv("PYTHONIOENCODING", "ascii")
    environment, _ = childEnvironment()
    with open(tmp_path / "stdout.txt", "wb") as stdout:
        subprocess.run([sys.executable, "-c", "print('12 mm² ≥ 10 mm²')"], env=environment, stdout=stdout, check=True)
    assert (tmp_path / "stdout.txt").read_text(encoding="utf-8") == "12 mm² ≥ 10 mm²\n"


def test_cancel_after_the_worker_answered_but_before_the_result_was_read_drops_the_result_and_its_files(case, logic):
    """The same for a run served by the warm worker: the worker stays warm (it had answered), the folder goes."""
    from gastric_propagate.errors import Cancelled

    prepared = logic.prepare(case.volume, case.segmentation, case.paintedId)
    job = logic.start(prepared)
    assert job.wait(timeout=300)
    job.cancel()
    assert job.cancelled() and not job.folder.exists()
    with pytest.raises(Cancelled):
        job.result()
    assert logic.worker().running() and not logic.worker().busy
