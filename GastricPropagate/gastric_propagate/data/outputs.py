"""Writing results so that they never leave half a file.

Every output is first written under a temporary folder beside its destination (``.partial-<name>-*``), then
renamed into place. A header + data format (``.nhdr``, ``.mhd``, ``.hdr``) is written there with its final names,
so the header names the right data file; the data file is renamed first, the header last. Several outputs of one
run (a mask and its report) are renamed together, after all of them were written, and SIGTERM/SIGINT received
during the renames are held until the renames are done. An exception or SIGTERM therefore leaves the old files or
the whole new ones, and no ``.partial`` folder; a process killed outright (SIGKILL, the system out of memory, a
crash of the interpreter) may leave a ``.partial`` folder beside the outputs, never a half-written output. Without
``overwrite`` an output is put in place by a hard link, not a rename, so that a file that appeared there during the
run (another run's) is never replaced.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import SimpleITK as sitk

from gastric_propagate.errors import InputError, last_line

PARTIAL_PREFIX = ".partial-"


# The outputs the last batch of this process put in place: a signal held during the renames is delivered after them,
# and the command line then says that these are complete rather than that the run was cancelled with nothing written.
COMMITTED: list[str] = []
#: SIGTERM / SIGINT the command line received (its handlers note them here, then raise). A handler's exception can be
#: swallowed on its way: raised inside a callback whose exceptions Python ignores (a garbage collector's, during the
#: ONNX export), the run would go on and replace the outputs. A batch noting one renames nothing.
RECEIVED: list[int] = []


class OutputBatch:
    """Outputs that appear together and whole, or not at all.

    Each method writes one output under a temporary folder beside it; leaving the ``with`` block without an error
    renames them all into place, an error (or SIGTERM) removes them::

        with OutputBatch() as outputs:
            outputs.mask(mask, ct, "tumour.nrrd")
            outputs.json(report, "report.json")

    Args:
        overwrite: outputs may replace existing files. Without it, a file that appeared at an output's path while
            the run was working (another run writing to the same path) is kept and the batch is refused: each
            output is put in place by a hard link, which fails where a file is, not by a rename, which replaces it.
        replaceable: with ``overwrite`` False, the paths that may still be replaced (e.g. the demo's files from an
            earlier demo run).
    """

    def __init__(self, *, overwrite: bool = True, replaceable: Iterable[str | Path] = ()) -> None:
        self._staged: list[_Staged] = []
        self._overwrite = overwrite
        self._replaceable = {os.path.abspath(path) for path in replaceable}

    def mask(self, mask: np.ndarray, reference: sitk.Image, path: str | Path) -> Path:
        """A uint8 (z, y, x) mask on exactly the reference's grid."""
        # GetImageFromArray copies the voxels into the image: a uint8 mask needs no copy of its own before that.
        image = sitk.GetImageFromArray(np.asarray(mask).astype(np.uint8, copy=False))
        image.CopyInformation(reference)
        return self.image(image, path)

    def image(self, image: sitk.Image, path: str | Path) -> Path:
        """A SimpleITK image, compressed where the format allows; refused (the batch writes nothing) when the file
        written does not hold the image's grid (``_check_grid_kept``)."""
        written = self._stage(Path(path), lambda temporary: sitk.WriteImage(image, str(temporary), useCompression=True))
        _check_grid_kept(image, self.staged(path), Path(path))
        return written

    def json(self, data: dict, path: str | Path) -> Path:
        """A JSON document."""
        return self.text(json.dumps(data, indent=2) + "\n", path)

    def text(self, text: str, path: str | Path) -> Path:
        """A UTF-8 text file."""
        return self._stage(Path(path), lambda temporary: temporary.write_text(text, encoding="utf-8"))

    def file(self, path: str | Path, write: Callable[[Path], None]) -> Path:
        """Any other file: ``write(temporary)`` writes it to a temporary path of the same name (e.g. a checkpoint,
        a figure, a CSV)."""
        return self._stage(Path(path), write)

    def remove(self, path: str | Path) -> Path:
        """Removes the file at ``path`` with the batch (e.g. the int8 copies of the weights it replaces): it is gone
        once the others are in place, and kept when they are not."""
        staged = _Staged(Path(path), removal=True)
        self._staged.append(staged)
        staged.write(lambda temporary: None)  # the folder that keeps the file until the batch is committed
        return Path(path)

    def drop(self, path: str | Path) -> None:
        """Takes the output ``path`` out of the batch: what was staged for it is removed, the rest stays."""
        for staged in [staged for staged in self._staged if staged.path == Path(path) and not staged.removal]:
            staged.discard()
            self._staged.remove(staged)

    def staged(self, path: str | Path) -> Path | None:
        """Where the output ``path`` of this batch lies until it is committed (to read it back meanwhile, e.g. a
        checkpoint exported to ONNX in the same batch); None when the batch holds no such output."""
        found = [staged for staged in self._staged if staged.path == Path(path) and not staged.removal]
        return found[-1].folder / found[-1].path.name if found and found[-1].folder is not None else None

    def commit(self) -> None:
        """Renames every staged output into place (SIGTERM/SIGINT held meanwhile). When one cannot be renamed (a
        read-only or immutable file), those already renamed are put back: all of them are replaced, or none."""
        if RECEIVED:  # a signal came and its exception was lost: delivered again here, where nothing swallows it
            self.discard()
            signal.raise_signal(RECEIVED[0])
        try:
            with _signals_held():
                for staged in self._staged:
                    staged.keep_old()
                done = []
                try:
                    for staged in self._staged:
                        done.append(staged)
                        staged.commit()
                except OSError as error:
                    restored = all([staged.restore() for staged in reversed(done)])
                    stranded = [str(kept) for staged in done for kept in staged.stranded]
                    kept = "nothing was written (the earlier files are kept)" if restored else (
                        "the outputs are incomplete: some earlier files could not be put back; copy them back from "
                        + ", ".join(stranded) if stranded else "the outputs are incomplete: some new files could "
                        "not be removed")
                    if isinstance(error, FileExistsError):
                        raise InputError(f"Did not write {done[-1].path}: {error.filename} exists now, though it did "
                                         f"not when this run began (another run writing to the same path?). It is "
                                         f"kept and {kept}. Choose another path, or pass --overwrite to replace "
                                         "it.") from error
                    raise InputError(f"Could not replace {done[-1].path} ({error.strerror or error}): {kept}. Check "
                                     "that it is not read-only or locked and that the folder is writable, then run "
                                     "again.") from error
                self.discard()  # the emptied temporary folders, before any held signal is delivered
                COMMITTED[:] = [str(staged.path) for staged in done if not staged.removal]
        finally:
            self.discard()

    def discard(self) -> None:
        """Removes what is still staged (and the folders made for it)."""
        for staged in reversed(self._staged):
            staged.discard()
        self._staged = []

    def __enter__(self) -> "OutputBatch":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()

    def _stage(self, path: Path, write: Callable[[Path], None]) -> Path:
        staged = _Staged(path, self._overwrite or os.path.abspath(path) in self._replaceable)
        self._staged.append(staged)
        staged.write(write)
        return path


