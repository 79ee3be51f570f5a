"""Runs ``GastricPropagateLogic.compute`` in a worker thread, with thread-safe progress and a stop flag.

The GUI polls ``progress()`` / ``isFinished()`` from a timer on the main thread and calls ``Logic.apply`` there once
the job has finished: the worker never touches MRML. PyTorch releases the GIL while it computes, so the
application stays responsive.
"""

from __future__ import annotations

import threading
import time


class ComputeJob:
    """One engine run on a prepared input.

    Args:
        logic: a GastricPropagateLogic.
        prepared: the PreparedInput from ``logic.prepare`` (read on the main thread beforehand).
    """

    def __init__(self, logic, prepared) -> None:
        self.logic = logic
        self.prepared = prepared
        self.result = None
        self.error: BaseException | None = None
        self.startTime: float | None = None
        self._stop = threading.Event()
        self._finished = threading.Event()
        self._lock = threading.Lock()
        self._progress = (0, 0)
        self._thread = threading.Thread(target=self._work, name="GastricPropagate", daemon=True)

    def start(self) -> "ComputeJob":
        self.startTime = time.monotonic()
        self._thread.start()
        return self

    def _onProgress(self, done: int, total: int) -> None:
        with self._lock:
            self._progress = (int(done), int(total))

    def _work(self) -> None:
        try:
            self.result = self.logic.compute(self.prepared, progress=self._onProgress, shouldStop=self._stop.is_set)
        except BaseException as error:  # handed to the main thread, which reports it
            self.error = error
        finally:
            self._finished.set()

    def requestStop(self) -> None:
        """Asks the engine to stop after the current slice; it then raises Cancelled."""
        self._stop.set()

    def stopRequested(self) -> bool:
        return self._stop.is_set()

    def progress(self) -> tuple[int, int]:
        """(slices done, slices planned); total is 0 until the engine has planned the run."""
        with self._lock:
            return self._progress

    def isFinished(self) -> bool:
        return self._finished.is_set()

    def elapsed(self) -> float:
        return 0.0 if self.startTime is None else time.monotonic() - self.startTime

    def wait(self, timeout: float | None = None) -> bool:
        """Blocks until the job has finished (or ``timeout`` seconds); True when finished."""
        return self._finished.wait(timeout)
