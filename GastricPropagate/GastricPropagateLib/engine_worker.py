"""The warm worker's client: one ``gastric_propagate.cli serve`` child per session and the runs sent to it.

``EngineWorker`` starts the child (through ``launchers.py``, its stdout and stderr in files) and sends it one JSON
request line per run; ``WorkerJob`` is an ``InferenceJob`` that reads its progress and RESULT lines from the
worker's stdout, restarts a worker that died during the run and retries the run once, and ends the worker on
cancel. ``runner.startInference(..., worker=...)`` builds the request (``requestOptions``) and the job.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from gastric_propagate.protocol import (EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_FAILED, EXIT_OK, EXIT_WEIGHTS,
                                        READY_PREFIX, RESULT_PREFIX)

from .i18n import _
from .parameters import commandLineArguments
from .launchers import PopenLauncher, childEnvironment, pythonExecutable
from .run_output import Progress, newLines, stderrMessage
from .runner import InferenceJob, exitCodeText
from .temp_folders import FOLDER_PREFIX, makeOwnedFolder, sweepStaleFolders

if TYPE_CHECKING:
    from gastric_propagate.data.mask_boxes import Grid

__all__ = ["EngineWorker", "WorkerJob", "requestOptions"]

logger = logging.getLogger(__name__)


def requestOptions(options) -> dict:
    """The PropagationOptions fields that differ from their defaults, as the worker's request takes them."""
    from dataclasses import fields

    values = {}
    for item in fields(options):
        value = getattr(options, item.name)
        if value != item.default:
            values[item.name] = value.item() if isinstance(value, np.generic) else value
    return values


