"""The engine's run in a child process: input files, ``segment`` or a worker request, progress, cancel, result.

Data goes one way. ``startInference`` writes the arrays the Logic read from the scene (CT, painted segment) to
NRRD files in a temporary folder and sends them as one request to the session's ``EngineWorker`` (``python -m
gastric_propagate.cli serve``, started on the first run, weights loaded once; docs/cli.md) or, without a worker,
starts ``python -m gastric_propagate.cli segment ... --progress`` on them. The child writes its mask and a JSON
report into the same folder; ``InferenceJob.result()`` reads them back. The painted segment and the mask travel as
the boxes that hold their voxels, on the CT's grid (``gastric_propagate.data.mask_boxes``): a few kB each, where
the whole grid took tens of milliseconds to write and read. A worker's CT goes into the worker's own
folder instead, once per version of the volume (``EngineWorker.imageFile``). A worker that dies during a run is
restarted and the run retried once (``WorkerJob.notice`` says so); cancel ends the worker, and the next run starts a
new one.
The worker's client (``EngineWorker``, ``WorkerJob``, ``requestOptions``) lives in ``engine_worker.py``.

The process is started by an injected launcher (``launchers.py``) that sends the child's stdout and stderr to files
in the job's folder, so ``InferenceJob.poll()`` only reads files (``run_output.py``): it never blocks, needs no
reader thread and no event loop. ``InferenceJob.cancel()`` ends the child at any stage (loading, proposer, refiner,
writing) and removes the folder; nothing in the scene has changed by then.

Exit codes of the CLI (``gastric_propagate.protocol``): 0 success, 2 bad input, 3 unusable weights, 130
cancelled; the message is on stderr.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from gastric_propagate.errors import Cancelled, InputError, WeightsError
from gastric_propagate.protocol import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_OK, EXIT_WEIGHTS

from .i18n import _
from .launchers import PopenLauncher, childEnvironment, pythonExecutable
from .parameters import commandLineArguments
from .run_output import Progress, RunResult, newLines, parseProgressLine, readRunResult, stderrMessage
from .temp_folders import makeOwnedFolder

if TYPE_CHECKING:  # engine_worker imports this module: only its annotation is needed here
    from gastric_propagate.data.mask_boxes import Grid  # imports SimpleITK: done when a run starts, not with Slicer

    from .engine_worker import EngineWorker

__all__ = ["InferenceJob", "exitCodeText", "startInference", "writeImage"]

logger = logging.getLogger(__name__)


def writeImage(image: np.ndarray, spacingXYZ, path: Path) -> None:
    """The CT's voxels (k, j, i) as the file the engine reads: this spacing, identity direction, origin 0."""
    import SimpleITK as sitk

    written = sitk.GetImageFromArray(np.ascontiguousarray(image))
    written.SetSpacing([float(s) for s in spacingXYZ])
    sitk.WriteImage(written, str(path), False)  # read by the child at once: speed over size


def startInference(image: np.ndarray, spacingXYZ, annotation: np.ndarray, options, *, device: str = "auto",
                   proposerPath=None, refinerPath=None, launcher=None, python: str | None = None,
                   onProgress: Callable[[Progress], None] | None = None,
                   worker: EngineWorker | None = None, imageKey=None) -> InferenceJob:
    """Writes the inputs to a temporary folder and starts the engine on them; returns the running job.

    Args:
        image: (k, j, i) CT voxels. annotation: (k, j, i), non-zero on the painted voxels.
        spacingXYZ: (i, j, k) spacing in mm. The files get this spacing and an identity direction: the engine
            works on the voxel grid, so the volume's own placement in RAS does not matter here.
        options: the engine's PropagationOptions.
        launcher: ``PopenLauncher()`` (default) or ``QProcessLauncher()``.
        python: the interpreter to run (default: ``pythonExecutable()``).
        onProgress: called with each new Progress as ``poll()`` reads it.
        worker: a warm ``EngineWorker``: the run is sent to it as a request (its device, weights, launcher and
            interpreter are used; the arguments above are not). None: a ``segment`` child process of its own.
        imageKey: names this version of the CT (it must change when the voxels or the spacing do): a worker that
            was sent the same key before gets the file written then, and serves the run from the CT it kept in
            memory (``EngineWorker.imageFile``). None: the CT is written for this run alone.
    """
    from gastric_propagate.data.mask_boxes import Grid, write_box

    folder = makeOwnedFolder()  # swept by a later session if this Slicer crashes (temp_folders.py)
    try:
        paths = {name: folder / name for name in ("image.nrrd", "annotation.nrrd", "output.nrrd", "report.json",
                                                  "stdout.txt", "stderr.txt")}
        if worker is not None and not worker.busy:  # a busy worker's run goes to a sibling: a file of its own
            imagePath = worker.imageFile(image, spacingXYZ, imageKey, writeImage)
        else:
            imagePath = paths["image.nrrd"]
            writeImage(image, spacingXYZ, imagePath)
        # The files' grid: the volume's voxels with identity direction and origin 0, as writeImage writes them.
        grid = Grid(size=tuple(int(n) for n in np.shape(image)[::-1]), spacing=tuple(float(s) for s in spacingXYZ))
        write_box(annotation, grid, paths["annotation.nrrd"])  # the painted voxels' box, 0 / 1
        if worker is not None:
            from .engine_worker import WorkerJob, requestOptions

            request = {"image": str(imagePath), "annotation": str(paths["annotation.nrrd"]),
                       "output": str(paths["output.nrrd"]), "report": str(paths["report.json"]),
                       "crop_output": True, "options": requestOptions(options)}
            return WorkerJob(worker, folder, paths, grid, request, onProgress=onProgress)
        arguments = ["-m", "gastric_propagate.cli", "segment", "--image", str(paths["image.nrrd"]),
                     "--annotation", str(paths["annotation.nrrd"]), "--output", str(paths["output.nrrd"]),
                     "--report", str(paths["report.json"]), "--progress", "--crop-output",
                     *commandLineArguments(options, device=device, proposerPath=proposerPath,
                                          refinerPath=refinerPath)]
        environment, searchPath = childEnvironment()
        program = python or pythonExecutable()
        logger.info("GastricPropagate: starting %s %s", program, " ".join(arguments))
        # The child starts in the folder holding the engine: "python -m" puts it first on sys.path, so the engine
        # is found even where a launcher (PythonSlicer) sets PYTHONPATH itself.
        process = (launcher or PopenLauncher()).start(program, arguments, environment, paths["stdout.txt"],
                                                      paths["stderr.txt"], searchPath)
        process.closeInput()  # the segment command reads no input
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return InferenceJob(process, folder, paths, grid, onProgress=onProgress)


