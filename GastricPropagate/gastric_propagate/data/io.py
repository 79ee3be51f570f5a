"""Reading volumes and writing results with SimpleITK: geometry checks and writes that never leave half a file.

Every output is first written under a temporary folder beside its destination (``.partial-<name>-*``), then
renamed into place. A header + data format (``.nhdr``, ``.mhd``, ``.hdr``) is written there with its final names,
so the header names the right data file; the data file is renamed first, the header last. Several outputs of one
run (a mask and its report) are renamed together, after all of them were written, and SIGTERM/SIGINT received
during the renames are held until the renames are done. A crash or SIGTERM therefore leaves the old files or the
whole new ones, and no ``.partial`` folder.
"""

from __future__ import annotations

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

from gastric_propagate.errors import InputError
from gastric_propagate.data.validation import MAX_BYTES, MAX_VOXELS

# Geometry may differ by rounding in headers (e.g. NIfTI's float32 affine), not by more. Spacing is compared
# relative to itself, the origin in fractions of the smallest voxel side (never in proportion to the origin's
# size: at z = -1500 mm a tolerance relative to the origin would accept a shift of a whole slice).
SPACING_TOLERANCE = 1e-4
ORIGIN_TOLERANCE_VOXELS = 0.01
DIRECTION_TOLERANCE = 1e-3

# Output formats that keep a 3D label's whole geometry (size, spacing, origin and direction).
SINGLE_FILE_OUTPUTS = (".nrrd", ".nii.gz", ".nii", ".mha")
HEADER_DATA_OUTPUTS = (".nhdr", ".mhd", ".hdr")
MASK_OUTPUTS = SINGLE_FILE_OUTPUTS + HEADER_DATA_OUTPUTS
PARTIAL_PREFIX = ".partial-"


def read_volume(path: str | Path, what: str = "image") -> sitk.Image:
    """Reads a 3D scalar volume; InputError with what to do when the file is missing, unreadable or not 3D."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"The {what} file {path} does not exist. Check the path.")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()  # the header first: a huge volume is refused before it fills memory
        size = reader.GetSize()
        voxels = int(np.prod(size, dtype=np.int64))
        nbytes = voxels * _bytes_per_voxel(reader)
        if voxels > MAX_VOXELS or nbytes > MAX_BYTES:
            raise InputError(f"The {what} {path} has {voxels:,} voxels (size {size}, {nbytes / 1e9:.1f} GB in "
                             f"memory), more than the {MAX_VOXELS:,} voxels or {MAX_BYTES / 1e9:.1f} GB this tool "
                             "accepts. Crop it to the abdomen first (e.g. Slicer's Crop Volume module), or save it "
                             "as 16-bit integers rather than 64-bit floats, then run again.")
        image = reader.Execute()
    except RuntimeError as error:
        raise InputError(f"The {what} file {path} cannot be read as a medical image ({_first_line(error)}). Use "
                         "NRRD, NIfTI, MetaImage or another format SimpleITK reads.") from error
    if image.GetDimension() != 3:
        raise InputError(f"The {what} {path} is {image.GetDimension()}D (size {image.GetSize()}); a 3D volume is "
                         "needed. Load the whole CT series, not a single slice.")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"The {what} {path} has {image.GetNumberOfComponentsPerPixel()} components per voxel "
                         "(colour or vector image); a scalar CT volume is needed.")
    return image


def geometry_difference(a, b) -> str | None:
    """What differs between two voxel grids (size, spacing, origin, direction), or None.

    ``a`` and ``b`` are ``sitk.Image`` or ``sitk.ImageFileReader`` (headers only).
    """
    if a.GetSize() != b.GetSize():
        return f"size {a.GetSize()} vs {b.GetSize()}"
    spacing = np.asarray(a.GetSpacing(), dtype=float)
    tolerances = {"Spacing": {"rtol": SPACING_TOLERANCE, "atol": 0.0},
                  "Origin": {"rtol": 0.0, "atol": ORIGIN_TOLERANCE_VOXELS * float(np.min(np.abs(spacing)))},
                  "Direction": {"rtol": 0.0, "atol": DIRECTION_TOLERANCE}}
    for name, tolerance in tolerances.items():
        first, second = getattr(a, f"Get{name}")(), getattr(b, f"Get{name}")()
        if not np.allclose(first, second, equal_nan=False, **tolerance):
            return f"{name.lower()} {tuple(round(v, 4) for v in first)} vs {tuple(round(v, 4) for v in second)}"
    return None


def refuse_existing(path: str | Path, overwrite: bool) -> None:
    """Refuses to replace an existing output unless asked to."""
    if Path(path).exists() and not overwrite:
        raise InputError(f"The output {path} already exists. Choose another path, or pass --overwrite to replace it.")


def check_outputs(outputs: dict[str, str | Path | None], *, inputs: Iterable[str | Path] = (),
                  overwrite: bool = False, mask_outputs: Iterable[str] = ()) -> None:
    """Checks output paths before any work is done, so that a bad path is refused at once, not after the run.

    Args:
        outputs: what each output is (for the message), e.g. ``{"output": "mask.nrrd", "report": None}``;
            None entries are skipped.
        inputs: the run's input files; no output may be one of them, even with ``overwrite``.
        overwrite: existing outputs may be replaced.
        mask_outputs: the keys of ``outputs`` that are label volumes (their extension is checked).

    Raises:
        InputError: an unsupported format, an output that is an input or another output, an existing output
            without ``overwrite``, or a folder that cannot be written.
    """
    given = {what: Path(path) for what, path in outputs.items() if path is not None}
    input_paths = [Path(path) for path in inputs]
    for what, path in given.items():
        if path.is_dir() or str(outputs[what]).endswith(("/", os.sep)):
            raise InputError(f"The {what} {path} is a folder; give a file name (e.g. {path / 'tumour.nrrd'}).")
        if what in mask_outputs:
            check_mask_format(path, what)
        for source in input_paths:
            if _same_file(path, source):
                raise InputError(f"The {what} {path} is the input file {source}: writing it would destroy your "
                                 "input. Choose another output path.")
        for other_what, other in given.items():
            if other_what != what and _same_file(path, other):
                raise InputError(f"The {what} and the {other_what} are the same file ({path}): one would overwrite "
                                 "the other. Give them different paths.")
        refuse_existing(path, overwrite)
        check_writable_folder(path.parent, f"the {what} {path}")


def check_mask_format(path: str | Path, what: str = "output") -> str:
    """The extension of a label output; InputError naming the accepted ones when it cannot hold a 3D label."""
    extension = _extension(Path(path), MASK_OUTPUTS)
    if extension is None:
        raise InputError(
            f"The {what} {path} has an extension this tool cannot write a 3D label to with its full geometry "
            f"(size, spacing, origin and direction). Use {', '.join(SINGLE_FILE_OUTPUTS)} (one file) or "
            f"{', '.join(HEADER_DATA_OUTPUTS)} (header + data file); 2D formats such as .png and formats that drop "
            "the direction (.tif, .vtk, .gipl) are refused.")
    return extension


def check_writable_folder(folder: str | Path, what: str | None = None) -> None:
    """InputError unless ``folder`` exists and is writable, or could be created (its nearest existing parent is)."""
    folder = Path(folder) if str(folder) else Path(".")
    what = what or f"the folder {folder}"
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"Cannot write {what}: {existing} is a file, not a folder. Choose another path.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"Cannot write {what}: the folder {existing} is not writable. Choose a folder you can "
                         "write to.")


class OutputBatch:
    """Outputs that appear together and whole, or not at all.

    Each method writes one output under a temporary folder beside it; leaving the ``with`` block without an error
    renames them all into place, an error (or SIGTERM) removes them::

        with OutputBatch() as outputs:
            outputs.mask(mask, ct, "tumour.nrrd")
            outputs.json(report, "report.json")
    """

    def __init__(self) -> None:
        self._staged: list[_Staged] = []

    def mask(self, mask: np.ndarray, reference: sitk.Image, path: str | Path) -> Path:
        """A uint8 (z, y, x) mask on exactly the reference's grid."""
        image = sitk.GetImageFromArray(np.asarray(mask).astype(np.uint8))
        image.CopyInformation(reference)
        return self.image(image, path)

    def image(self, image: sitk.Image, path: str | Path) -> Path:
        """A SimpleITK image, compressed where the format allows."""
        return self._stage(Path(path), lambda temporary: sitk.WriteImage(image, str(temporary), useCompression=True))

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

    def commit(self) -> None:
        """Renames every staged output into place (SIGTERM/SIGINT held meanwhile)."""
        try:
            with _signals_held():
                for staged in self._staged:
                    staged.commit()
                self.discard()  # the emptied temporary folders, before any held signal is delivered
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
        staged = _Staged(path)
        self._staged.append(staged)
        staged.write(write)
        return path


