"""Reading a CT or label volume with SimpleITK, refusing what ITK would read wrongly or not at all (a missing,
truncated, corrupt, too large or non-3D file, a non-finite geometry), and comparing two voxel grids."""

from __future__ import annotations

import errno
import gzip
import os
import re
import stat
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Iterable

import numpy as np
import SimpleITK as sitk

from gastric_propagate.errors import InputError, last_line
from gastric_propagate.data.validation import MAX_BYTES, MAX_VOXELS

# Geometry may differ by rounding in headers (e.g. NIfTI's float32 affine), not by more. Spacing is compared
# relative to itself, the origin in fractions of the smallest voxel side (never in proportion to the origin's
# size: at z = -1500 mm a tolerance relative to the origin would accept a shift of a whole slice).
SPACING_TOLERANCE = 1e-4
ORIGIN_TOLERANCE_VOXELS = 0.01
DIRECTION_TOLERANCE = 1e-3


def read_volume(path: str | Path, what: str = "image") -> sitk.Image:
    """Reads a 3D scalar volume; InputError with what to do when the file is missing, unreadable, truncated,
    corrupt, of non-finite geometry or not 3D."""
    if not str(path).strip():  # Path("") is the current folder: said as what it is, an empty argument
        raise InputError(f"The {what} path is empty: give the path of the {what} file.")
    path = Path(path)
    check_path_text(path, what)
    _check_readable_file(path, what)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    gzipped = _is_gzip(path)
    compressed_mha = _compressed_metaimage(path)
    if _nrrd_non_finite(path):  # ITK reads a (nan, nan, nan) NRRD direction as a 1 mm identity axis
        raise _corrupt_geometry(path, what, "its header gives a NaN or Inf space direction, spacing or origin")
    data_file = _data_file(path, what)  # a header whose data file is missing: said so before ITK's own words
    nbytes = None  # known once ITK has read the header
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
        if not gzipped and compressed_mha is None:
            _check_complete(path, nbytes, what, data_file)  # ITK reads a short NIfTI as zeros
        image = reader.Execute()
    except RuntimeError as error:
        if gzipped:  # ITK cannot tell a corrupt stream from a foreign file
            _gunzipped_size(path, what)
        if compressed_mha is not None and nbytes is not None:
            _check_complete(path, nbytes, what, data_file)
        short = re.search(r"expected (\d+) bytes but received (\d+)", str(error))
        if short:  # a NRRD's data ends early
            raise _truncated(path, what, int(short.group(2)), int(short.group(1))) from error
        raise unreadable(path, what, error) from error
    whole = _check_gzip_complete(path, image, what) if gzipped else False
    if not whole:  # voxels ITK changed (or an uncompressed file): NIfTI's reader turns NaN and Inf into 0
        _check_nifti_finite(path, what, gzip.open if gzipped else open, data_file)
    if compressed_mha is not None and not _adler_matches(path, compressed_mha, image):
        _check_metaimage_voxels(path, compressed_mha[0], image, nbytes, what)
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:  # one time point of a 4D series: that volume
        image = image[:, :, :, 0]
    if image.GetDimension() != 3:
        if image.GetDimension() > 3:
            advice = "It holds several volumes (phases or time points): save the one you painted on as its own file."
        elif what == "annotation":  # the painted slice saved alone (a screenshot, a 2D export)
            advice = ("Save the painted segment as a 3D label map on the CT's grid (in Slicer: Segmentations "
                      "module > Export/import models and labelmaps), then run again.")
        else:
            advice = "Load the whole CT series, not a single slice."
        raise InputError(f"The {what} {path} is {image.GetDimension()}D (size {image.GetSize()}); a 3D volume is "
                         f"needed. {advice}")
    if image.GetNumberOfComponentsPerPixel() != 1:
        components = image.GetNumberOfComponentsPerPixel()
        if what == "image":
            raise InputError(f"The {what} {path} has {components} components per voxel (colour or vector image); a "
                             "scalar CT volume is needed.")
        raise InputError(f"The {what} {path} has {components} components per voxel (a segmentation whose segments "
                         "overlap is stored in layers); a label map is needed. Export the painted segment alone as a "
                         "label map on the CT's grid (in Slicer: Segmentations module > Export/import models and "
                         "labelmaps), then run again.")
    return image


