"""Reading volumes and writing results with SimpleITK: geometry checks and writes that never leave half a file.

Every output is first written under a temporary folder beside its destination (``.partial-<name>-*``), then
renamed into place. A header + data format (``.nhdr``, ``.mhd``, ``.hdr``) is written there with its final names,
so the header names the right data file; the data file is renamed first, the header last. Several outputs of one
run (a mask and its report) are renamed together, after all of them were written, and SIGTERM/SIGINT received
during the renames are held until the renames are done. A crash or SIGTERM therefore leaves the old files or the
whole new ones, and no ``.partial`` folder. Without ``overwrite`` an output is put in place by a hard link, not a
rename, so that a file that appeared there during the run (another run's) is never replaced.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import re
import shutil
import signal
import stat
import struct
import tempfile
import threading
import zlib
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
    """Reads a 3D scalar volume; InputError with what to do when the file is missing, unreadable, truncated,
    corrupt, of non-finite geometry or not 3D."""
    path = Path(path)
    _check_readable_file(path, what)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    gzipped = _is_gzip(path)
    if _nrrd_non_finite(path):  # ITK reads a (nan, nan, nan) NRRD direction as a 1 mm identity axis
        raise _corrupt_geometry(path, what, "its header gives a NaN or Inf space direction, spacing or origin")
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
        _check_geometry(path, reader, what)
        if not gzipped:
            _check_complete(path, nbytes, what)  # ITK reads a short NIfTI as zeros
        image = reader.Execute()
    except RuntimeError as error:
        if gzipped:  # ITK cannot tell a corrupt stream from a foreign file
            _gunzipped_size(path, what)
        short = re.search(r"expected (\d+) bytes but received (\d+)", str(error))
        if short:  # a NRRD's data ends early
            raise _truncated(path, what, int(short.group(2)), int(short.group(1))) from error
        raise InputError(f"The {what} file {path} cannot be read as a medical image ({_first_line(error)}). Use "
                         "NRRD, NIfTI, MetaImage or another format SimpleITK reads.") from error
    if gzipped:
        _check_gzip_complete(path, image, what)
    if image.GetDimension() != 3:
        raise InputError(f"The {what} {path} is {image.GetDimension()}D (size {image.GetSize()}); a 3D volume is "
                         "needed. Load the whole CT series, not a single slice.")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"The {what} {path} has {image.GetNumberOfComponentsPerPixel()} components per voxel "
                         "(colour or vector image); a scalar CT volume is needed.")
    return image


def _check_readable_file(path: Path, what: str) -> None:
    """InputError saying what the path is when it is not a regular file: missing, a folder, a device, a loop."""
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise InputError(f"The {what} path {path} is a loop of symbolic links that never reaches a file. "
                             "Give the path of the file itself.") from None
        if path.is_symlink():
            raise InputError(f"The {what} path {path} is a symbolic link to {os.readlink(path)}, which does not "
                             "exist. Give the path of the file itself.") from None
        raise InputError(f"The {what} file {path} does not exist. Check the path.") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"The {what} path {path} is a folder, not a file. Give the volume file (for a DICOM "
                         "series, load it in 3D Slicer and save it as NRRD, then give that file).")
    if not stat.S_ISREG(mode):
        raise InputError(f"The {what} path {path} is not a regular file (a device, pipe or socket); the volume is "
                         "read twice, to check it, so it must be a file on disk. Save it to a file and give that.")


def _check_geometry(path: Path, reader: sitk.ImageFileReader, what: str) -> None:
    """InputError unless the spacing is positive and the spacing, origin and direction finite."""
    problem = None
    spacing, origin, direction = reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection()
    if not np.all(np.isfinite(np.concatenate([spacing, origin, direction]))):
        problem = f"spacing {spacing}, origin {origin}, direction {direction} are not all finite numbers"
    elif min(spacing) <= 0:
        problem = f"its voxel spacing {spacing} is not positive"
    elif abs(np.linalg.det(np.reshape(direction, (len(spacing),) * 2))) < 1e-6:
        problem = f"its direction {direction} is degenerate (two axes point the same way, or one is zero)"
    if problem:
        raise _corrupt_geometry(path, what, problem)


def _corrupt_geometry(path: Path, what: str, problem: str) -> InputError:
    return InputError(f"The {what} file {path} has a corrupt geometry: {problem}. Re-export the volume from its "
                      "source (e.g. 3D Slicer or the DICOM series), then run again.")


def _nrrd_non_finite(path: Path) -> bool:
    """Whether a NRRD header's space directions, spacings or origin hold NaN or Inf."""
    if _extension(path, (".nrrd", ".nhdr")) is None:
        return False
    with open(path, "rb") as handle:
        header = handle.read(65536).split(b"\n\n", 1)[0].decode("latin-1")
    fields = re.findall(r"^(?:space directions|spacings|space origin)\s*:(.*)$", header, re.IGNORECASE | re.MULTILINE)
    return any(re.search(r"nan|inf", value, re.IGNORECASE) for value in fields)