def write_mask(mask: np.ndarray, reference: sitk.Image, path: str | Path) -> Path:
    """Writes a uint8 (z, y, x) mask on exactly the reference's grid; the file appears whole or not at all."""
    with OutputBatch() as outputs:
        return outputs.mask(mask, reference, path)


def write_image(image: sitk.Image, path: str | Path) -> Path:
    """Writes an image; the file appears whole or not at all."""
    with OutputBatch() as outputs:
        return outputs.image(image, path)


def write_json(data: dict, path: str | Path) -> Path:
    """Writes JSON; the file appears whole or not at all."""
    with OutputBatch() as outputs:
        return outputs.json(data, path)


class _Staged:
    """One output written under ``<folder>/.partial-<name>-XXXX/<name>`` (plus its data file, if any)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.folder: Path | None = None
        self.created: list[Path] = []

    def write(self, write: Callable[[Path], None]) -> None:
        try:
            self.created = _make_folders(self.path.parent)
            # Same folder as the destination, so the rename cannot cross file systems.
            self.folder = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{self.path.name}-", dir=self.path.parent))
            write(self.folder / self.path.name)
        except (OSError, RuntimeError) as error:
            raise InputError(f"Could not write {self.path} ({_first_line(error)}). Check that the folder is "
                             "writable and the disk has free space, then run again.") from error

    def commit(self) -> None:
        # The header (the file named as asked) last: until it is renamed the old header, if any, stays.
        names = sorted(os.listdir(self.folder), key=lambda name: name == self.path.name)
        for name in names:
            os.replace(self.folder / name, self.path.parent / name)
        self.created = []

    def discard(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
        for folder in reversed(self.created):  # the folders this output made, innermost first, if still empty
            try:
                folder.rmdir()
            except OSError:
                break
        self.created = []


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


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except (OSError, ValueError):
        return False


def _extension(path: Path, extensions: Iterable[str]) -> str | None:
    name = path.name.lower()
    for extension in sorted(extensions, key=len, reverse=True):
        if name.endswith(extension) and len(name) > len(extension):
            return extension
    return None


def _bytes_per_voxel(reader: sitk.ImageFileReader) -> int:
    probe = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID(), reader.GetNumberOfComponents())
    return probe.GetSizeOfPixelComponent() * reader.GetNumberOfComponents()


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else error.__class__.__name__