def _check_grid_kept(image: sitk.Image, written: Path | None, path: Path) -> None:
    """InputError when the file written for ``path`` does not hold ``image``'s grid: NIfTI and Analyze store only
    orthogonal directions, and ITK writes a sheared CT's (a tilted gantry's) as the nearest one, with a warning
    only, which would put the mask millimetres off the CT. The batch then writes nothing."""
    from gastric_propagate.data.volumes import geometry_difference

    if written is None:
        return
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(written))
    reader.ReadImageInformation()
    difference = geometry_difference(image, reader)
    if difference:
        raise InputError(f"The output {path} cannot hold the CT's grid in its format ({difference}: the CT's axes "
                         "are not at right angles, which NIfTI and Analyze cannot store), so the mask would lie off "
                         "the CT. Nothing was written. Write it as .nrrd or .mha, which keep the grid exactly.")


def write_mask(mask: np.ndarray, reference: sitk.Image, path: str | Path) -> Path:
    """Writes a uint8 (z, y, x) mask on exactly the reference's grid; the file appears whole or not at all."""
    with OutputBatch() as outputs:
        return outputs.mask(mask, reference, path)


def write_image(image: sitk.Image, path: str | Path) -> Path:
    """Writes an image; the file appears whole or not at all."""
    with OutputBatch() as outputs:
        return outputs.image(image, path)