class EngineWorker:
    """One warm ``gastric_propagate.cli serve`` child process (docs/cli.md, "serve: a warm worker"): it loads torch
    and the weights once, then answers each run's request; the Logic keeps one per session.

    Started when the module opens (``warmUp``) or on the first request. Its stdout and stderr go to files in its own
    folder, as a ``segment`` child's do, so reading it never blocks; requests go to its stdin. It ends when its input
    closes (``close()``, or Slicer ending), when it has been idle for ``idleSeconds``, or when a run on it is
    cancelled (``kill()``); the next request then starts a new one.

    Attributes:
        process: the running child (a launcher's process object), or None before the first start.
        ready: the child has printed READY (its weights are loaded), as far as its lines were read (``readLines``).
        starts: how many children this worker has started.
        busy: a job is using the child now.
    """

    def __init__(self, *, device: str = "auto", proposerPath=None, refinerPath=None, launcher=None,
                 python: str | None = None, idleSeconds: float = 600.0) -> None:
        self.device = str(device)
        self.proposerPath = proposerPath
        self.refinerPath = refinerPath
        self.launcher = launcher
        self.python = python
        self.idleSeconds = float(idleSeconds)
        self._weights = _fileIdentities(proposerPath, refinerPath)  # replaced in place: another worker is needed
        sweepStaleFolders()  # a crashed Slicer's folders, and the CT files in them
        self.folder = makeOwnedFolder(WORKER_FOLDER_PREFIX)
        self.process = None
        self.closed = False
        self.retired = False  # replaced while a run used it: that run's job closes it when it is done
        self.ready = False
        self.starts = 0
        self.busy = False
        self._offset = 0
        self._killed = False
        self._stdout, self._stderr = self.folder / "stdout.txt", self.folder / "stderr.txt"
        self._image: tuple[object, Path] | None = None  # (key, file) of the CT written last (``imageFile``)
        self._ahead: tuple[int, object] | None = None  # (child, key) of the CT sent ahead last (``sendAhead``)
        weakref.finalize(self, shutil.rmtree, str(self.folder), True)  # a worker dropped without close()

    def matches(self, *, device: str = "auto", proposerPath=None, refinerPath=None, launcher=None,
                python: str | None = None) -> bool:
        """Whether this worker runs the engine as these settings ask (else the Logic replaces it)."""
        return (self.device == str(device) and _samePath(self.proposerPath, proposerPath)
                and _samePath(self.refinerPath, refinerPath) and self.launcher is launcher and self.python == python
                and self._weights == _fileIdentities(proposerPath, refinerPath))

    def sibling(self) -> EngineWorker:
        """A new worker with the same settings (for a run started while this one is busy)."""
        return EngineWorker(device=self.device, proposerPath=self.proposerPath, refinerPath=self.refinerPath,
                            launcher=self.launcher, python=self.python, idleSeconds=self.idleSeconds)

    def running(self) -> bool:
        return self.process is not None and self.process.running()

    def endedUnexpectedly(self) -> bool:
        """The child ended without being asked to (crashed or killed from outside; not idle, closed or cancelled,
        by Cancel or by Ctrl-C)."""
        return (self.process is not None and not self._killed and not self.process.running()
                and self.process.exitCode() not in (EXIT_OK, EXIT_CANCELLED))

    def start(self) -> None:
        """Starts a new child (ending the old one, if it still runs)."""
        self.kill()
        self.starts += 1
        self.folder.mkdir(parents=True, exist_ok=True)  # removed behind its back (a cleaner of the temporary folder)
        self._stdout = self.folder / f"stdout-{self.starts}.txt"
        self._stderr = self.folder / f"stderr-{self.starts}.txt"
        self._offset, self.ready, self._killed = 0, False, False
        arguments = ["-m", "gastric_propagate.cli", "serve", "--idle-timeout", f"{self.idleSeconds:g}",
                     *commandLineArguments(_defaultOptions(), device=self.device, proposerPath=self.proposerPath,
                                          refinerPath=self.refinerPath)]
        environment, searchPath = childEnvironment()
        program = self.python or pythonExecutable()
        logger.info("GastricPropagate: starting the worker %s %s", program, " ".join(arguments))
        self.process = (self.launcher or PopenLauncher()).start(program, arguments, environment, self._stdout,
                                                                self._stderr, searchPath)

    def imageFile(self, image: np.ndarray, spacingXYZ, key, write: Callable[[np.ndarray, object, Path], None]) -> Path:
        """The CT's file for a request: written (``write(image, spacingXYZ, path)``) when ``key`` differs from the
        last CT's, else the file written then. The worker keeps the CT of its last request in memory while that file
        is unchanged, so a run on the same CT (a correction loop) neither writes nor reads it again. ``key`` must
        change whenever the voxels or the spacing do (the Logic: the volume node's ID and its image data's
        modification time); None writes a new file each time."""
        if key is not None and self._image is not None and self._image[0] == key and self._image[1].is_file():
            return self._image[1]
        if self._image is not None:
            try:
                self._image[1].unlink(missing_ok=True)
            except PermissionError:  # Windows, while the worker still reads it (a preload): goes with the folder
                logger.info("GastricPropagate: %s is still open; it is removed when the worker closes", self._image[1])
            self._image = None
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"image-{uuid.uuid4().hex}.nrrd"
        try:
            write(image, spacingXYZ, path)
        except BaseException:  # failed or interrupted: a half-written CT would stay until close()
            path.unlink(missing_ok=True)
            raise
        self._image = (key, path)  # with key None: removed by the next call, never served again
        return path

    def sendAhead(self, image: np.ndarray, spacingXYZ, key, write: Callable[[np.ndarray, object, Path], None]) -> bool:
        """Writes the CT's file (``imageFile``) and asks the child to read it now, with a preload request, while the
        reader paints: the first run on this version of the CT then finds it in the child's memory and sends only
        the painted slices. Nothing is sent to a child that was sent this version already, that a run holds, or that
        is not running; True when sent. The child's answer is not waited for (a run's job reads past it)."""
        if key is None or self.busy or not self.running() or self._ahead == (self.starts, key):
            return False
        path = self.imageFile(image, spacingXYZ, key, write)
        self._ahead = (self.starts, key)
        return self.send({"id": f"ahead-{uuid.uuid4().hex}", "preload": str(path)})

    def send(self, request: dict) -> bool:
        """Writes one request line; False when the child no longer reads (the caller sees it end)."""
        return self.process is not None and self.process.write((json.dumps(request) + "\n").encode("utf-8"))

    def readLines(self) -> list[str]:
        """The child's complete stdout lines not read yet."""
        if self.process is None or not self._stdout.is_file():
            return []
        lines, self._offset = newLines(self._stdout, self._offset)
        self.ready = self.ready or any(line.startswith(READY_PREFIX) for line in lines)
        return lines

    def exitCode(self) -> int | None:
        return None if self.process is None else self.process.exitCode()

    def stderrMessage(self) -> str:
        return stderrMessage(self._stderr)

    def kill(self) -> None:
        """Ends the child at once, whatever it is doing (cancel); the next request starts a new one."""
        if self.process is not None and self.process.running():
            self._killed = True
            self.process.kill()
            if not self.process.wait(30.0):
                logger.warning("GastricPropagate: the worker process did not end within 30 s of being killed")

    def close(self, waitSeconds: float = 5.0) -> None:
        """Ends the child (its input closes; killed if it does not end within ``waitSeconds``, or at once while it
        still loads: it reads its input only once loaded) and removes the folder, the CT's file with it."""
        if self.process is not None and self.process.running():
            self.readLines()  # a worker started ahead and never polled may be ready: closed gently, not killed
            if not self.ready:
                self.kill()
            else:
                self.process.closeInput()
                if not self.process.wait(waitSeconds):
                    self.kill()
        self.busy = False
        self.closed = True
        self._image = None
        shutil.rmtree(self.folder, ignore_errors=True)


