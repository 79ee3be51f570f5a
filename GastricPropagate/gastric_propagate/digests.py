"""The SHA-256 digest of a file: what names a weights file or an output exactly, whatever its path."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    """The hex SHA-256 digest of the file's bytes, read a megabyte at a time (a CT need not fit in memory twice)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
