"""GastricPropagateLib.runner: the engine's segment command as a real child process (Popen, and QProcess where a
Qt binding is present): progress lines, the result read back, cancel at any stage, errors carried over."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from scene_helpers import (  # noqa: F401  (fixtures are used by name)
    assertSnapshotsEqual,
    case,
    logic,
    qtModule,
    runExpecting,
    slowRefinerWeights,
    tinyWeights,
    trainedLogic,
)
from GastricPropagateLib.run_output import Progress
from gastric_propagate.errors import Cancelled, InputError

pytestmark = pytest.mark.slicer


def test_job_runs_in_a_child_process_reporting_every_stage(case, logic):
    prepared = logic.prepare(case.volume, case.segmentation, case.paintedId)
    before = case.snapshot()
    seen = []
    job = logic.start(prepared, onProgress=seen.append)
    folder = job.folder
    assert folder.is_dir() and not job.isFinished()
    assert job.wait(timeout=300)
    result = job.result()

    stages = [p.stage for p in seen]
    assert [name for i, name in enumerate(stages) if i == 0 or stages[i - 1] != name] == \
        ["load", "read", "proposer", "refiner", "write"]
    proposer = [p for p in seen if p.stage == "proposer"]
    assert proposer[-1].done == proposer[-1].total >= 1
    assert job.progress == Progress("write", 1, 1)
    assert result.mask.shape == case.image.shape and result.device == "cpu"
    assert result.anchor_slices == [case.paintedSlice]
    _assertPaintedSliceKept(result, case)
    assert not folder.exists(), "the temporary files are removed once the result is read"
    assertSnapshotsEqual(before, case.snapshot())


@pytest.mark.parametrize("stage", ["start", "load", "refiner"])
def test_cancel_ends_the_process_at_any_stage_and_leaves_the_scene_as_it_was(case, logic, slowRefinerWeights,
                                                                             stage):
    import time

    logic.refinerPath = slowRefinerWeights["refiner"]
    prepared = logic.prepare(case.volume, case.segmentation, case.paintedId)
    before = case.snapshot()
    job = logic.start(prepared)
    if stage != "start":
        while not job.poll() and job.progress.stage != stage:
            time.sleep(0.002)
        assert job.progress.stage == stage and not job.isFinished(), "the child ended before reaching the stage"
    process, folder = job._process, job.folder
    assert process.running()
    job.cancel()
    assert job.isFinished() and job.cancelled()
    assert not process.running(), "the child process still runs after cancel"
    assert not folder.exists()
    with pytest.raises(Cancelled):
        job.result()
    assertSnapshotsEqual(before, case.snapshot())


def test_qprocess_launcher_runs_reports_and_cancels(qtModule, case, logic, slowRefinerWeights):
    """The launcher the Slicer application uses (``_QtProcess``: write, closeInput, running, exitCode, kill). qtModule
    comes first: the ``logic`` fixture's teardown closes the worker, and ``qt`` must still be importable then."""
    import time

    from GastricPropagateLib.launchers import QProcessLauncher
    from gastric_propagate.protocol import EXIT_OK

    logic.launcher = QProcessLauncher()
    prepared = logic.prepare(case.volume, case.segmentation, case.paintedId)
    for _ in range(2):  # two requests written to the same warm worker (a correction loop)
        job = logic.start(prepared)
        assert job.wait(timeout=300)
        assert job.progress == Progress("write", 1, 1)
        _assertPaintedSliceKept(job.result(), case)
    worker = logic.worker()
    assert worker.starts == 1 and worker.process.running(), "the warm worker waits for the next request"
    process = worker.process
    logic.close()  # closes the worker's input: it ends by itself (exit code 0), it is not killed
    assert not process.running() and process.exitCode() == EXIT_OK

    logic.refinerPath = slowRefinerWeights["refiner"]
    job = logic.start(prepared)
    while not job.poll() and job.progress.stage != "refiner":
        time.sleep(0.002)
    process = job._process
    assert process.running()
    job.cancel()
    assert not process.running() and not job.folder.exists()
    with pytest.raises(Cancelled):
        job.result()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_cancel_ends_the_engine_when_a_launcher_started_it_as_its_own_child(case, logic, slowRefinerWeights, tmp_path):
    """PythonSlicer is a launcher that starts the real interpreter as its own child and waits for it: Cancel kills the
    launcher, and the engine under it must end too, within 0.5 s (it watches its parent: parent_watch.py)."""
    import time

    from GastricPropagateLib.launchers import PopenLauncher

    pidFile = tmp_path / "engine.pid"

    class LauncherLikePythonSlicer(PopenLauncher):
        def start(self, program, arguments, environment, *rest):
            code = ("import subprocess, sys; child = subprocess.Popen(sys.argv[2:]); "
                    "open(sys.argv[1], 'w').write(str(child.pid)); sys.exit(child.wait())")
            return super().start(sys.executable, ["-c", code, str(pidFile), program, *arguments], environment, *rest)

    def engineRunning(pid):
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    logic.launcher = LauncherLikePythonSlicer()
    logic.refinerPath = slowRefinerWeights["refiner"]
    job = logic.start(logic.prepare(case.volume, case.segmentation, case.paintedId))
    while not job.poll() and job.progress.stage != "refiner":
        time.sleep(0.002)
    engine = int(pidFile.read_text())
    assert engineRunning(engine) and not job.isFinished()
    job.cancel()
    cancelled = time.monotonic()
    while engineRunning(engine) and time.monotonic() - cancelled < 3.0:
        time.sleep(0.01)
    assert not engineRunning(engine), "the engine runs on after Cancel killed its launcher"
    assert time.monotonic() - cancelled < 0.5
    with pytest.raises(Cancelled):
        job.result()