def unreadable(path: str | Path, what: str, error: Exception) -> InputError:
    """The refusal of a file ITK cannot read at all (not an image, or a format it does not know): the same words for
    segment's inputs and the cases of a --data folder."""
    extension = matching_extension(Path(path), _CASE_SENSITIVE_EXTENSIONS)
    written = Path(path).name[-len(extension):] if extension else None
    # MetaImage is read in lower case only, NIfTI in lower or upper case (not mixed): only then can renaming help.
    rejected = written is not None and written != extension and (
        extension in (".mha", ".mhd") or written != extension.upper())
    if rejected and "ImageIO" in str(error):  # ITK found no reader for the name (not a damaged file it knew)
        return InputError(f"The {what} file {path} cannot be read: ITK (and so 3D Slicer) reads some formats by their "
                          f"lower-case extension only, and this one ends in '{written}'. Rename it to "
                          f"'{Path(path).name[:-len(extension)]}{extension}', then run again.")
    return InputError(f"The {what} file {path} cannot be read as a medical image ({last_line(error)}). Use NRRD, "
                      "NIfTI, MetaImage or another format SimpleITK reads.")


#: Extensions ITK does not read in every case: MetaImage in lower case only, NIfTI not in mixed case ('.nii.GZ');
#: NRRD in any.
_CASE_SENSITIVE_EXTENSIONS = (".nii.gz", ".nii", ".mha", ".mhd")


def check_path_text(path: str | Path, what: str) -> None:
    """InputError for a path that is not valid text (a file name in another encoding than the system's): ITK would
    abort the whole process on it."""
    if "\x00" in str(path):  # no file system allows it; os.stat would say "embedded null byte"
        raise InputError(f"The {what} path {str(path)!r} holds a null character, which no file name can. Give the "
                         "path as it is written on disk.")
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"The {what} path {str(path)!r} holds characters that are not valid text in this system's "
                         "encoding (a name from another system). Use a name in plain text (rename the file or its "
                         "folder), then run again.") from None


def slice_axis(image: sitk.Image) -> str:
    """Which way the volume's third voxel index (its K slices' normal) runs in the patient: "axial" (head-foot),
    "sagittal" (left-right) or "coronal" (front-back), by its largest direction component."""
    return slice_orientation(np.reshape(image.GetDirection(), (3, 3))[:, 2])


def slice_orientation(k_axis) -> str:
    """``slice_axis`` of a volume whose K axis runs along ``k_axis`` (3 components in LPS or RAS, scaled or not)."""
    return ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(np.asarray(k_axis, dtype=float)[:3])))]


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


def _nrrd_header(path: Path, extensions: tuple[str, ...] = (".nrrd", ".nhdr"), *,
                 ended: bool = False) -> str | None:
    """A NRRD file's header: its first 64 kB up to the blank line that ends the header; None for another extension,
    and, when ``ended``, where no blank line ends it there."""
    if matching_extension(path, extensions) is None:
        return None
    with open(path, "rb") as handle:
        head = handle.read(65536)
    if ended and b"\n\n" not in head:
        return None
    return head.split(b"\n\n", 1)[0].decode("latin-1")


def _nrrd_non_finite(path: Path) -> bool:
    """Whether a NRRD header's space directions, spacings or origin hold NaN or Inf."""
    header = _nrrd_header(path)
    if header is None:
        return False
    fields = re.findall(r"^(?:space directions|spacings|space origin)\s*:(.*)$", header, re.IGNORECASE | re.MULTILINE)
    return any(re.search(r"nan|inf", value, re.IGNORECASE) for value in fields)


