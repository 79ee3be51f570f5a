"""How the engine's child process is started: the interpreter, its environment, and the launcher.

The process is started by an injected launcher: ``QProcessLauncher`` inside the Slicer application (a qt.QProcess;
Slicer's main loop holds the GIL, so a Python thread would starve) and ``PopenLauncher`` in batch scripts and
tests. Both send the child's stdout and stderr to files, so whoever polls the child only reads files: it never
blocks, needs no reader thread and no event loop. Both take the child's stdin (the warm worker's requests).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from gastric_propagate.protocol import EXIT_CANCELLED, EXIT_WITH_PARENT_ENV, PARENT_PID_ENV

from .i18n import _

__all__ = ["PopenLauncher", "QProcessLauncher", "childEnvironment", "pythonExecutable"]


class _PopenProcess:
    def __init__(self, process: subprocess.Popen) -> None:
        self._process = process

    def running(self) -> bool:
        return self._process.poll() is None

    def exitCode(self) -> int | None:
        """The exit code, or None while running or when the process was killed by a signal; SIGINT (Ctrl-C in the
        terminal) gives the command line's cancelled code, as a child that caught it returns."""
        code = self._process.poll()
        if code == -signal.SIGINT:
            return EXIT_CANCELLED
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


def childEnvironment() -> tuple[dict[str, str], str]:
    """The child's environment (the engine on PYTHONPATH, unbuffered UTF-8 output, and its end with the process started:
    Cancel kills that process, which inside Slicer is PythonSlicer's launcher, not the interpreter it started) and the
    folder to start it in."""
    environment = dict(os.environ)
    environment[EXIT_WITH_PARENT_ENV] = "1"
    environment[PARENT_PID_ENV] = str(os.getpid())
    searchPath = _engineSearchPath()
    environment["PYTHONPATH"] = os.pathsep.join(
        [searchPath] + [p for p in environment.get("PYTHONPATH", "").split(os.pathsep) if p])
    environment["PYTHONUNBUFFERED"] = "1"
    # Its output is read as UTF-8 (run_output); on Windows a child writes its files in the ANSI code page otherwise,
    # which turns "mm²" into a replacement character and cannot write "≥" at all.
    environment["PYTHONIOENCODING"] = "utf-8"
    return environment, searchPath