def test_engine_failure_in_the_child_is_reported_with_its_message(case, logic):
    """A CUDA request on a machine without CUDA: the child exits with code 2 and its message reaches the caller."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    logic.device = "cuda"
    runExpecting(InputError, "no CUDA device", logic, case, case.volume, case.segmentation, case.paintedId)


def test_the_child_finds_the_engine_when_a_launcher_replaces_pythonpath(case, logic):
    """PythonSlicer is a launcher that sets PYTHONPATH itself: the engine must still be found (the child starts in
    the engine's folder, which ``python -m`` puts first on sys.path)."""
    from GastricPropagateLib.launchers import PopenLauncher

    class PythonPathDroppingLauncher(PopenLauncher):
        def start(self, program, arguments, environment, *rest):
            environment = {name: value for name, value in environment.items() if name != "PYTHONPATH"}
            return super().start(program, arguments, environment, *rest)

    logic.launcher = PythonPathDroppingLauncher()
    prepared = logic.prepare(case.volume, case.segmentation, case.paintedId)
    result = logic.compute(prepared, timeout=300)
    _assertPaintedSliceKept(result, case)


class _EndedProcess:
    """A child that has already exited with code 0 (to read hand-written result files)."""

    def running(self):
        return False

    def exitCode(self):
        return 0

    def kill(self):
        pass

    def wait(self, timeoutSeconds):
        return True


def test_cancel_after_the_child_ended_but_before_its_result_was_read_drops_the_result_and_its_files(tmp_path):
    """Logic.compute cancels the job when anything interrupts its wait (Ctrl-C, a failing callback), also once the
    child has ended: cancel did nothing then, and the run's folder (its mask and report) stayed in the temp folder."""
    from gastric_propagate.data.mask_boxes import Grid
    from gastric_propagate.errors import Cancelled
    from GastricPropagateLib.runner import InferenceJob

    folder = tmp_path / "job"
    folder.mkdir()
    paths = {name: folder / name for name in ("output.nrrd", "report.json", "stdout.txt", "stderr.txt")}
    for path in paths.values():
        path.write_bytes(b"")
    job = InferenceJob(_EndedProcess(), folder, paths, Grid(size=(2, 2, 2), spacing=(1.0, 1.0, 1.0)))
    assert job.poll()
    job.cancel()
    assert job.cancelled() and not folder.exists()
    with pytest.raises(Cancelled):
        job.result()


@pytest.mark.parametrize("written", ["whole grid", "tumour's box"])
def test_result_carries_the_reports_slices_to_review_and_advice(tmp_path, written):
    import json

    import SimpleITK as sitk

    from gastric_propagate.data.annotation import occupied_box
    from gastric_propagate.data.mask_boxes import Grid, box_image
    from GastricPropagateLib.runner import InferenceJob

    names = ("image.nrrd", "annotation.nrrd", "output.nrrd", "report.json", "stdout.txt", "stderr.txt")
    paths = {name: tmp_path / name for name in names}
    mask = np.zeros((6, 5, 5), np.uint8)
    mask[1:5, 1:4, 2:4] = 1
    grid = Grid(size=(5, 5, 6), spacing=(0.8, 0.8, 2.5))
    image = sitk.GetImageFromArray(mask) if written == "whole grid" else box_image(mask, occupied_box(mask), grid)
    image.SetSpacing(grid.spacing)
    assert image.GetSize() == ((5, 5, 6) if written == "whole grid" else (2, 3, 4))
    sitk.WriteImage(image, str(paths["output.nrrd"]))
    paths["report.json"].write_text(json.dumps({
        "slice_confidence": {"1": 0.3, "2": 1.0, "3": 0.55, "4": 0.8}, "painted_slices": [2],
        "slices_to_review": [3, 1], "stop_reasons": {}, "seconds": 1.5, "device": "cpu",
        "advice": [{"kind": "larger_neighbour", "sentence": "Slice 4 looks 1.5 times as large as the painted slice 2.",
                    "painted_slice": 2, "slice": 4, "ratio": 1.5}]}))
    job = InferenceJob(_EndedProcess(), tmp_path, paths, grid)
    assert job.poll()
    result = job.result()
    np.testing.assert_array_equal(result.mask, mask)  # the box placed where it lies on the volume's grid
    assert result.slices_to_review == [1, 3]  # slice 3 (0.55) was cut back after a leak: the engine flags it
    assert result.least_confident_slices(1) == [1]
    assert result.advice == [{"kind": "larger_neighbour", "sentence": "Slice 4 looks 1.5 times as large as the painted "
                              "slice 2.", "painted_slice": 2, "slice": 4, "ratio": 1.5}]
    np.testing.assert_array_equal(result.mask, mask)


# ------------------------------------------------------------------------------- the warm worker


def _runToStage(job, stage, seen, start=0):
    """Polls ``job`` until ``seen[start:]`` (its progress) reaches ``stage``; the job must still run then."""
    import time

    while not job.poll() and stage not in [p.stage for p in seen[start:]]:
        time.sleep(0.002)
    assert not job.isFinished(), f"the run ended before reaching the {stage} stage"


def _slowRunAtRefiner(case, logic, slowWeights):
    """A run whose refiner is slow, started and polled until it reaches the refiner; (prepared, scene before, seen
    progress, job)."""
    logic.refinerPath = slowWeights["refiner"]
    prepared = logic.prepare(case.volume, case.segmentation, case.paintedId)
    before = case.snapshot()
    seen = []
    job = logic.start(prepared, onProgress=seen.append)
    _runToStage(job, "refiner", seen)
    return prepared, before, seen, job


def _assertPaintedSliceKept(result, case):
    np.testing.assert_array_equal(result.mask[case.paintedSlice] > 0, case.annotation[case.paintedSlice] > 0)


def test_two_runs_are_served_by_one_warm_worker_that_loads_the_weights_once(case, logic):
    prepared = logic.prepare(case.volume, case.segmentation, case.paintedId)
    before = case.snapshot()
    jobs, seen, results = [], [[], []], []
    for index in range(2):
        job = logic.start(prepared, onProgress=seen[index].append)
        assert job.wait(timeout=300)
        jobs.append(job)
        results.append(job.result())
    assert jobs[0].workerPid == jobs[1].workerPid and logic.worker().starts == 1
    assert [job.served for job in jobs] == [1, 2], "the second run was answered by the same process"
    assert "load" in [p.stage for p in seen[0]] and "load" not in [p.stage for p in seen[1]], \
        "the weights are loaded by the first run only"
    assert [p.stage for p in seen[1]][-1] == "write" and jobs[1].progress == Progress("write", 1, 1)
    assert [(job.restarts, job.notice) for job in jobs] == [(0, ""), (0, "")]
    np.testing.assert_array_equal(results[0].mask, results[1].mask)
    _assertPaintedSliceKept(results[1], case)
    assert not jobs[1].folder.exists()
    process = logic.worker().process
    assert process.running(), "the worker stays warm between runs"
    logic.close()
    assert not process.running()
    assertSnapshotsEqual(before, case.snapshot())


def test_a_worker_started_when_the_module_opens_serves_the_first_run_warm(case, logic):
    before = case.snapshot()
    assert logic.warmUp(), "no worker ran: one is started"
    worker = logic.worker()
    assert worker.running() and not logic.warmUp(), "a running worker is not started twice"
    deadline = time.monotonic() + 300
    while not worker.ready:  # the engine imported and the weights loaded, with no run asked for
        assert worker.running() and time.monotonic() < deadline, worker.stderrMessage()
        worker.readLines()
        time.sleep(0.05)
    prepared = logic.prepare(case.volume, case.segmentation, case.paintedId)
    seen = []
    job = logic.start(prepared, onProgress=seen.append)
    assert job.wait(timeout=300)
    result = job.result()
    assert "load" not in [p.stage for p in seen], "the first run found the weights loaded"
    assert job.served == 1 and worker.starts == 1 and job.notice == ""
    _assertPaintedSliceKept(result, case)
    assertSnapshotsEqual(before, case.snapshot())


def test_a_worker_killed_during_a_run_is_restarted_and_the_run_retried_once(case, logic, slowRefinerWeights):
    import os
    import signal

    prepared, before, seen, job = _slowRunAtRefiner(case, logic, slowRefinerWeights)
    first = job.workerPid
    os.kill(first, signal.SIGKILL)  # a crash of the worker, from outside
    assert job.wait(timeout=300)
    result = job.result()
    assert job.restarts == 1 and job.workerPid != first and logic.worker().starts == 2
    assert "restarted" in job.notice and "retried" in job.notice
    assert [p.stage for p in seen].count("load") >= 2, "the retry loaded the weights again, visibly"
    _assertPaintedSliceKept(result, case)
    assertSnapshotsEqual(before, case.snapshot())

    seen.clear()
    job = logic.start(prepared, onProgress=seen.append)  # the restarted worker serves the next run, warm
    assert job.wait(timeout=300) and job.result().mask.shape == case.image.shape
    assert "load" not in [p.stage for p in seen] and job.served == 2 and job.restarts == 0


def test_a_request_the_running_worker_did_not_take_is_retried_on_a_new_worker_not_waited_for(case, logic):
    before = case.snapshot()
    assert logic.warmUp()
    worker = logic.worker()
    process = worker.process
    write = process.write
    failures = []

    def failsOnce(data):
        if not failures:
            failures.append(data)
            return False  # the line did not go through, though the worker still runs
        return write(data)

    process.write = failsOnce
    prepared = logic.prepare(case.volume, case.segmentation, case.paintedId)
    job = logic.start(prepared)
    assert job.wait(timeout=300), "the run was retried, not left waiting for an answer"
    assert failures and job.restarts == 1 and "retried" in job.notice and worker.starts == 2
    _assertPaintedSliceKept(job.result(), case)
    assertSnapshotsEqual(before, case.snapshot())


def test_a_worker_that_dies_again_during_the_retry_fails_the_run_and_leaves_the_scene_as_it_was(
        case, logic, slowRefinerWeights):
    import os
    import signal

    _, before, seen, job = _slowRunAtRefiner(case, logic, slowRefinerWeights)
    os.kill(job.workerPid, signal.SIGKILL)
    while job.restarts == 0:
        assert not job.poll()
    restart = len(seen)
    _runToStage(job, "refiner", seen, start=restart)
    os.kill(job.workerPid, signal.SIGKILL)
    assert job.wait(timeout=300) and job.restarts == 1, "the run is retried once only"
    with pytest.raises(RuntimeError, match="ended again while retrying"):
        job.result()
    assert not job.folder.exists()
    assertSnapshotsEqual(before, case.snapshot())


def test_a_worker_that_cannot_be_started_again_fails_the_run_saying_why(case, logic, slowRefinerWeights):
    """The retry's start raises (the program is gone, say): the run fails with that reason, from ``poll`` (the
    panel's timer slot), and the scene stays as it was."""
    import os
    import signal

    _, before, seen, job = _slowRunAtRefiner(case, logic, slowRefinerWeights)

    def cannotStart():
        raise RuntimeError("Could not start 'PythonSlicer': No such file or directory")

    logic.worker().start = cannotStart
    os.kill(job.workerPid, signal.SIGKILL)
    assert job.wait(timeout=300) and job.restarts == 1
    with pytest.raises(RuntimeError, match="could not be started again: Could not start 'PythonSlicer'"):
        job.result()
    assert not job.folder.exists()
    assertSnapshotsEqual(before, case.snapshot())


def test_a_worker_killed_between_runs_is_replaced_visibly_by_the_next_run(case, logic):
    import os
    import signal

    prepared = logic.prepare(case.volume, case.segmentation, case.paintedId)
    job = logic.start(prepared)
    assert job.wait(timeout=300)
    job.result()
    os.kill(job.workerPid, signal.SIGKILL)
    assert logic.worker().process.wait(60.0)
    second = logic.start(prepared)
    assert second.workerPid != job.workerPid and "had ended" in second.notice
    assert second.wait(timeout=300) and second.restarts == 0
    _assertPaintedSliceKept(second.result(), case)


def test_cancel_ends_the_worker_and_the_next_run_starts_a_fresh_one(case, logic, slowRefinerWeights):
    prepared, before, seen, job = _slowRunAtRefiner(case, logic, slowRefinerWeights)
    process, pid = job._process, job.workerPid
    job.cancel()
    assert not process.running(), "cancel ends the worker process itself"
    with pytest.raises(Cancelled):
        job.result()
    assertSnapshotsEqual(before, case.snapshot())

    seen.clear()
    job = logic.start(prepared, onProgress=seen.append)
    assert job.workerPid != pid and job.notice == "", "a cancelled worker is replaced without a warning"
    assert job.wait(timeout=300)
    result = job.result()
    assert "load" in [p.stage for p in seen] and job.served == 1
    _assertPaintedSliceKept(result, case)
    assertSnapshotsEqual(before, case.snapshot())


def test_a_run_started_while_the_worker_is_busy_gets_a_worker_of_its_own(case, logic):
    prepared = logic.prepare(case.volume, case.segmentation, case.paintedId)
    first = logic.start(prepared)
    second = logic.start(prepared)
    assert second.workerPid != first.workerPid
    assert first.wait(timeout=300) and second.wait(timeout=300)
    for job in (first, second):
        _assertPaintedSliceKept(job.result(), case)
    assert not second.worker.running(), "the extra worker ends with its run"
    assert logic.worker().running() and logic.worker() is first.worker


def test_the_worker_is_sent_each_version_of_the_ct_once_and_never_an_outdated_one(case, trainedLogic):
    import sys
    from pathlib import Path

    import slicer

    from GastricPropagateLib.launchers import PopenLauncher
    from GastricPropagateLib.runner import startInference

    def run(prepared):
        job = trainedLogic.start(prepared)
        assert job.wait(timeout=300)
        return job, job.result()

    (first, before), (second, again) = (run(trainedLogic.prepare(case.volume, case.segmentation, case.paintedId))
                                        for _ in range(2))
    worker = trainedLogic.worker()
    assert first._request["image"] == second._request["image"], "the same CT is not written twice"
    assert sorted(worker.folder.glob("image-*.nrrd")) == [Path(first._request["image"])]
    assert second.served == 2 and np.array_equal(before.mask, again.mask)
    reach = np.nonzero(before.mask.reshape(len(before.mask), -1).any(axis=1))[0]
    assert reach.min() < case.paintedSlice - 2 or reach.max() > case.paintedSlice + 2

    voxels = slicer.util.arrayFromVolume(case.volume)  # the reader changes the CT (as a filter module would)
    far = np.abs(np.arange(len(voxels)) - case.paintedSlice) > 1
    voxels[far] = -1000
    slicer.util.arrayFromVolumeModified(case.volume)
    prepared = trainedLogic.prepare(case.volume, case.segmentation, case.paintedId)
    third, changed = run(prepared)
    assert third._request["image"] != first._request["image"] and third.served == 3
    assert sorted(worker.folder.glob("image-*.nrrd")) == [Path(third._request["image"])], "the old CT is removed"
    assert not changed.mask[far].any(), "the run saw the changed CT, air beyond the painted slice's neighbours"
    alone = startInference(prepared.image, prepared.spacingXYZ, prepared.annotation, prepared.options, device="cpu",
                           launcher=PopenLauncher(), python=sys.executable)  # a segment process of its own
    assert alone.wait(timeout=300)
    np.testing.assert_array_equal(changed.mask, alone.result().mask)


def test_the_worker_s_ct_file_is_written_once_per_key_and_only_the_latest_is_kept():
    from GastricPropagateLib.engine_worker import EngineWorker

    worker, writes = EngineWorker(), []

    def write(image, spacing, path):
        writes.append(path)
        path.write_bytes(b"ct")

    def files():
        return sorted(worker.folder.glob("image-*"))

    try:
        image = np.zeros((2, 3, 4), np.int16)
        first = worker.imageFile(image, (1, 1, 1), ("CT", 1), write)
        assert worker.imageFile(image, (1, 1, 1), ("CT", 1), write) == first and len(writes) == 1
        changed = worker.imageFile(image, (1, 1, 1), ("CT", 2), write)
        assert changed != first and files() == [changed]
        changed.unlink()  # removed behind the worker's back: written again
        assert worker.imageFile(image, (1, 1, 1), ("CT", 2), write).is_file() and len(writes) == 3
        unnamed = [worker.imageFile(image, (1, 1, 1), None, write) for _ in range(2)]
        assert unnamed[0] != unnamed[1] and files() == [unnamed[1]] and len(writes) == 5
    finally:
        worker.close()
    assert not worker.folder.exists()


def test_a_volume_sent_ahead_is_read_by_the_worker_before_the_run_which_then_sends_only_the_painted_slices(
        case, logic):
    import json
    import os
    from pathlib import Path

    import slicer

    before = case.snapshot()
    assert not logic.sendAhead(case.volume), "no worker runs yet: nothing to send to"
    logic.warmUp()
    worker = logic.worker()
    assert logic.sendAhead(case.volume) and not logic.sendAhead(case.volume), "each version once"
    (ahead,) = worker.folder.glob("image-*.nrrd")
    answers = []
    deadline = time.monotonic() + 300
    while not answers:  # the worker loads its weights, then reads the CT, with no run asked for
        assert worker.running() and time.monotonic() < deadline, worker.stderrMessage()
        answers = [json.loads(line[len("RESULT "):]) for line in worker.readLines() if line.startswith("RESULT ")]
        time.sleep(0.05)
    assert answers[0]["code"] == 0 and answers[0]["message"] == f"read {ahead}" and answers[0]["served"] == 1
    written = os.stat(ahead).st_mtime_ns

    job = logic.start(logic.prepare(case.volume, case.segmentation, case.paintedId))
    assert job.wait(timeout=300)
    result = job.result()
    assert Path(job._request["image"]) == ahead and os.stat(ahead).st_mtime_ns == written, \
        "the run named the file the worker read ahead, unchanged: it is served from the worker's memory"
    assert job.served == 2 and worker.starts == 1
    _assertPaintedSliceKept(result, case)
    assertSnapshotsEqual(before, case.snapshot())

    voxels = slicer.util.arrayFromVolume(case.volume)
    voxels[0] = -1000  # a new version of the CT (as a filter module would make it) is sent again, to a new file
    slicer.util.arrayFromVolumeModified(case.volume)
    assert logic.sendAhead(case.volume)
    assert sorted(worker.folder.glob("image-*.nrrd")) != [ahead] and not ahead.exists()
    worker.kill()  # a new process has not read it: the same file is sent to it again, not written again
    logic.warmUp()
    (again,) = worker.folder.glob("image-*.nrrd")
    assert logic.sendAhead(case.volume) and list(worker.folder.glob("image-*.nrrd")) == [again]
    case.volume.SetAndObserveImageData(None)  # no voxels: not a volume the engine can take, nothing is sent
    assert not logic.sendAhead(case.volume)


def test_a_worker_still_loading_is_ended_at_once_when_closed_not_waited_for(tmp_path):
    """It reads its input only once its weights are loaded: closing its input would wait out the whole timeout on
    Slicer's main thread (a device changed right after the module opened)."""
    import time

    from GastricPropagateLib.engine_worker import EngineWorker

    from GastricPropagateLib.launchers import PopenLauncher, childEnvironment

    worker = EngineWorker()
    script = tmp_path / "loading.py"
    script.write_text("import time\ntime.sleep(60)\n")  # a stand-in worker that never becomes ready
    environment, searchPath = childEnvironment()
    worker.process = PopenLauncher().start(sys.executable, [str(script)], environment, worker.folder / "out.txt",
                                           worker.folder / "err.txt", searchPath)
    started = time.monotonic()
    worker.close()
    assert time.monotonic() - started < 2.0 and not worker.process.running() and not worker.folder.exists()


def test_weights_written_again_at_the_same_path_get_a_new_worker(tmp_path):
    import os

    from GastricPropagateLib.engine_worker import EngineWorker

    path = tmp_path / "proposer.pt"
    path.write_bytes(b"first training")
    worker = EngineWorker(proposerPath=path)
    try:
        assert worker.matches(proposerPath=path)
        path.write_bytes(b"another training, same name")
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
        assert not worker.matches(proposerPath=path), "the worker would serve the old weights"
    finally:
        worker.close()


def test_a_run_whose_worker_was_replaced_meanwhile_still_delivers_and_the_old_worker_then_ends(case, logic):
    """Settings changed while a run holds the worker (batch use): the run finishes on it, then it is closed."""
    prepared = logic.prepare(case.volume, case.segmentation, case.paintedId)
    job = logic.start(prepared)
    old = job.worker
    logic.device = "cpu" if logic.device != "cpu" else "auto"
    assert logic.worker() is not old and old.retired and old.running()
    assert job.wait(timeout=300)
    _assertPaintedSliceKept(job.result(), case)
    assert not old.running() and not old.folder.exists()


def test_folders_of_a_slicer_that_ended_are_swept_with_the_ct_in_them(tmp_path, monkeypatch):
    """The worker's folder and a run's own folder of a Slicer that crashed hold a patient's CT: the next session
    removes them. Those of a process still there, of another host (a shared temporary folder) or without an owner
    file are left alone."""
    import os
    import socket
    import subprocess
    import tempfile

    from GastricPropagateLib import temp_folders

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    host = socket.gethostname()
    folders = {}
    for name, owner in (("worker-dead", f"{host}\n{gone}\n"), ("run-dead", f"{host}\n{gone}\n"),
                        ("worker-alive", f"{host}\n{os.getpid()}\n"), ("worker-elsewhere", f"another-host\n{gone}\n"),
                        ("older-version", None)):
        folder = folders[name] = tmp_path / (temp_folders.FOLDER_PREFIX + name)
        folder.mkdir()
        (folder / "image-1.nrrd").write_bytes(b"a patient's CT")
        if owner is not None:
            (folder / temp_folders.OWNER_FILE).write_text(owner)
    made = temp_folders.makeOwnedFolder()  # as the worker and each run make theirs: owned by this process
    assert made.parent == tmp_path
    if os.name != "posix":
        assert temp_folders.sweepStaleFolders(minimumAgeSeconds=0) == []
        return
    swept = temp_folders.sweepStaleFolders(minimumAgeSeconds=0)
    assert sorted(swept) == sorted([folders["worker-dead"], folders["run-dead"]])
    assert all(folders[name].exists() for name in ("worker-alive", "worker-elsewhere", "older-version"))
    assert made.exists() and temp_folders.sweepStaleFolders(minimumAgeSeconds=3600) == []


def test_a_worker_whose_folder_was_removed_behind_its_back_makes_it_again(case, logic):
    import shutil

    prepared = logic.prepare(case.volume, case.segmentation, case.paintedId)
    first = logic.start(prepared)
    assert first.wait(timeout=300)
    shutil.rmtree(first.worker.folder)  # a cleaner of the temporary folder
    first.worker.kill()
    again = logic.start(prepared)
    assert again.wait(timeout=300)
    _assertPaintedSliceKept(again.result(), case)
