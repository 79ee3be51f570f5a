"""Output paths checked before any work is done, so that a bad one is refused at once, not after the run: the
format of a label output, an output that is an input or another output, an existing file, a link or a device, a
folder that cannot be written."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterable

from gastric_propagate.errors import InputError
from gastric_propagate.data.volumes import check_path_text, companion_files, matching_extension, written_data_files

# Output formats that keep a 3D label's whole geometry (size, spacing, origin and direction).
SINGLE_FILE_OUTPUTS = (".nrrd", ".nii.gz", ".nii", ".mha")
HEADER_DATA_OUTPUTS = (".nhdr", ".mhd", ".hdr")
MASK_OUTPUTS = SINGLE_FILE_OUTPUTS + HEADER_DATA_OUTPUTS


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
    # Outputs by file, so that thousands of them (make-phantoms) are compared in linear time, not pair by pair.
    by_file: dict[tuple, list[str]] = {}
    for what, path in given.items():
        by_file.setdefault(_file_key(path), []).append(what)
    for what, path in given.items():
        check_path_text(path, what)
        _check_parent_steps(path, what)
        if path.is_dir() or str(outputs[what]).endswith(("/", os.sep)):
            example = path / ("report.json" if what == "report" else "tumour.nrrd")
            raise InputError(f"The {what} {path} is a folder; give a file name (e.g. {example}).")
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
            # A header + data format writes (or reads) two files: .hdr + .img, .mhd + .raw, .nhdr + .raw.
            shared = next((written for written in (path, *written_data_files(path))
                           for read in (source, *companion_files(source)) if _same_file(written, read)), None)
            if shared is not None:
                raise InputError(f"The {what} {path} would write {shared}, a file of the input {source}: writing it "
                                 "would destroy your input. Choose another output name.")
        same = [other_what for other_what in by_file[_file_key(path)] if other_what != what]
        if same:
            raise InputError(f"The {what} and the {same[0]} are the same file ({path}): one would overwrite "
                             "the other. Give them different paths.")
        for data in written_data_files(path):
            overwritten = [other_what for other_what in by_file.get(_file_key(data), []) if other_what != what]
            if overwritten:
                raise InputError(f"The {overwritten[0]} {given[overwritten[0]]} is where the {what} {path} writes its "
                                 "voxels: one would overwrite the other. Give them different names.")
        refuse_existing(path, overwrite)
        for data in written_data_files(path):  # a header's data file left from an earlier run is an output too
            refuse_existing(data, overwrite)
        check_writable_folder(path.parent, f"the {what} {path}")


def check_mask_format(path: str | Path, what: str = "output") -> str:
    """The extension of a label output; InputError naming the accepted ones when it cannot hold a 3D label."""
    extension = matching_extension(Path(path), MASK_OUTPUTS)
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
        if existing.is_symlink():  # a link to nothing: the folder cannot be made there
            raise InputError(f"Cannot write {what}: {existing} is a link to {os.readlink(existing)}, which does not "
                             "exist. Create that folder, or choose another path.")
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"Cannot write {what}: {existing} is a file, not a folder. Choose another path.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"Cannot write {what}: the folder {existing} is not writable. Choose a folder you can "
                         "write to.")


def _check_parent_steps(path: Path, what: str) -> None:
    """InputError when the path steps back ('..') out of a folder that does not exist: the system cannot follow it,
    and the folder would be made before the write fails."""
    parts = path.parts
    for index, part in enumerate(parts):
        if part == ".." and index and not Path(*parts[:index]).is_dir():
            raise InputError(f"The {what} path {path} goes back ('..') out of {Path(*parts[:index])}, which is not "
                             "an existing folder. Give the path without it.")


def _file_key(path: Path) -> tuple:
    """Equal for two paths exactly when they are one file: an existing file by its device and inode (hard and
    symbolic links alike), a new one by its resolved path, one that cannot be resolved by its text."""
    try:
        if path.exists():
            found = path.stat()
            return ("file", found.st_dev, found.st_ino)
        return ("path", str(path.resolve()))
    except (OSError, ValueError, RuntimeError):  # RuntimeError: a symbolic link loop (Python < 3.13)
        return ("unresolved", str(path))


def _same_file(a: Path, b: Path) -> bool:
    return _file_key(a) == _file_key(b)


def _special_file(path: Path) -> bool:
    """Whether ``path`` exists (following links) and is not a regular file or a folder: a device, pipe, socket."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))
