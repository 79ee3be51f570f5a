"""The engine's run in a child process: input files, the launchers, ``segment``, progress, cancel, result.

Data goes one way. ``startInference`` writes the arrays the Logic read from the scene (CT, painted segment) to
NRRD files in a temporary folder and sends them as one request to the session's ``EngineWorker`` (``python -m
gastric_propagate.cli serve``, started on the first run, weights loaded once; docs/cli.md) or, without a worker,
starts ``python -m gastric_propagate.cli segment ... --progress`` on them. The child writes its mask and a JSON
report into the same folder; ``InferenceJob.result()`` reads them back. A worker that dies during a run is restarted
and the run retried once (``WorkerJob.notice`` says so); cancel ends the worker, and the next run starts a new one.
The worker's client (``EngineWorker``, ``WorkerJob``, ``requestOptions``) lives in ``engine_worker.py``.

The process is started by an injected launcher: ``QProcessLauncher`` inside the Slicer application (a qt.QProcess;
Slicer's main loop holds the GIL, so a Python thread would starve) and ``PopenLauncher`` in batch scripts and
tests. Both send the child's stdout and stderr to files in the job's folder, so ``InferenceJob.poll()`` only reads
files: it never blocks, needs no reader thread and no event loop. ``InferenceJob.cancel()`` ends the child at any
stage (loading, proposer, refiner, writing) and removes the folder; nothing in the scene has changed by then.

Exit codes of the CLI (``gastric_propagate.protocol``): 0 success, 2 bad input, 3 unusable weights, 130
cancelled; the message is on stderr.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from gastric_propagate.errors import Cancelled, InputError, WeightsError
from gastric_propagate.protocol import (EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_OK, EXIT_WEIGHTS, Report,
                                        parse_progress_line)

from .i18n import _
from .parameters import commandLineArguments

if TYPE_CHECKING:  # engine_worker imports this module: only its annotation is needed here
    from .engine_worker import EngineWorker

__all__ = [
    "InferenceJob",
    "PopenLauncher",
    "Progress",
    "QProcessLauncher",
    "RunResult",
    "parseProgressLine",
    "pythonExecutable",
    "runResultFromReport",
    "startInference",
]

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class Progress:
    """The child's last progress line: stage name (``protocol.STAGES``) and (done, total) within that stage."""

    stage: str = ""
    done: int = 0
    total: int = 0


def parseProgressLine(line: str) -> Progress | None:
    """A ``PROGRESS stage=... done=... total=...`` line as a Progress, or None for any other line."""
    parsed = parse_progress_line(line)
    return None if parsed is None else Progress(*parsed)


@dataclass
class RunResult:
    """What the child process produced, read back from its files: the mask on the volume's (k, j, i) grid and the
    run's report (``protocol.Report``, torch-free), whose fields the panel reads through the properties below."""

    mask: np.ndarray
    report: Report = field(default_factory=Report)

    @property
    def anchor_slices(self) -> list[int]:
        """The painted slices, kept as drawn."""
        return self.report.painted_slices

    @property
    def slice_confidence(self) -> dict[int, float]:
        return self.report.slice_confidence

    @property
    def slices_to_review(self) -> list[int]:
        """Non-painted slices the engine asks the reader to check: low confidence, or cut back after a leak."""
        return self.report.slices_to_review

    @property
    def advice(self) -> list[dict]:
        """What the reader should see before trusting the result: "kind", English "sentence", its figures."""
        return self.report.advice

    @property
    def seconds(self) -> float:
        return self.report.seconds

    @property
    def device(self) -> str:
        return self.report.device

    def slice_range(self) -> tuple[int, int] | None:
        """First and last K index of the result, or None when it is empty."""
        ks = np.flatnonzero(np.asarray(self.mask).reshape(len(self.mask), -1).any(axis=1))
        return (int(ks[0]), int(ks[-1])) if len(ks) else None

    def least_confident_slices(self, count: int) -> list[int]:
        """The ``count`` visited non-painted slices with the lowest confidence, least confident first."""
        candidates = sorted((c, k) for k, c in self.slice_confidence.items() if k not in self.anchor_slices)
        return [k for _, k in candidates[:count]]


def runResultFromReport(report: dict, mask: np.ndarray) -> RunResult:
    """A RunResult from the engine's JSON report (``protocol.Report``) and its (k, j, i) mask."""
    return RunResult(mask=(np.asarray(mask) > 0).astype(np.uint8), report=Report.from_json(report))


# ---------------------------------------------------------------------------------------------- launchers