def _check_complete(path: Path, nbytes: int, what: str, data_file: tuple[Path, str, int] | None) -> None:
    """InputError when an uncompressed file, or the data file of a header, holds fewer bytes of image data than its
    header declares (NIfTI, MetaImage with its data inside, Analyze/NIfTI .hdr + .img, MetaImage .mhd + .raw/.zraw,
    NRRD .nhdr + raw data: ITK reads a short .nii or .img as zeros, and calls a short .raw a missing file).
    ``data_file``: ``_data_file``'s answer for ``path``."""
    detached = None if data_file is None else _detached_data(path, data_file, nbytes, what)
    if detached is not None:
        data, held, declared = detached
        if held < declared:
            raise _truncated(data, what, held, declared)
        return
    nifti, raw_start = _nifti_data(path, open), _nrrd_raw_start(path)
    if nifti is not None:
        available, (offset, nbytes) = path.stat().st_size, nifti
    elif raw_start is not None:
        available, offset = path.stat().st_size - raw_start, 0
    else:
        available, offset = _metaimage_data(path, nbytes, what)
    if offset is not None and available < offset + nbytes:
        raise _truncated(path, what, max(available - offset, 0), nbytes)


# The data files ITK puts beside a header, by the header's extension: uncompressed, then compressed (ITK's NIfTI
# writer leaves a .hdr's .img uncompressed either way); the same case as the header's extension (CT.HDR: CT.IMG).
DATA_FILES = {".hdr": (".img", ".img.gz"), ".mhd": (".raw", ".zraw"), ".nhdr": (".raw", ".raw.gz")}
# The one this tool's outputs get: they are written compressed (``outputs.OutputBatch``).
WRITTEN_DATA_FILE = {".hdr": ".img", ".mhd": ".zraw", ".nhdr": ".raw.gz"}


def _in_case_of(extension: str, written: str) -> str:
    return extension.upper() if written.isupper() else extension


def written_data_files(path: str | Path) -> list[Path]:
    """The data file this tool writes beside a header output (``mask.nhdr`` -> ``mask.raw.gz``); [] for one file."""
    path = Path(path)
    extension = matching_extension(path, tuple(DATA_FILES))
    if extension is None:
        return []
    stem, written = path.name[:-len(extension)], path.name[-len(extension):]
    return [path.with_name(stem + _in_case_of(WRITTEN_DATA_FILE[extension], written))]


def companion_files(path: str | Path) -> list[Path]:
    """The other files of an existing volume held as header + data: a header's data files (those of ITK's names that
    exist, and the one the header names), or a .img's header; [] for a volume in one file."""
    path = Path(path)
    extension = matching_extension(path, (".img", ".img.gz"))
    if extension is not None:
        stem, written = path.name[:-len(extension)], path.name[-len(extension):]
        return [path.with_name(stem + _in_case_of(".hdr", written))]
    extension = matching_extension(path, tuple(DATA_FILES))
    if extension is None:
        return []
    stem, written = path.name[:-len(extension)], path.name[-len(extension):]
    files = [path.with_name(stem + _in_case_of(suffix, written)) for suffix in DATA_FILES[extension]]
    files = [file for file in files if file.exists()]
    named = _named_data_file(path) if extension != ".hdr" and path.is_file() else None
    return files + ([named[0]] if named is not None and named[0] not in files else [])


def _named_data_file(path: Path) -> tuple[Path, str, int] | None:
    """(the data file, its compression: "" / "gzip" / "zlib", where its voxels start) that a .mhd or .nhdr header
    names; None for a layout not followed here (data inside the header, a list or pattern of files, skipped lines)."""
    text = path.read_bytes()[:65536].decode("latin-1")
    if matching_extension(path, (".mhd",)) is not None:
        name = re.search(r"^ElementDataFile\s*=\s*(.+?)\s*$", text, re.MULTILINE)
        skip = re.search(r"^HeaderSize\s*=\s*(-?\d+)", text, re.MULTILINE)
        compressed = re.search(r"^CompressedData\s*=\s*True", text, re.MULTILINE | re.IGNORECASE) is not None
        compression, start = ("zlib" if compressed else ""), int(skip.group(1)) if skip else 0
    else:
        name = re.search(r"^data ?file\s*:\s*(.+?)\s*$", text, re.MULTILINE | re.IGNORECASE)
        encoding = re.search(r"^encoding\s*:\s*(\S+)", text, re.MULTILINE | re.IGNORECASE)
        compression = {"raw": "", "gzip": "gzip", "gz": "gzip"}.get(encoding.group(1).lower() if encoding else "")
        start = -1 if re.search(r"^(byte|line) ?skip\s*:", text, re.MULTILINE | re.IGNORECASE) else 0
    if (name is None or compression is None or start < 0 or name.group(1).split()[0].upper() in ("LOCAL", "LIST")
            or "%" in name.group(1)
            or re.search(r"^BinaryData\s*=\s*False", text, re.MULTILINE | re.IGNORECASE)):  # text voxels
        return None
    return path.parent / name.group(1), compression, start