def _check_complete(path: Path, nbytes: int, what: str) -> None:
    """InputError when an uncompressed file holds fewer bytes of image data than its header declares (NIfTI,
    MetaImage with its data inside); ITK refuses a short NRRD itself."""
    nifti = _nifti_data(path, open)
    if nifti is not None:
        available, (offset, nbytes) = path.stat().st_size, nifti
    else:
        available, offset = _metaimage_data(path, nbytes, what)
    if offset is not None and available < offset + nbytes:
        raise _truncated(path, what, max(available - offset, 0), nbytes)


def _check_gzip_complete(path: Path, image: sitk.Image, what: str) -> None:
    """InputError when a gzip file is truncated or corrupt: ITK checks neither the stream's checksum nor its length,
    and reads a short NIfTI as zeros. The voxels ITK read are checked against the stream's trailer, so that a whole
    file is inflated once; only when they differ (a damaged file, or voxels ITK converted: byte-swapped or rescaled)
    is the stream inflated again, and checked whole."""
    if _trailer_matches(path, image):
        return
    unpacked, nifti = _gunzipped_size(path, what), _nifti_data(path, gzip.open)
    if nifti is not None and unpacked < sum(nifti):
        offset, nbytes = nifti
        raise _truncated(path, what, max(unpacked - offset, 0), nbytes)


def _trailer_matches(path: Path, image: sitk.Image) -> bool:
    """Whether a gzip NIfTI's trailer (CRC-32 and length of the content) is that of its header followed by exactly
    the voxels ITK read: then the stream is whole, and so is the image."""
    voxels = sitk.GetArrayViewFromImage(image)
    try:
        with open(path, "rb") as handle:
            handle.seek(max(path.stat().st_size - 8, 0))
            trailer = handle.read(8)
        nifti = _nifti_data(path, gzip.open)
        if len(trailer) != 8 or nifti is None:
            return False
        crc, length = struct.unpack("<II", trailer)
        offset = nifti[0]
        if (offset + voxels.nbytes) % (1 << 32) != length:
            return False
        with gzip.open(path, "rb") as stream:
            header = stream.read(offset)
    except (OSError, EOFError, zlib.error):  # gzip.BadGzipFile is an OSError
        return False
    return len(header) == offset and zlib.crc32(voxels, zlib.crc32(header)) == crc


