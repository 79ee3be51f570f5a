"""Reading volumes and writing results with SimpleITK: geometry checks and writes that never leave half a file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from gastric_propagate.errors import InputError
from gastric_propagate.data.validation import MAX_VOXELS

# Geometry may differ by rounding in headers (e.g. NIfTI's float32 affine), not by more.
GEOMETRY_TOLERANCE = 1e-3


def read_volume(path: str | Path, what: str = "image") -> sitk.Image:
    """Reads a 3D scalar volume; InputError with what to do when the file is missing, unreadable or not 3D."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"The {what} file {path} does not exist. Check the path.")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()  # the header first: a huge volume is refused before it fills memory
        voxels = int(np.prod(reader.GetSize()))
        if voxels > MAX_VOXELS:
            raise InputError(f"The {what} {path} has {voxels:,} voxels (size {reader.GetSize()}), more than the "
                             f"{MAX_VOXELS:,} this tool accepts. Crop it to the abdomen first (e.g. Slicer's Crop "
                             "Volume module), then run again.")
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


def geometry_difference(a: sitk.Image, b: sitk.Image) -> str | None:
    """What differs between two images' voxel grids (size, spacing, origin, direction), or None."""
    if a.GetSize() != b.GetSize():
        return f"size {a.GetSize()} vs {b.GetSize()}"
    for name in ("Spacing", "Origin", "Direction"):
        first, second = getattr(a, f"Get{name}")(), getattr(b, f"Get{name}")()
        scale = max(1.0, float(np.max(np.abs(first))))
        if not np.allclose(first, second, atol=GEOMETRY_TOLERANCE * scale, rtol=0):
            return f"{name.lower()} {tuple(round(v, 4) for v in first)} vs {tuple(round(v, 4) for v in second)}"
    return None


def refuse_existing(path: str | Path, overwrite: bool) -> None:
    """Refuses to replace an existing output unless asked to."""
    if Path(path).exists() and not overwrite:
        raise InputError(f"The output {path} already exists. Choose another path, or pass --overwrite to replace it.")


def write_mask(mask: np.ndarray, reference: sitk.Image, path: str | Path) -> Path:
    """Writes a uint8 (z, y, x) mask on exactly the reference's grid; the file appears whole or not at all."""
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.CopyInformation(reference)
    path = Path(path)
    return _atomic(path, lambda temporary: sitk.WriteImage(image, str(temporary), useCompression=True))


def write_json(data: dict, path: str | Path) -> Path:
    """Writes JSON atomically."""
    path = Path(path)
    return _atomic(path, lambda temporary: temporary.write_text(json.dumps(data, indent=2) + "\n"))


def _atomic(path: Path, write) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same folder and same ending, so SimpleITK picks the format and the rename cannot cross file systems.
    temporary = path.parent / f".partial-{os.getpid()}-{path.name}"
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else error.__class__.__name__
