"""The temporary folders that hold a patient's CT for the engine's child processes: made with their owner named, and
swept when the Slicer that made them has ended without removing them (a crash, a kill).

An owner is this host's name and Slicer's process id. A folder is swept only when its owner is on this host and that
process is gone; a folder of a process that still exists, of another host (a shared temporary folder), or without an
owner file (an older version, or not ours) is left alone. POSIX only: on Windows, checking a process by signal would
end it, so nothing is swept there.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

__all__ = ["FOLDER_PREFIX", "OWNER_FILE", "makeOwnedFolder", "sweepStaleFolders"]

#: Every folder this module makes starts with it (the worker's: "GastricPropagate-worker-...").
FOLDER_PREFIX = "GastricPropagate-"
OWNER_FILE = "owner.txt"


def makeOwnedFolder(prefix: str = FOLDER_PREFIX) -> Path:
    """A new temporary folder whose owner (this host, this process) is written in it."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    (folder / OWNER_FILE).write_text(f"{socket.gethostname()}\n{os.getpid()}\n", encoding="utf-8")
    return folder


def sweepStaleFolders(root: str | Path | None = None, minimumAgeSeconds: float = 60.0) -> list[Path]:
    """Removes the folders (``FOLDER_PREFIX``) whose owner process on this host has ended, at least
    ``minimumAgeSeconds`` after they were last changed. Returns what was removed."""
    if os.name != "posix":
        return []
    removed = []
    host = socket.gethostname()
    for folder in Path(root or tempfile.gettempdir()).glob(FOLDER_PREFIX + "*"):
        try:
            ownerHost, ownerPid = (folder / OWNER_FILE).read_text(encoding="utf-8").split()
            if (ownerHost != host or time.time() - folder.stat().st_mtime < minimumAgeSeconds
                    or _processExists(int(ownerPid))):
                continue
        except (OSError, ValueError):  # no owner file (not ours to judge), or one being written
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _processExists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True