def _data_file(path: Path, what: str) -> tuple[Path, str, int] | None:
    """``_named_data_file`` for a .mhd or .nhdr, and the .img (or .img.gz, in the header's case) of a .hdr;
    InputError when that file does not exist; None for a volume in one file."""
    if matching_extension(path, (".hdr",)) is not None:
        stem, written = path.name[:-len(".hdr")], path.name[-len(".hdr"):]
        data = next(iter(companion_files(path)), path.with_name(stem + _in_case_of(".img", written)))
        found = (data, "gzip" if data.is_file() and _is_gzip(data) else "", 0)
    elif matching_extension(path, (".mhd", ".nhdr")) is not None:
        found = _named_data_file(path)
    else:
        return None
    if found is not None and not found[0].is_file():
        raise InputError(f"The {what} file {path} keeps its voxels in {found[0]}, which does not exist. Copy the "
                         "data file beside its header (or save the volume as one file: .nrrd, .nii.gz), then run "
                         "again.")
    return found


def _detached_data(path: Path, found: tuple[Path, str, int], nbytes: int,
                   what: str) -> tuple[Path, int, int] | None:
    """(the data file, bytes of voxel data it holds, bytes its header declares) for a header whose voxels lie in
    ``found`` (``_data_file``'s answer); None for a .hdr without a NIfTI or Analyze header."""
    data, compression, start = found
    if matching_extension(path, (".hdr",)) is not None:
        layout = _nifti_header(path, open)  # what the header declares (ITK may return rescaled, larger voxels)
        if layout is None:
            return None
        start, nbytes = layout
    if compression == "gzip":
        content = _gunzipped_size(data, what)
    elif compression == "zlib":
        content = _inflated(data, 0, start + nbytes, what)[0]
    else:
        content = data.stat().st_size
    return data, max(content - start, 0), nbytes


def _check_gzip_complete(path: Path, image: sitk.Image, what: str) -> bool:
    """InputError when a gzip file is truncated or corrupt: ITK checks neither the stream's checksum nor its length,
    and reads a short NIfTI as zeros. The voxels ITK read are checked against the stream's trailer, so that a whole
    file is inflated once; only when they differ (a damaged file, or voxels ITK converted: byte-swapped, rescaled,
    or NaN read as 0) is the stream inflated again, and checked whole. Returns whether ITK's voxels are the file's."""
    if _trailer_matches(path, image):
        return True
    unpacked, nifti = _gunzipped_size(path, what), _nifti_data(path, gzip.open)
    if nifti is not None and unpacked < sum(nifti):
        offset, nbytes = nifti
        raise _truncated(path, what, max(unpacked - offset, 0), nbytes)
    return False


# NIfTI's floating-point data types (its header's ``datatype``) -> numpy's.
_NIFTI_FLOATS = {16: "f4", 64: "f8"}