def _truncated(path: Path, what: str, held: int, declared: int) -> InputError:
    return InputError(f"The {what} file {path} is truncated: it holds {held:,} bytes of image data where its header "
                      f"declares {declared:,}. It was probably cut short while being copied, downloaded or written; "
                      "copy or export it again, then run again.")


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def _gunzipped_size(path: Path, what: str) -> int:
    """The size of a gzip file's content, read whole so that its checksum and length are verified."""
    size = 0
    try:
        with gzip.open(path, "rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 24), b""):
                size += len(chunk)
    except EOFError as error:
        raise InputError(f"The {what} file {path} is truncated: its compressed stream ends early ({error}). It was "
                         "probably cut short while being copied, downloaded or written; copy or export it again, "
                         "then run again.") from error
    except (gzip.BadGzipFile, zlib.error, OSError) as error:
        raise InputError(f"The {what} file {path} is corrupt: its compressed data fail the gzip checks ({error}). "
                         "Copy or export it again, then run again.") from error
    return size


def _nifti_data(path: Path, opener) -> tuple[int, int] | None:
    """(where the voxels start, how many bytes they take) in a NIfTI-1 or NIfTI-2 file, by its own header: ITK
    returns rescaled voxels (``scl_slope``, ``scl_inter``) as floats, larger than the file's. None for other formats."""
    if _extension(path, (".nii", ".nii.gz")) is None:
        return None
    with opener(path, "rb") as handle:
        header = handle.read(544)
    for order in "<>":
        if len(header) >= 348 and struct.unpack(order + "i", header[:4])[0] == 348:
            dims, bitpix = struct.unpack(order + "8h", header[40:56]), struct.unpack(order + "h", header[72:74])[0]
            offset = int(struct.unpack(order + "f", header[108:112])[0])
        elif len(header) >= 544 and struct.unpack(order + "i", header[:4])[0] == 540:
            dims, bitpix = struct.unpack(order + "8q", header[16:80]), struct.unpack(order + "h", header[14:16])[0]
            offset = struct.unpack(order + "q", header[168:176])[0]
        else:
            continue
        if not 1 <= dims[0] <= 7 or bitpix <= 0:
            return None
        return offset, int(np.prod(dims[1:1 + dims[0]], dtype=np.int64)) * bitpix // 8
    return None


def _metaimage_data(path: Path, nbytes: int, what: str) -> tuple[int | None, int | None]:
    """(bytes of voxel data, 0) for a .mha holding its data (a compressed one inflated whole: zlib checks its
    checksum); (None, None) for other files."""
    if _extension(path, (".mha",)) is None:
        return None, None
    with open(path, "rb") as handle:
        head = handle.read(65536)
    found = re.search(rb"^ElementDataFile\s*=\s*LOCAL[ \t]*\r?\n", head, re.MULTILINE)
    if found is None:
        return None, None
    if re.search(rb"^CompressedData\s*=\s*True", head[:found.start()], re.MULTILINE | re.IGNORECASE) is None:
        return path.stat().st_size - found.end(), 0
    inflate, size = zlib.decompressobj(), 0
    with open(path, "rb") as handle:
        handle.seek(found.end())
        try:
            for chunk in iter(lambda: handle.read(1 << 24), b""):
                size += len(inflate.decompress(chunk))
        except zlib.error as error:
            raise InputError(f"The {what} file {path} is corrupt: its compressed data fail the zlib checks "
                             f"({error}). Copy or export it again, then run again.") from error
    return (size if inflate.eof else min(size, nbytes - 1)), 0


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
            without ``overwrite``, an output that is not a regular file (a device, a symbolic link), or a folder
            that cannot be written.
    """
    given = {what: Path(path) for what, path in outputs.items() if path is not None}
    input_paths = [Path(path) for path in inputs]
    for what, path in given.items():
        if path.is_dir() or str(outputs[what]).endswith(("/", os.sep)):
            raise InputError(f"The {what} {path} is a folder; give a file name (e.g. {path / 'tumour.nrrd'}).")
        if path.is_symlink() or _special_file(path):
            kind = f"a symbolic link to {os.readlink(path)}" if path.is_symlink() else "a device, pipe or socket"
            raise InputError(f"The {what} {path} is not a regular file ({kind}): writing the result would replace "
                             "it with a file, even with --overwrite. Give the path of a new or ordinary file.")
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
    written = Path(path).name[-len(extension):]
    if written != extension:
        raise InputError(f"The {what} {path} ends in '{written}': ITK (and so 3D Slicer) reads and writes some formats "
                         f"by their lower-case extension only ('.nii.GZ' and '.MHA' cannot be read back). Name it "
                         f"'{Path(path).name[:-len(extension)]}{extension}'.")
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
        """Renames every staged output into place (SIGTERM/SIGINT held meanwhile). When one cannot be renamed (a
        read-only or immutable file), those already renamed are put back: all of them are replaced, or none."""
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
                    kept = "the earlier files are kept" if restored else "some earlier files could not be put back"
                    if isinstance(error, FileExistsError):
                        raise InputError(f"Did not write {done[-1].path}: {error.filename} exists now, though it did "
                                         "not when this run began (another run writing to the same path?). It is "
                                         f"kept and nothing was written ({kept}). Choose another path, or pass "
                                         "--overwrite to replace it.") from error
                    raise InputError(f"Could not replace {done[-1].path} ({error.strerror or error}): nothing was "
                                     f"written ({kept}). Check that it is not read-only or locked and that the folder "
                                     "is writable, then run again.") from error
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
        staged = _Staged(path, self._overwrite or os.path.abspath(path) in self._replaceable)
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

    def __init__(self, path: Path, overwrite: bool = True) -> None:
        self.path = path
        self.overwrite = overwrite
        self.folder: Path | None = None
        self.created: list[Path] = []
        self.names: list[str] = []
        self.replaced: list[tuple[Path, Path | None]] = []  # (destination, its earlier file kept, or None)

    def write(self, write: Callable[[Path], None]) -> None:
        try:
            self.created = _make_folders(self.path.parent)
            # Same folder as the destination, so the rename cannot cross file systems.
            self.folder = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{self.path.name}-", dir=self.path.parent))
            write(self.folder / self.path.name)
        except (OSError, RuntimeError) as error:
            raise InputError(f"Could not write {self.path} ({_first_line(error)}). Check that the folder is "
                             "writable and the disk has free space, then run again.") from error

    def keep_old(self) -> None:
        """Keeps the files this output will replace (a hard link, else a copy) in ``.old`` of its folder."""
        # The header (the file named as asked) last: until it is renamed the old header, if any, stays.
        self.names = sorted(os.listdir(self.folder), key=lambda name: name == self.path.name)
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
        self.replaced = []
        return restored

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


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except (OSError, ValueError, RuntimeError):  # RuntimeError: a symbolic link loop (Python < 3.13)
        return False


def _special_file(path: Path) -> bool:
    """Whether ``path`` exists (following links) and is not a regular file or a folder: a device, pipe, socket."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


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