class _PopenProcess:
    def __init__(self, process: subprocess.Popen) -> None:
        self._process = process

    def running(self) -> bool:
        return self._process.poll() is None

    def exitCode(self) -> int | None:
        """The exit code, or None while running or when the process was killed by a signal."""
        code = self._process.poll()
        return None if code is None or code < 0 else code

    def kill(self) -> None:
        if self._process.poll() is None:
            self._process.kill()

    def wait(self, timeoutSeconds: float) -> bool:
        try:
            self._process.wait(timeout=timeoutSeconds)
            return True
        except subprocess.TimeoutExpired:
            return False

    def pid(self) -> int:
        return int(self._process.pid)

    def write(self, data: bytes) -> bool:
        """Writes to the child's stdin; False when the child no longer reads it (it ended)."""
        try:
            self._process.stdin.write(data)
            self._process.stdin.flush()
            return True
        except (OSError, ValueError):
            return False

    def closeInput(self) -> None:
        try:
            self._process.stdin.close()
        except OSError:
            pass


class PopenLauncher:
    """Starts the child with ``subprocess.Popen`` (batch scripts, tests, any Python without Qt)."""

    def start(self, program: str, arguments: list[str], environment: dict[str, str], stdoutPath: Path,
              stderrPath: Path, workingDirectory: str) -> _PopenProcess:
        with open(stdoutPath, "wb") as stdout, open(stderrPath, "wb") as stderr:
            process = subprocess.Popen([program, *arguments], env=environment, stdout=stdout, stderr=stderr,
                                       stdin=subprocess.PIPE, cwd=workingDirectory)
        return _PopenProcess(process)


class _QtProcess:
    def __init__(self, process) -> None:
        self._process = process

    def running(self) -> bool:
        import qt

        if self._process.state() == qt.QProcess.NotRunning:
            return False
        # QProcess learns that its child ended from the event loop; a zero wait checks now, so polling works
        # whether or not the event loop has run since (a timer slot, a batch loop, a test).
        self._process.waitForFinished(0)
        return self._process.state() != qt.QProcess.NotRunning

    def exitCode(self) -> int | None:
        import qt

        if self.running() or self._process.exitStatus() != qt.QProcess.NormalExit:
            return None
        return int(self._process.exitCode())

    def kill(self) -> None:
        if self.running():
            self._process.kill()

    def wait(self, timeoutSeconds: float) -> bool:
        return not self.running() or bool(self._process.waitForFinished(int(timeoutSeconds * 1000)))

    def pid(self) -> int:
        return int(self._process.processId())

    def write(self, data: bytes) -> bool:
        """Writes to the child's stdin (QProcess buffers it; a zero wait hands it over); False once it ended."""
        if not self.running():
            return False
        written = self._process.write(data)
        self._process.waitForBytesWritten(0)
        return written == len(data)

    def closeInput(self) -> None:
        self._process.closeWriteChannel()


class QProcessLauncher:
    """Starts the child as a ``qt.QProcess`` (inside the Slicer application)."""

    def start(self, program: str, arguments: list[str], environment: dict[str, str], stdoutPath: Path,
              stderrPath: Path, workingDirectory: str) -> _QtProcess:
        import qt

        process = qt.QProcess()
        qtEnvironment = qt.QProcessEnvironment()
        for name, value in environment.items():
            qtEnvironment.insert(name, value)
        process.setProcessEnvironment(qtEnvironment)
        process.setStandardOutputFile(str(stdoutPath))
        process.setStandardErrorFile(str(stderrPath))
        process.setWorkingDirectory(workingDirectory)
        process.setProgram(program)
        process.setArguments(list(arguments))
        process.start()
        if not process.waitForStarted(30000):
            raise RuntimeError(_("Could not start '{program}': {error}").format(
                program=program, error=process.errorString()))
        return _QtProcess(process)


# ---------------------------------------------------------------------------------------------- the job


def pythonExecutable() -> str:
    """The Python that runs the engine: PythonSlicer inside the Slicer application, else this interpreter."""
    try:
        from slicer import app  # noqa: F401  (present only in the Slicer application)
    except ImportError:
        return sys.executable
    return shutil.which("PythonSlicer") or sys.executable


def _engineSearchPath() -> str:
    """The folder holding the ``gastric_propagate`` package (installed beside this Lib)."""
    import importlib.util

    spec = importlib.util.find_spec("gastric_propagate")
    if spec is None or not spec.origin:
        raise RuntimeError(_("The gastric_propagate engine package cannot be found; reinstall the extension."))
    return str(Path(spec.origin).resolve().parent.parent)


def _writeArray(array: np.ndarray, spacingXYZ, path: Path, compress: bool) -> None:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing([float(s) for s in spacingXYZ])
    sitk.WriteImage(image, str(path), compress)


