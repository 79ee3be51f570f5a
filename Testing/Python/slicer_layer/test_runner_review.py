"""GastricPropagateLib's child-process run path, from reviews: the retry of a run whose worker died after writing its
outputs, a worker that ended idle or by Ctrl-C, a second worker's end, a failed restart, a CT file whose writing
failed, and the environment the launchers give the child."""

from __future__ import annotations

import os
import sys
import time

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
DIES_AFTER_WRITING = ("import json, os, signal, sys; print('READY {}', flush=True); "
                      "request = json.loads(sys.stdin.readline()); "
                      "open(request['output'], 'wb').write(b'written before the crash'); "
                      "os.kill(os.getpid(), signal.SIGKILL)")


class StandIns(PopenLauncher):
    """Starts these children in turn, the last one for any further start: a script (run as ``python -c``), None (the
    real worker) or an exception (raised, as by a launcher that cannot start the program)."""

    def __init__(self, *children) -> None:
        self.children, self.starts = children, 0

    def start(self, program, arguments, environment, *rest):
        child = self.children[min(self.starts, len(self.children) - 1)]
        self.starts += 1
        if isinstance(child, BaseException):
            raise child
        if child is None:
            return super().start(program, arguments, environment, *rest)
        return super().start(sys.executable, ["-c", child], environment, *rest)


def _runRetriedOnce(case, logic, firstChild: str):
    """A run whose first worker is ``firstChild`` and whose retry is the real worker: the retry's result keeps the
    painted slice, and the scene is as it was; returns the job."""
    logic.launcher = StandIns(firstChild, None)
    prepared = logic.prepare(case.volume, case.segmentation, case.paintedId)
    before = case.snapshot()
    job = logic.start(prepared)
    assert job.wait(timeout=300)
    result = job.result()
    assert logic.launcher.starts == 2 and job.restarts == 1
    np.testing.assert_array_equal(result.mask[case.paintedSlice] > 0, case.annotation[case.paintedSlice] > 0)
    assertSnapshotsEqual(before, case.snapshot())
    return job


def test_a_run_retried_after_its_worker_died_having_written_its_outputs_replaces_them(case, logic):
    """The retry sent the same request to the new worker, which refused to replace the outputs the dead one had
    written ("already exists ... --overwrite"): the retry failed with an input error about a file of our own."""
    job = _runRetriedOnce(case, logic, DIES_AFTER_WRITING)
    assert "retried" in job.notice
    assert not job.folder.exists()


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


# A worker whose idle timeout comes as the request arrives: it has taken the line and ends (exit code 0) unanswered.
ENDS_IDLE_AS_THE_REQUEST_ARRIVES = "import sys; print('READY {}', flush=True); sys.stdin.readline()"


def test_a_worker_that_ended_idle_as_the_request_arrived_is_replaced_saying_so_not_as_a_crash(case, logic):
    job = _runRetriedOnce(case, logic, ENDS_IDLE_AS_THE_REQUEST_ARRIVES)
    assert "idle" in job.notice and "retried" in job.notice and "exit code" not in job.notice, job.notice


# A worker interrupted by Ctrl-C (the terminal's SIGINT) during the run: the command line's exit code, or the signal.
INTERRUPTED = {
    "exit code 130": "import sys; sys.stdin.readline(); sys.exit(130)",
    "SIGINT": ("import os, signal, sys; sys.stdin.readline(); signal.signal(signal.SIGINT, signal.SIG_DFL); "
               "os.kill(os.getpid(), signal.SIGINT)"),
}