WORKER_FOLDER_PREFIX = FOLDER_PREFIX + "worker-"


def _fileIdentities(*paths) -> tuple:
    """(size, modification time) of each weights file (None: the bundled ones, or a missing file): a file written
    again in place needs another worker."""
    identities = []
    for path in paths:
        try:
            status = os.stat(path) if path is not None else None
        except OSError:
            status = None
        identities.append(None if status is None else (status.st_size, status.st_mtime_ns))
    return tuple(identities)


def _samePath(a, b) -> bool:
    return (a is None) == (b is None) and (a is None or os.fspath(a) == os.fspath(b))


def _restartAdvice() -> str:
    return _("Restart Slicer; reinstall the extension if it persists.")


def _defaultOptions():
    from gastric_propagate.inference.options import PropagationOptions

    return PropagationOptions()


class WorkerJob(InferenceJob):
    """One run sent to an ``EngineWorker``: its progress and RESULT lines are read from the worker's stdout file.

    If the worker dies during the run (crashed, killed from outside, or ended idle as the request arrived), a new one
    is started and the run retried once; ``notice`` then says so (the panel shows it) and ``restarts`` is 1. A worker
    ended by Ctrl-C cancels the run. ``cancel()`` ends the worker at once.

    Attributes:
        workerPid: the worker's process id (of the retry, after a restart).
        served: how many runs that worker process has answered, this one included (from its RESULT line).
        restarts: how many times the worker was restarted for this run (0 or 1).
        notice: a line for the reader when the worker had to be restarted, else "".
    """

    def __init__(self, worker: EngineWorker, folder: Path, paths: dict[str, Path], grid: Grid, request: dict, *,
                 onProgress: Callable[[Progress], None] | None = None) -> None:
        self._ownsWorker = worker.busy  # another run holds the session's worker: this one gets its own
        worker = worker.sibling() if worker.busy else worker
        self.worker = worker
        self._request = dict(request, id=uuid.uuid4().hex)
        self._outcome: tuple[int | None, str] | None = None
        self.restarts = 0
        self._endedUnsent = False  # ``_send`` ended the worker: its request did not go through
        self.notice = ""
        self.served = 0
        self.workerPid: int | None = None
        worker.busy = True
        try:
            ended, code = worker.endedUnexpectedly(), worker.exitCode()
            if not worker.running():
                try:
                    worker.start()
                except Exception as error:
                    if not ended:
                        raise
                    raise RuntimeError(_("The engine's worker process had ended (exit code {code}) and could not be "
                                         "started again: {error}. {advice}").format(
                        code=exitCodeText(code), error=error, advice=_restartAdvice())) from error
            if ended:  # said once the new one has started
                self._notify(_("The engine's worker process had ended (exit code {code}); a new one was started.")
                             .format(code=exitCodeText(code)))
            super().__init__(worker.process, folder, paths, grid, onProgress=onProgress)
            self._send()
        except BaseException:
            self._releaseWorker()
            raise
        self.workerPid = worker.process.pid()

    def _notify(self, text: str) -> None:
        self.notice = text
        logger.warning("GastricPropagate: %s", text)

    def _readProgress(self) -> None:
        if not self._closed:
            for line in self.worker.readLines():
                self._takeLine(line)

    def _takeLine(self, line: str) -> None:
        if not line.startswith(RESULT_PREFIX):
            super()._takeLine(line)
            return
        try:
            answer = json.loads(line[len(RESULT_PREFIX):])
        except ValueError:
            return
        if answer.get("id") == self._request["id"]:
            self._outcome = (int(answer.get("code", EXIT_FAILED)), str(answer.get("message", "")))
            self.served = int(answer.get("served", 0))

    def poll(self) -> bool:
        """Reads the worker's new lines; True once its RESULT for this run came, the run failed, or was cancelled.
        A worker that died during the run is restarted and the run retried, once. Never blocks."""
        if self._finished:
            return True
        running = self.worker.running()
        self._readProgress()
        if self._outcome is None and not running:
            self._readProgress()
            if self._outcome is None:
                self._workerEnded()
        if self._outcome is not None:
            self._finished = True
            self._releaseWorker()
        return self._finished

    def _failExplained(self, message: str) -> None:
        """The run fails with ``message``, which says how the worker ended (``failureExplained``)."""
        self._outcome = (EXIT_FAILED, message)
        self.failureExplained = True

    def _workerEnded(self) -> None:
        """The worker ended without answering this run: it refused its device or weights, Ctrl-C ended it, or it
        ended while it started (no retry), or it died once it had started (restarted and the run retried, once)."""
        if self.worker.closed:  # the Logic closed it under this run (the module closed): nothing to restart
            self._outcome = (EXIT_CANCELLED, _("The engine's worker was closed during the run; nothing was written."))
            return
        code, message = self.worker.exitCode(), self.worker.stderrMessage()
        if code == EXIT_CANCELLED or (not self.worker.ready and code in (EXIT_BAD_INPUT, EXIT_WEIGHTS)):
            self._outcome = (code, message)  # Ctrl-C cancels the run, as Cancel does
            return
        # It ended on its own before READY, so it never took the run: a start that fails (a broken package) fails again.
        if not self.worker.ready and not self._endedUnsent:
            # Killed (no exit code): by the system for want of memory, or by another program; a new one may start.
            advice = (_("Click Propagate again to start a new one; if it is killed again, close other programs or "
                        "crop the CT (Crop Volume).") if code is None else _restartAdvice())
            self._failExplained(_("The engine's worker process ended while it started (exit code {code}), before it "
                                  "could take the run; nothing was written. {advice}\n{message}").format(
                code=exitCodeText(code), advice=advice, message=message))
            return
        if self.restarts >= 1:
            self._failExplained(_("The engine's worker process ended again while retrying the run (exit code "
                                  "{code}); nothing was written.\n{message}").format(
                code=exitCodeText(code), message=message))
            return
        self.restarts += 1
        # Exit code 0 during a run: its idle timeout came as the request arrived (it took the line, then ended).
        ended = (_("The engine's worker process had ended on its own, idle, as the run was sent") if code == EXIT_OK
                 else _("The engine's worker process ended during the run (exit code {code})").format(
                     code=exitCodeText(code)))
        try:
            self.worker.start()
        except Exception as error:  # e.g. the program cannot be started any more: the run fails, saying why
            self._failExplained(_("{ended} and could not be started again: {error}. Nothing was written. "
                                  "{advice}\n{message}").format(
                ended=ended, error=error, advice=_restartAdvice(), message=message))
            return
        self._notify(_("{ended}; it was restarted and the run is being retried.").format(ended=ended))
        self._process = self.worker.process
        self.workerPid = self._process.pid()
        # The dead worker may have put the outputs in place before its RESULT line: they are this run's own files.
        self._request["overwrite"] = True
        self._send()

    def _send(self) -> None:
        """Sends this run's request. A worker that no longer reads it is seen to end by ``poll()``; one that still
        runs but did not take the whole line (a failed write) is ended, so that ``poll()`` restarts it and retries
        the run once, rather than wait for an answer that cannot come."""
        if not self.worker.send(self._request) and self.worker.running():
            self._endedUnsent = True
            self.worker.kill()

    def cancel(self) -> None:
        """Ends the worker at once, whatever it is doing, and removes the run's files; ``result()`` then raises
        Cancelled. The next run starts a new worker."""
        if self._finished:
            self._dropUnreadResult()
            return
        self._cancelled = True
        self.worker.kill()
        self._finished = True
        self._releaseWorker()
        self.close()

    def _releaseWorker(self) -> None:
        self.worker.busy = False
        if self._ownsWorker or self.worker.retired:
            # Killed at once: it has answered (or ended), and waiting for it to exit would block poll(), which the
            # panel calls on Slicer's main thread.
            self.worker.close(waitSeconds=0.0)

    def _exitStatus(self) -> tuple[int | None, str]:
        return self._outcome if self._outcome is not None else (EXIT_FAILED, "")