class _Staged:
    """One output written under ``<folder>/.partial-<name>-XXXX/<name>`` (plus its data file, if any)."""

    def __init__(self, path: Path, overwrite: bool = True, removal: bool = False) -> None:
        self.path = path
        self.overwrite = overwrite
        self.removal = removal  # the file at ``path`` goes (``OutputBatch.remove``): nothing is written
        self.folder: Path | None = None
        self.created: list[Path] = []
        self.names: list[str] = []
        self.replaced: list[tuple[Path, Path | None]] = []  # (destination, its earlier file kept, or None)
        self.stranded: list[Path] = []  # earlier files ``restore`` could not put back: their folder is kept

    def write(self, write: Callable[[Path], None]) -> None:
        try:
            self.created = _make_folders(self.path.parent)
            # Same folder as the destination, so the rename cannot cross file systems.
            self.folder = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{self.path.name}-", dir=self.path.parent))
            write(self.folder / self.path.name)
        except (OSError, RuntimeError) as error:
            raise InputError(f"Could not write {self.path} ({last_line(error)}). Check that the folder is "
                             "writable and the disk has free space, then run again.") from error

    def keep_old(self) -> None:
        """Keeps the files this output will replace (a hard link, else a copy) in ``.old`` of its folder."""
        # The header (the file named as asked) last: until it is renamed the old header, if any, stays.
        self.names = [self.path.name] if self.removal else sorted(os.listdir(self.folder),
                                                                  key=lambda name: name == self.path.name)
        old = self.folder / ".old"
        old.mkdir()
        for name in self.names:
            destination = self.path.parent / name
            if os.path.isfile(destination):
                try:
                    os.link(destination, old / name)
                except OSError:
                    shutil.copy2(destination, old / name)

    def commit(self) -> None:
        for name in self.names:
            destination = self.path.parent / name
            kept = self.folder / ".old" / name
            if self.removal:
                if kept.exists():  # kept in .old until the batch is done: ``restore`` puts it back
                    os.unlink(destination)
                    self.replaced.append((destination, kept))
                continue
            if self.overwrite:
                os.replace(self.folder / name, destination)
            else:
                _move_without_replacing(self.folder / name, destination)
            self.replaced.append((destination, kept if kept.exists() else None))
        self.created = []

    def restore(self) -> bool:
        """Puts back what ``commit`` replaced; whether it all could be."""
        restored = True
        for destination, kept in reversed(self.replaced):
            try:
                if kept is None:
                    os.unlink(destination)
                else:
                    os.replace(kept, destination)
            except OSError:
                restored = False
                if kept is not None:
                    self.stranded.append(kept)
        self.replaced = []
        return restored

    def discard(self) -> None:
        if self.folder is not None and not self.stranded:  # never the only copy of an earlier file
            shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = None
        for folder in reversed(self.created):  # the folders this output made, innermost first, if still empty
            try:
                folder.rmdir()
            except OSError:
                break
        self.created = []


def _move_without_replacing(source: Path, destination: Path) -> None:
    """Moves ``source`` to ``destination``; FileExistsError (naming ``destination``) when a file is already there.

    A hard link cannot replace a file, so a file that appeared at ``destination`` (another run's) is never replaced.
    Where hard links are not supported (e.g. FAT, some network shares), the name is reserved by an exclusive create
    first, then replaced by the rename.
    """
    try:
        os.link(source, destination)
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(destination)) from None
    except OSError:
        try:
            os.close(os.open(destination, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(destination)) from None
        try:
            os.replace(source, destination)
        except OSError:
            os.unlink(destination)  # the empty reservation
            raise
        return
    os.unlink(source)


def _make_folders(folder: Path) -> list[Path]:
    """Creates ``folder`` and missing parents; returns those created, outermost first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    created = []
    for path in reversed(missing):
        path.mkdir()
        created.append(path)
    return created


@contextmanager
def _signals_held():
    """Holds SIGTERM and SIGINT during a few renames, then delivers them (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {}
    try:
        for number in (signal.SIGTERM, signal.SIGINT):
            handler = signal.getsignal(number)
            if handler is not None:  # None: installed outside Python, cannot be put back
                previous[number] = signal.signal(number, lambda got, frame: received.append(got))
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for number in received:
            signal.raise_signal(number)