def _check_nifti_finite(path: Path, what: str, opener, data_file: tuple[Path, str, int] | None = None) -> None:
    """InputError when a NIfTI (or NIfTI/Analyze .hdr + .img) file's floating-point voxels hold NaN or Inf: ITK's
    reader (niftilib) returns them as 0. Scanned in blocks from the file itself; other formats and types pass.
    ``data_file``: ``_data_file``'s answer for ``path`` (a .hdr's .img)."""
    if matching_extension(path, (".hdr",)) is not None and data_file is not None:
        layout, dtype = _nifti_header(path, open), _nifti_float_type(path, open)
        path, opener = data_file[0], gzip.open if data_file[1] == "gzip" else open
    else:
        layout = _nifti_data(path, opener)
        dtype = _nifti_float_type(path, opener) if layout is not None else None
    if dtype is None or layout is None:
        return
    offset, nbytes = layout
    counts = {"NaN": 0, "Inf": 0}
    block = (1 << 24) // dtype.itemsize * dtype.itemsize
    with opener(path, "rb") as handle:
        handle.seek(offset)
        for start in range(0, nbytes, block):
            values = np.frombuffer(handle.read(min(block, nbytes - start)), dtype=dtype)
            counts["NaN"] += int(np.count_nonzero(np.isnan(values)))
            counts["Inf"] += int(np.count_nonzero(np.isinf(values)))
    if counts["NaN"] or counts["Inf"]:
        found = " and ".join(f"{count:,} {name}" for name, count in counts.items() if count)
        seen_as = "water" if what == "image" else "background"
        raise InputError(f"The {what} file {path} contains {found} voxels (read by ITK as 0, which would pass for "
                         f"{seen_as}). Fix or re-export the volume (NaN and Inf often come from a failed resampling "
                         "or conversion) and run again.")


def _nifti_float_type(path: Path, opener) -> np.dtype | None:
    """The numpy type of a NIfTI-1/2 file's voxels when they are float32 or float64 (its byte order); else None."""
    with opener(path, "rb") as handle:
        header = handle.read(72)
    for order in "<>":
        if len(header) < 72:
            return None
        size = struct.unpack(order + "i", header[:4])[0]
        if size not in (348, 540):
            continue
        where = 70 if size == 348 else 12  # NIfTI-1's datatype field, NIfTI-2's
        datatype = struct.unpack(order + "h", header[where:where + 2])[0]
        return np.dtype(order + _NIFTI_FLOATS[datatype]) if datatype in _NIFTI_FLOATS else None
    return None


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
    if matching_extension(path, (".nii", ".nii.gz")) is None:
        return None
    return _nifti_header(path, opener)


def _nifti_header(path: Path, opener) -> tuple[int, int] | None:
    """``_nifti_data`` of any file holding a NIfTI-1/2 or Analyze header (a .hdr's voxels start at the offset in its
    .img); None when it holds none."""
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


def _metaimage_layout(path: Path) -> tuple[int, bool, int | None] | None:
    """(where the voxel data start, whether they are compressed, the header's CompressedDataSize or None) for a
    .mha holding its data; None for other files."""
    if matching_extension(path, (".mha",)) is None:
        return None
    with open(path, "rb") as handle:
        head = handle.read(65536)
    found = re.search(rb"^ElementDataFile\s*=\s*LOCAL[ \t]*\r?\n", head, re.MULTILINE)
    if found is None:
        return None
    header = head[:found.start()]
    compressed = re.search(rb"^CompressedData\s*=\s*True", header, re.MULTILINE | re.IGNORECASE) is not None
    size = re.search(rb"^CompressedDataSize\s*=\s*(\d+)", header, re.MULTILINE)
    return found.end(), compressed, int(size.group(1)) if size else None


def _compressed_metaimage(path: Path) -> tuple[int, int | None] | None:
    """(where the zlib stream starts, its declared size or None) for a compressed .mha; else None."""
    layout = _metaimage_layout(path)
    if layout is None:
        return None
    start, compressed, size = layout
    return (start, size) if compressed else None


def _adler_matches(path: Path, stream: tuple[int, int | None], image: sitk.Image) -> bool:
    """Whether a compressed .mha's zlib trailer (the Adler-32 of its content) is that of the voxels ITK read: then
    the stream is whole, and it need not be inflated a second time to check it."""
    start, size = stream
    end = path.stat().st_size if size is None else start + size
    if end - start < 6:  # a zlib stream: 2 bytes of header, the data, 4 bytes of trailer
        return False
    with open(path, "rb") as handle:
        handle.seek(end - 4)
        trailer = handle.read(4)
    return len(trailer) == 4 and zlib.adler32(sitk.GetArrayViewFromImage(image)) == struct.unpack(">I", trailer)[0]