class InferenceJob:
    """One running child process. Poll it from a timer (GUI) or ``wait()`` for it (batch).

    Attributes:
        progress: the last Progress the child reported.
        startTime: ``time.monotonic()`` at start.
        failureExplained: the failure's message already says how the process ended (a worker's), so ``result``
            raises it as it is, not under "failed (exit code N)".
    """

    def __init__(self, process, folder: Path, paths: dict[str, Path], grid: Grid, *,
                 onProgress: Callable[[Progress], None] | None = None) -> None:
        self._process = process
        self.folder = folder
        self._paths = paths
        self._grid = grid  # the inputs' grid: the mask is read back onto it
        self.addedAdvice: list[dict] = []  # what the caller knows and the engine cannot (the volume's orientation)
        self._onProgress = onProgress
        self._stdoutOffset = 0
        self._finished = False
        self._cancelled = False
        self._closed = False
        self.progress = Progress()
        self.startTime = time.monotonic()
        self.failureExplained = False

    def elapsed(self) -> float:
        return time.monotonic() - self.startTime

    def isFinished(self) -> bool:
        return self._finished

    def cancelled(self) -> bool:
        return self._cancelled

    def _readProgress(self) -> None:
        path = self._paths["stdout.txt"]
        if self._closed or not path.is_file():
            return
        lines, self._stdoutOffset = newLines(path, self._stdoutOffset)
        for line in lines:
            self._takeLine(line)

    def _takeLine(self, line: str) -> None:
        progress = parseProgressLine(line)
        if progress is not None:
            self.progress = progress
            if self._onProgress is not None:
                self._onProgress(progress)

    def poll(self) -> bool:
        """Reads new progress lines; True once the child has ended (or was cancelled). Never blocks."""
        if self._finished:
            return True
        running = self._process.running()
        self._readProgress()
        if not running:
            self._readProgress()
            self._finished = True
        return self._finished

    def cancel(self) -> None:
        """Ends the child at whatever stage it is and removes its files; ``result()`` then raises Cancelled."""
        if self._finished:
            self._dropUnreadResult()
            return
        self._cancelled = True
        self._process.kill()
        if not self._process.wait(30.0):
            logger.warning("GastricPropagate: the segmentation process did not end within 30 s of being killed")
        self._finished = True
        self.close()

    def _dropUnreadResult(self) -> None:
        """A cancel after the child ended, before ``result()`` read it (an interrupted wait): its files go too."""
        if not self._closed:
            self._cancelled = True
            self.close()

    def wait(self, timeout: float | None = None, *, shouldStop: Callable[[], bool] | None = None,
             interval: float = 0.05) -> bool:
        """Polls until the child ends; cancels it when ``shouldStop()`` turns True. True when finished."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.poll():
            if shouldStop is not None and shouldStop():
                self.cancel()
                return True
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(interval)
        return True

    def _stderrMessage(self) -> str:
        return stderrMessage(self._paths["stderr.txt"])

    def _exitStatus(self) -> tuple[int | None, str]:
        """The run's exit code (None: killed) and its message."""
        return self._process.exitCode(), self._stderrMessage()

    def result(self) -> RunResult:
        """The child's result, read back from its files (call once ``poll()`` is True); removes the folder.

        Raises:
            Cancelled: ``cancel()`` was called, or the child reported a cancellation.
            InputError, WeightsError: the engine refused the input or the weights (its message says what to do).
            RuntimeError: the child failed otherwise (its last stderr lines are in the message).
        """
        if not self._finished:
            raise RuntimeError("InferenceJob.result() called before the process ended")
        try:
            if self._cancelled:
                raise Cancelled(_("Cancelled: the segmentation process was stopped; nothing was written."))
            code, message = self._exitStatus()
            if code == EXIT_OK:
                result = readRunResult(self._paths["report.json"], self._paths["output.nrrd"], self._grid)
                result.advice.extend(self.addedAdvice)
                return result
            if code == EXIT_BAD_INPUT:
                raise InputError(message)
            if code == EXIT_WEIGHTS:
                raise WeightsError(message)
            if code == EXIT_CANCELLED:
                raise Cancelled(message or _("The segmentation process was cancelled; nothing was written."))
            if self.failureExplained:  # the message tells its own story, with the process's real exit code
                raise RuntimeError(message)
            raise RuntimeError(_("The segmentation process failed (exit code {code}):\n{message}").format(
                code=exitCodeText(code), message=message))
        finally:
            self.close()

    def close(self) -> None:
        """Removes the job's temporary folder (the child must have ended)."""
        if not self._closed:
            self._closed = True
            shutil.rmtree(self.folder, ignore_errors=True)


def exitCodeText(code: int | None) -> str:
    """A child's exit code as the failure message gives it (None: killed)."""
    return _("none: it was killed") if code is None else str(code)
