"""Ends the engine's process when the process that started it has ended: the Slicer module's Cancel.

Inside Slicer the engine runs under PythonSlicer, a launcher that starts the real interpreter as its own child and does
not pass its own end on: Cancel kills the launcher, and the interpreter would otherwise finish its run as an orphan,
beside the run that follows. The parent asks for the watch through ``protocol.EXIT_WITH_PARENT_ENV``; a command started
from a shell is left alone (a batch job may outlive its terminal on purpose). Standard library only.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

from gastric_propagate.protocol import PARENT_PID_ENV

logger = logging.getLogger(__name__)

#: How often the parent is looked at, and how long the process then has to end as SIGTERM ends it (temporary outputs
#: removed, renames finished) before it is ended at once: Cancel must end the work within 0.5 s.
POLL_SECONDS = 0.1
GRACE_SECONDS = 0.2
#: OpenProcess's error for an id that no process has (ERROR_INVALID_PARAMETER): the parent is gone already.
NO_SUCH_PROCESS_ERROR = 87


def exit_with_parent(code: int, *, poll_seconds: float = POLL_SECONDS, grace_seconds: float = GRACE_SECONDS) -> bool:
    """Starts a daemon thread that, once this process's parent has ended, sends this process SIGTERM (the command
    line unwinds on it: exit 143, nothing half-written) and, if it still runs ``grace_seconds`` later (the main thread
    inside a network, say), ends it at once with ``os._exit(code)``, as a kill would. Returns False when the parent
    cannot be watched here (the process then runs as before)."""
    parent = os.getppid()
    ended = _windows_parent_ended(parent) if sys.platform == "win32" else _posix_parent_ended(parent)
    if ended is None:
        return False

    def watch() -> None:
        while not ended(poll_seconds):
            pass
        if sys.platform != "win32":  # on Windows SIGTERM would end it at once too, without the unwinding
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(grace_seconds)
        os._exit(code)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
    return True


def _posix_parent_ended(parent: int):
    """An orphan is handed to another process (init, or a subreaper): its parent id changes."""
    # Parent 1: the parent had already ended when the watch started, unless process 1 started this one itself (a
    # script run as a container's first process), which the parent says. Another parent that does not descend from
    # the process that says it started this one: the launcher between them was killed (Cancel) before the watch began,
    # and this process was handed to a subreaper (a desktop session's systemd --user, not process 1).
    starter = os.environ.get(PARENT_PID_ENV)
    orphaned = (parent == 1 and starter != "1") or (
        starter is not None and starter.isdigit() and _descends_from(parent, int(starter)) is False)

    def ended(wait_seconds: float) -> bool:
        if os.getppid() != parent or orphaned:
            return True
        time.sleep(wait_seconds)
        return False

    return ended


def _descends_from(pid: int, ancestor: int) -> bool | None:
    """Whether ``pid`` is ``ancestor`` or one of its descendants, by the parent ids in /proc (Linux); None where they
    cannot be read (another system, or a /proc that hides them): the caller then assumes nothing."""
    for _ in range(64):  # deeper chains of launchers than this do not occur
        if pid == ancestor:
            return True
        if pid <= 1:
            return False
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
                pid = int(stat.read().rsplit(")", 1)[1].split()[1])  # "pid (name) state ppid ..."
        except (OSError, ValueError, IndexError):
            return None
    return None


def _windows_parent_ended(parent: int):
    """Windows keeps the parent's id: wait on a handle to the parent process itself (opened now, so that the id cannot
    be reused by another process meanwhile)."""
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
    kernel32.OpenProcess.restype = wintypes.HANDLE
    kernel32.WaitForSingleObject.argtypes = (wintypes.HANDLE, wintypes.DWORD)
    kernel32.WaitForSingleObject.restype = wintypes.DWORD
    synchronize, wait_object_0 = 0x00100000, 0
    handle = kernel32.OpenProcess(synchronize, False, parent)
    if not handle:
        error = ctypes.get_last_error()
        if error == NO_SUCH_PROCESS_ERROR:  # the launcher was ended (Cancel) before the watch began: end too
            return lambda wait_seconds: True
        logger.warning("cannot watch the parent process %d (error %d): Cancel may leave this run to finish", parent,
                       error)
        return None
    return lambda wait_seconds: kernel32.WaitForSingleObject(handle, int(wait_seconds * 1000)) == wait_object_0