def _nrrd_raw_start(path: Path) -> int | None:
    """Where the voxels of a .nrrd holding them uncompressed (encoding raw, no detached data file) start: after the
    header's blank line; None for any other file."""
    header = _nrrd_header(path, (".nrrd",), ended=True)
    if header is None or not header.startswith("NRRD"):
        return None
    encoding = re.search(r"^encoding\s*:\s*(\S+)", header, re.MULTILINE | re.IGNORECASE)
    if (encoding is None or encoding.group(1).lower() != "raw"  # the same fields as ``_named_data_file`` reads
            or re.search(r"^(data ?file|(byte|line) ?skip)\s*:", header, re.MULTILINE | re.IGNORECASE)):
        return None
    return len(header.encode("latin-1")) + 2


def _metaimage_data(path: Path, nbytes: int, what: str) -> tuple[int | None, int | None]:
    """(bytes of voxel data, 0) for a .mha holding its data (a compressed one inflated whole: zlib checks its
    checksum); (None, None) for other files."""
    layout = _metaimage_layout(path)
    if layout is None:
        return None, None
    start, compressed, _size = layout
    if not compressed:
        return path.stat().st_size - start, 0
    return _inflated(path, start, nbytes, what)[0], 0


def _inflated(path: Path, start: int, nbytes: int, what: str) -> tuple[int, int]:
    """(bytes, Adler-32) of a compressed .mha's content from ``start``, inflated whole (zlib checks its checksum);
    a stream that ends early counts fewer than ``nbytes``; InputError when it is corrupt."""
    inflate, size, adler = zlib.decompressobj(), 0, zlib.adler32(b"")
    with open(path, "rb") as handle:
        handle.seek(start)
        try:
            for chunk in iter(lambda: handle.read(1 << 24), b""):
                content = inflate.decompress(chunk)
                size, adler = size + len(content), zlib.adler32(content, adler)
        except zlib.error as error:
            raise InputError(f"The {what} file {path} is corrupt: its compressed data fail the zlib checks "
                             f"({error}). Copy or export it again, then run again.") from error
    return (size if inflate.eof else min(size, nbytes - 1)), adler


def _check_metaimage_voxels(path: Path, start: int, image: sitk.Image, nbytes: int, what: str) -> None:
    """A compressed .mha whose trailer did not match the voxels ITK read, inflated whole: InputError when it is
    short or corrupt, or when its content is not those voxels in either byte order (ITK's MetaImage reader returns,
    without an error, a buffer it never filled when it fails to inflate a stream, e.g. one whose header lacks
    CompressedDataSize)."""
    size, adler = _inflated(path, start, nbytes, what)
    if size < nbytes:
        raise _truncated(path, what, size, nbytes)
    voxels = sitk.GetArrayViewFromImage(image)
    if adler not in (zlib.adler32(voxels), zlib.adler32(voxels.byteswap())):
        raise InputError(f"The {what} file {path} could not be read: the voxels ITK returned are not those its "
                         "compressed data hold (its MetaImage header is one ITK does not follow, e.g. without "
                         "CompressedDataSize). Save it again from Slicer or SimpleITK, or as NRRD or NIfTI, then run "
                         "again.")


def volume_grid(reader: sitk.ImageFileReader):
    """A header's grid as ``read_volume`` reads the file: a 4D file of one time point is the 3D volume it holds."""
    if reader.GetDimension() == 4 and reader.GetSize()[3] == 1:
        direction = tuple(float(v) for v in np.reshape(reader.GetDirection(), (4, 4))[:3, :3].ravel())
        return SimpleNamespace(GetDimension=lambda: 3, GetSize=lambda: reader.GetSize()[:3],
                               GetSpacing=lambda: reader.GetSpacing()[:3], GetOrigin=lambda: reader.GetOrigin()[:3],
                               GetDirection=lambda: direction)
    return reader


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


def matching_extension(path: Path, extensions: Iterable[str]) -> str | None:
    """The longest of ``extensions`` that the file name ends with, in any case; None when none does."""
    name = path.name.lower()
    for extension in sorted(extensions, key=len, reverse=True):
        if name.endswith(extension) and len(name) > len(extension):
            return extension
    return None


def _bytes_per_voxel(reader: sitk.ImageFileReader) -> int:
    probe = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID(), reader.GetNumberOfComponents())
    return probe.GetSizeOfPixelComponent() * reader.GetNumberOfComponents()