def _newLines(path: Path, offset: int) -> tuple[list[str], int]:
    """The complete lines written to ``path`` after ``offset``, and the offset after them."""
    with open(path, "rb") as stream:
        stream.seek(offset)
        data = stream.read()
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset  # no complete line yet
    return data[: end + 1].decode("utf-8", errors="replace").splitlines(), offset + end + 1


def _stderrMessage(path: Path) -> str:
    """The child's last 'error: ' line on stderr, else its last stderr lines."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    errors = [line[len("error: "):] for line in text.splitlines() if line.startswith("error: ")]
    if errors:
        return errors[-1]
    return "\n".join(text.strip().splitlines()[-15:])


def _childEnvironment() -> tuple[dict[str, str], str]:
    """The child's environment (the engine on PYTHONPATH, unbuffered output) and the folder to start it in."""
    environment = dict(os.environ)
    searchPath = _engineSearchPath()
    environment["PYTHONPATH"] = os.pathsep.join(
        [searchPath] + [p for p in environment.get("PYTHONPATH", "").split(os.pathsep) if p])
    environment["PYTHONUNBUFFERED"] = "1"
    return environment, searchPath


def startInference(image: np.ndarray, spacingXYZ, annotation: np.ndarray, options, *, device: str = "auto",
                   proposerPath=None, refinerPath=None, launcher=None, python: str | None = None,
                   onProgress: Callable[[Progress], None] | None = None,
                   worker: EngineWorker | None = None) -> InferenceJob:
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
    """
    folder = Path(tempfile.mkdtemp(prefix="GastricPropagate-"))
    try:
        paths = {name: folder / name for name in ("image.nrrd", "annotation.nrrd", "output.nrrd", "report.json",
                                                  "stdout.txt", "stderr.txt")}
        _writeArray(image, spacingXYZ, paths["image.nrrd"], compress=False)
        _writeArray((np.asarray(annotation) > 0).astype(np.uint8), spacingXYZ, paths["annotation.nrrd"],
                    compress=True)
        if worker is not None:
            from .engine_worker import WorkerJob, requestOptions

            request = {"image": str(paths["image.nrrd"]), "annotation": str(paths["annotation.nrrd"]),
                       "output": str(paths["output.nrrd"]), "report": str(paths["report.json"]),
                       "options": requestOptions(options)}
            return WorkerJob(worker, folder, paths, request, onProgress=onProgress)
        arguments = ["-m", "gastric_propagate.cli", "segment", "--image", str(paths["image.nrrd"]),
                     "--annotation", str(paths["annotation.nrrd"]), "--output", str(paths["output.nrrd"]),
                     "--report", str(paths["report.json"]), "--progress",
                     *commandLineArguments(options, device=device, proposerPath=proposerPath,
                                          refinerPath=refinerPath)]
        environment, searchPath = _childEnvironment()
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
    return InferenceJob(process, folder, paths, onProgress=onProgress)


class InferenceJob:
    """One running child process. Poll it from a timer (GUI) or ``wait()`` for it (batch).

    Attributes:
        progress: the last Progress the child reported.
        startTime: ``time.monotonic()`` at start.
    """

    def __init__(self, process, folder: Path, paths: dict[str, Path], *,
                 onProgress: Callable[[Progress], None] | None = None) -> None:
        self._process = process
        self.folder = folder
        self._paths = paths
        self._onProgress = onProgress
        self._stdoutOffset = 0
        self._finished = False
        self._cancelled = False
        self._closed = False
        self.progress = Progress()
        self.startTime = time.monotonic()

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
        lines, self._stdoutOffset = _newLines(path, self._stdoutOffset)
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
            return
        self._cancelled = True
        self._process.kill()
        if not self._process.wait(30.0):
            logger.warning("GastricPropagate: the segmentation process did not end within 30 s of being killed")
        self._finished = True
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
        return _stderrMessage(self._paths["stderr.txt"])

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
                return self._readResult()
            if code == EXIT_BAD_INPUT:
                raise InputError(message)
            if code == EXIT_WEIGHTS:
                raise WeightsError(message)
            if code == EXIT_CANCELLED:
                raise Cancelled(message or _("The segmentation process was cancelled; nothing was written."))
            raise RuntimeError(_("The segmentation process failed (exit code {code}):\n{message}").format(
                code="none: it was killed" if code is None else code, message=message))
        finally:
            self.close()

    def _readResult(self) -> RunResult:
        import SimpleITK as sitk

        report = json.loads(self._paths["report.json"].read_text(encoding="utf-8"))
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(self._paths["output.nrrd"])))
        return runResultFromReport(report, mask)

    def close(self) -> None:
        """Removes the job's temporary folder (the child must have ended)."""
        if not self._closed:
            self._closed = True
            shutil.rmtree(self.folder, ignore_errors=True)