@pytest.mark.parametrize("ending", [
    "exit code 130",
    pytest.param("SIGINT", marks=pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")),
])
def test_a_worker_interrupted_by_ctrl_c_cancels_the_run_rather_than_retry_it(case, logic, ending):
    from gastric_propagate.errors import Cancelled

    logic.launcher = StandIns(INTERRUPTED[ending], None)
    before = case.snapshot()
    job = logic.start(logic.prepare(case.volume, case.segmentation, case.paintedId))
    assert job.wait(timeout=60)
    with pytest.raises(Cancelled):
        job.result()
    assert logic.launcher.starts == 1 and job.restarts == 0 and job.notice == ""
    assert not logic.worker().endedUnexpectedly(), "the next run replaces it without a warning, as after a cancel"
    assert not job.folder.exists()
    assertSnapshotsEqual(before, case.snapshot())


# A worker that answers its request, then is slow to end once its input closes (as an interpreter with torch loaded).
ANSWERS_THEN_ENDS_SLOWLY = (
    "import json, sys, time; print('READY {}', flush=True); request = json.loads(sys.stdin.readline()); "
    "print('RESULT ' + json.dumps({'id': request['id'], 'code': 2, 'message': 'refused', 'served': 1}), flush=True); "
    "sys.stdin.readline(); time.sleep(60)")


def test_a_second_worker_is_ended_once_it_answered_without_poll_waiting_for_it(case, logic):
    """The worker of a run started while the session's was busy is closed by the ``poll()`` that reads its answer,
    from the panel's timer slot on Slicer's main thread: that poll waited up to 5 s for the process to end."""
    from gastric_propagate.errors import InputError

    logic.launcher = StandIns(ANSWERS_THEN_ENDS_SLOWLY)
    prepared = logic.prepare(case.volume, case.segmentation, case.paintedId)
    first = logic.start(prepared)
    second = logic.start(prepared)
    process = second.worker.process
    assert second.worker is not first.worker
    deadline = time.monotonic() + 60
    while True:
        started = time.monotonic()
        finished = second.poll()
        took = time.monotonic() - started
        if finished:
            break
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert took < 2.0, f"poll() waited {took:.1f} s for the second worker to end"
    assert not process.running(), "no worker is left running"
    with pytest.raises(InputError, match="refused"):
        second.result()
    first.cancel()
    assert not second.worker.folder.exists()


CRASHES_AS_THE_REQUEST_ARRIVES = "import sys; print('READY {}', flush=True); sys.stdin.readline(); sys.exit(1)"
CANNOT_START = RuntimeError("Could not start 'PythonSlicer': No such file or directory")


def test_a_worker_that_ended_between_runs_and_cannot_be_started_again_says_so_and_what_to_do(case, logic, caplog):
    """The notice "had ended ...; a new one was started" was given before the start, which then failed."""
    import logging

    logic.launcher = StandIns("import sys; sys.exit(1)", CANNOT_START)
    assert logic.warmUp()
    worker = logic.worker()
    assert worker.process.wait(60) and worker.endedUnexpectedly()
    with caplog.at_level(logging.WARNING), pytest.raises(RuntimeError) as raised:
        logic.start(logic.prepare(case.volume, case.segmentation, case.paintedId))
    message = str(raised.value)
    assert "had ended (exit code 1) and could not be started again" in message and str(CANNOT_START) in message
    assert "Restart Slicer" in message
    assert "a new one was started" not in caplog.text and not worker.busy


def test_a_worker_that_ended_during_the_run_and_cannot_be_started_again_says_what_to_do(case, logic):
    logic.launcher = StandIns(CRASHES_AS_THE_REQUEST_ARRIVES, CANNOT_START)
    job = logic.start(logic.prepare(case.volume, case.segmentation, case.paintedId))
    assert job.wait(timeout=60) and job.restarts == 1
    with pytest.raises(RuntimeError, match="could not be started again: Could not start 'PythonSlicer'") as raised:
        job.result()
    assert "Restart Slicer" in str(raised.value)



def test_a_worker_that_fails_while_it_starts_fails_the_run_once_without_a_retry(case, logic):
    """An ImportError or a broken package ends the worker (exit code 1) before READY: it never took the run, and a
    retry would start it, and fail, again; the notice called it "ended during the run"."""
    logic.launcher = StandIns("import sys; sys.stderr.write('ImportError: onnxruntime is broken\\n'); sys.exit(1)",
                              None)
    before = case.snapshot()
    job = logic.start(logic.prepare(case.volume, case.segmentation, case.paintedId))
    assert job.wait(timeout=60)
    with pytest.raises(RuntimeError, match="ended while it started") as raised:
        job.result()
    assert "onnxruntime is broken" in str(raised.value) and "Restart Slicer" in str(raised.value)
    assert str(raised.value).startswith("The engine's worker process ended while it started (exit code 1)")
    assert "failed (exit code" not in str(raised.value)  # one exit code, the worker's own
    assert logic.launcher.starts == 1 and job.restarts == 0 and job.notice == ""
    assertSnapshotsEqual(before, case.snapshot())


def test_a_worker_killed_while_it_starts_says_to_click_again_not_to_reinstall(case, logic):
    """Killed (the system's out-of-memory killer, another program) before READY: a new one may well start."""
    logic.launcher = StandIns("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", None)
    job = logic.start(logic.prepare(case.volume, case.segmentation, case.paintedId))
    assert job.wait(timeout=60)
    with pytest.raises(RuntimeError, match=r"^The engine's worker process ended while it started \(exit code none: "
                                           r"it was killed\).*Click Propagate again to start a new one") as raised:
        job.result()
    assert "reinstall" not in str(raised.value)

@pytest.mark.parametrize("interruption", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_ct_file_whose_writing_failed_or_was_interrupted_is_removed_at_once(interruption):
    from GastricPropagateLib.engine_worker import EngineWorker

    worker, image = EngineWorker(), np.zeros((2, 3, 4), np.int16)

    def writesHalf(image, spacing, path):
        path.write_bytes(b"half a CT")
        raise interruption

    def write(image, spacing, path):
        path.write_bytes(b"a CT")

    try:
        with pytest.raises(type(interruption)):
            worker.imageFile(image, (1, 1, 1), ("CT", 1), writesHalf)
        assert not list(worker.folder.glob("image-*")), "the half-written file is removed at once, not at close()"
        path = worker.imageFile(image, (1, 1, 1), ("CT", 1), write)
        assert path.read_bytes() == b"a CT" and list(worker.folder.glob("image-*")) == [path]
    finally:
        worker.close()


def test_a_changed_ct_is_written_anew_even_while_the_old_file_cannot_be_removed(monkeypatch):
    """On Windows the worker may still hold the previous CT's file open (reading it for a preload): removing it
    fails, and the new run must not fail with it; the old file goes with the worker's folder."""
    from pathlib import Path

    from GastricPropagateLib.engine_worker import EngineWorker

    worker, image = EngineWorker(), np.zeros((2, 3, 4), np.int16)

    def write(image, spacing, path):
        path.write_bytes(b"a CT")

    try:
        old = worker.imageFile(image, (1, 1, 1), ("CT", 1), write)
        unlink = Path.unlink
        monkeypatch.setattr(Path, "unlink", lambda path, missing_ok=False: (_ for _ in ()).throw(
            PermissionError(13, "in use by another process")) if path == old else unlink(path, missing_ok))
        new = worker.imageFile(image, (1, 1, 1), ("CT", 2), write)
        assert new != old and new.read_bytes() == b"a CT"
        monkeypatch.setattr(Path, "unlink", unlink)
    finally:
        worker.close()
    assert not worker.folder.exists(), "both files went with the folder"
