"""Checks on the image and the annotation before any network runs. Every message says what to do."""

from __future__ import annotations

import numpy as np

from gastric_propagate.data.annotation import describe_slices, painted_slices
from gastric_propagate.errors import InputError

# Above this many voxels the volume is refused rather than risk running out of memory
# (about 1.2 GB as int16; a 512x512x2000 thin-slice abdomen fits under it).
MAX_VOXELS = 600_000_000
# The same limit in memory: a float64 CT of as many voxels takes four times the room of an int16 one.
MAX_BYTES = 2 * MAX_VOXELS
# No CT in Hounsfield units holds values beyond this (air is -1000, metal on an extended scale up to about 30,000);
# padding outside the field of view goes down to -32,768.
MAX_CT_MAGNITUDE = 100_000.0
# A CT's voxels are 0.2 to 2 mm wide and 0.5 to 10 mm apart. A spacing outside this range is a header written in
# another unit (metres, centimetres): the networks, which resample to their pixel spacing, would see the tumour at
# the wrong scale, and the checks in mm would call the painted slice a dot.
CT_SPACING_RANGE_MM = (0.1, 50.0)
# A painted cross-section wider than this is not one gastric tumour.
MAX_ANNOTATION_EXTENT_MM = 200.0
# A CT's in-plane voxels are under 1.5 mm; above this, a painting that looks too wide more likely has a wrong spacing.
LARGE_IN_PLANE_SPACING_MM = 2.0
# A painted region smaller than this (about a 2 mm disc), or a single voxel, is a stray click, not a tumour.
MIN_ANNOTATION_AREA_MM2 = 3.0


def check_image(image: np.ndarray) -> None:
    """Refuses arrays that are not a 3D CT in Hounsfield units."""
    check_image_shape(image.shape)
    if image.size > MAX_VOXELS or image.nbytes > MAX_BYTES:
        raise InputError(
            f"The image has {image.size:,} voxels (shape {image.shape}, {image.nbytes / 1e9:.1f} GB as "
            f"{image.dtype}), more than the {MAX_VOXELS:,} voxels or {MAX_BYTES / 1e9:.1f} GB this tool accepts. "
            "Crop it to the abdomen first (e.g. Slicer's Crop Volume module), or store it as 16-bit integers, "
            "then run again.")
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise InputError(f"The image holds {image.dtype} values; a CT holds numbers in Hounsfield units.")
    if np.issubdtype(image.dtype, np.floating):
        nan_count, inf_count = int(np.isnan(image).sum()), int(np.isinf(image).sum())
        if nan_count or inf_count:
            found = " and ".join(f"{count:,} {name}" for count, name in ((nan_count, "NaN"), (inf_count, "Inf"))
                                 if count)
            raise InputError(
                f"The image contains {found} voxels. Fix or re-export the volume (NaN and Inf often come from "
                "a failed resampling or conversion) and run again.")
    # About 16 slices of at most about 256x256 voxels: the percentiles of a 512x512x100 CT in 0.01 s, not 0.04 s.
    step = max(1, int(np.sqrt(image.shape[1] * image.shape[2] / 65536)))
    sample = image[:: max(1, image.shape[0] // 16), ::step, ::step]
    if image.dtype.itemsize == 1 and not (image.min() == image.max() or _looks_like_labels(sample)):
        raise InputError(
            f"The image holds 8-bit values ({image.dtype}): no CT in Hounsfield units fits in 8 bits (air -1000 to "
            "bone above 1000). It looks like a viewer's windowed export (screen grey levels, not HU), or a label map "
            "of many structures. Load the original CT series (DICOM, or NRRD/NIfTI in HU), then run again.")
    low, high = (float(v) for v in np.percentile(sample, [0.5, 99.5]))
    if low < -MAX_CT_MAGNITUDE or high > MAX_CT_MAGNITUDE:
        raise InputError(
            f"The image's values reach from {low:.4g} to {high:.4g} (0.5-99.5% of the voxels), outside the range of "
            f"any CT in Hounsfield units (air -1000, bone and metal up to about 30,000). The volume was scaled or "
            "converted wrongly: re-export it in HU (DICOM Rescale Slope/Intercept applied once), then run again.")
    if image.dtype == np.float64:  # a single voxel float32 cannot hold (1e39) becomes Inf, then NaN in the networks
        lowest, highest = float(image.min()), float(image.max())
        if max(-lowest, highest) > float(np.finfo(np.float32).max):
            raise InputError(
                f"The image holds values from {lowest:.4g} to {highest:.4g}, beyond any CT in Hounsfield units (air "
                "-1000, bone and metal up to about 30,000): the volume is corrupt, or was scaled or converted wrongly. "
                "Re-export it in HU, then run again.")
    # In HU, fat (about -100) or air (-1000) is in every abdominal CT, even one cropped to the stomach;
    # MR and normalised images have no such negative values, unrescaled CT starts at 0.
    if low > -50 or high - low < 100:
        hint = (" The values look like raw detector values (then apply the DICOM Rescale Slope/Intercept) or "
                "an MR image."
                if low >= 0 and high > 500 else "")
        advice = f"{hint} Load a CT volume: MR and normalised (0-1) images are not supported."
        if image.min() == image.max():  # every voxel (not only those sampled) the same: a blank volume
            advice = (f" All its voxels hold {low:.4g}: the volume is blank (a failed load or conversion), not a CT. "
                      "Load the CT again, then run again.")
        elif _looks_like_labels(sample):
            advice = (" Its voxels hold a few whole numbers from 0: a label map (a segmentation), not the CT. Use the "
                      "CT it was painted on in its place (Slicer: the input volume; command line: --image, or a "
                      "case's _image file), then run again.")
        raise InputError(
            f"This does not look like a CT in Hounsfield units (0.5-99.5% of the voxels lie between {low:.4g} "
            f"and {high:.4g}; a CT of the abdomen has fat near -100 HU and air near -1000 HU).{advice}")


def _looks_like_labels(sample: np.ndarray) -> bool:
    """A few (at most 64) whole, non-negative values, 0 among them: a label map given as the CT."""
    values = np.unique(sample)
    return bool(values.size <= 64 and values[0] == 0 and np.all(values == np.round(values)))


def check_image_shape(shape: tuple[int, ...]) -> None:
    """Refuses shapes that are not a 3D volume of several axial slices (z, y, x)."""
    if len(shape) != 3:
        raise InputError(
            f"The image has {len(shape)} dimension(s) (shape {shape}); GastricPropagate needs a 3D CT "
            "volume. Load the whole series, not a single slice or a 4D/RGB image.")
    if shape[0] < 2:
        raise InputError(
            f"The image has {shape[0]} axial slice(s); propagation needs a volume with several slices. Load the "
            "whole CT series (in Slicer, from the DICOM browser), not a single image file of it.")


def check_annotation(annotation: np.ndarray, image_shape: tuple[int, ...],
                     spacing_xyz: tuple[float, float, float], *, keyframes: bool) -> list[int]:
    """Checks the painted voxels and returns the painted axial slices (the anchors)."""
    if annotation.shape != tuple(image_shape):
        raise InputError(
            f"The annotation's grid {annotation.shape} differs from the image's {tuple(image_shape)} (z, y, x). "
            "Paint the annotation on this CT (or resample it onto the CT's grid) and run again.")
    check_label_values(annotation, "annotation")
    slices = painted_slices(annotation)
    if not slices:
        raise InputError(
            "The annotation is empty. Paint the tumour's largest cross-section on one axial slice, then run again.")
    if len(slices) > 1 and not keyframes:
        raise InputError(
            f"The annotation has painted voxels on {len(slices)} axial slices ({describe_slices(slices)}). Paint the "
            "largest cross-section on one axial slice only and erase the others, or ask for keyframes "
            "(--keyframes / the module's 'Keyframes' option) to keep every painted slice as a fixed anchor.")
    for k in slices:
        painted = annotation[k] > 0
        if painted[0].any() or painted[-1].any() or painted[:, 0].any() or painted[:, -1].any():
            raise InputError(
                f"The annotation on axial slice {k} touches the edge of the image, so the tumour may reach "
                "outside the field of view. Check the painted slice (erase stray strokes at the border) or use "
                "a volume that covers the whole tumour.")
        ys, xs = np.nonzero(painted)
        area = ys.size * spacing_xyz[0] * spacing_xyz[1]
        if not large_enough_to_paint(ys.size, spacing_xyz):
            raise InputError(
                f"The painted region on slice {k} is {ys.size} voxel(s) ({area:.1f} mm²), too small to be a tumour's "
                f"cross-section (at least 2 voxels and {MIN_ANNOTATION_AREA_MM2:.0f} mm²). Paint the whole "
                "cross-section of the tumour, not a dot, then run again.")
        extent = max((ys.max() - ys.min() + 1) * spacing_xyz[1], (xs.max() - xs.min() + 1) * spacing_xyz[0])
        if extent > MAX_ANNOTATION_EXTENT_MM:
            in_plane = max(spacing_xyz[0], spacing_xyz[1])
            raise InputError(
                f"The painted region on slice {k} is {extent:.0f} mm across, wider than one gastric tumour "
                f"({MAX_ANNOTATION_EXTENT_MM:.0f} mm at most). Paint only the tumour's cross-section." + (
                    f" Or the CT's spacing is wrong: its in-plane voxels are {in_plane:g} mm, a CT's are under "
                    "1.5 mm; save it with its true spacing in millimetres, then run again."
                    if in_plane > LARGE_IN_PLANE_SPACING_MM else ""))
    return slices


def large_enough_to_paint(voxels: int, spacing_xyz) -> bool:
    """Whether a painted region of ``voxels`` voxels on one axial slice is large enough to be a tumour's
    cross-section (``check_annotation`` refuses it otherwise): 2 voxels and ``MIN_ANNOTATION_AREA_MM2``."""
    return voxels >= 2 and voxels * spacing_xyz[0] * spacing_xyz[1] >= MIN_ANNOTATION_AREA_MM2


def check_label_values(label: np.ndarray, what: str = "annotation") -> None:
    """Refuses labels with values a label map cannot hold: NaN, Inf or negative numbers."""
    if label.dtype == bool:
        return
    if not (np.issubdtype(label.dtype, np.integer) or np.issubdtype(label.dtype, np.floating)):
        raise InputError(f"The {what} holds {label.dtype} values; a label map holds whole numbers.")
    problems = []
    if np.issubdtype(label.dtype, np.floating):
        non_finite = int(np.count_nonzero(~np.isfinite(label)))
        if non_finite:
            problems.append(f"{non_finite:,} NaN or Inf voxel(s)")
    # An unsigned label cannot be negative: no pass over the whole volume for it.
    negative = 0 if np.issubdtype(label.dtype, np.unsignedinteger) else int(np.count_nonzero(label < 0))
    if negative:
        problems.append(f"{negative:,} negative voxel(s) (lowest {np.nanmin(label):g})")
    if problems:
        raise InputError(
            f"The {what} holds {' and '.join(problems)}; a label map has 0 for the background and 1 (or another "
            "positive label) for the tumour. Export the segmentation as a label map on the CT's grid (in Slicer: "
            "Segmentations module > Export/import models and labelmaps), then run again.")


def spacing_in_ct_range(spacing_xyz) -> bool:
    """Whether every voxel spacing lies within ``CT_SPACING_RANGE_MM``."""
    low, high = CT_SPACING_RANGE_MM
    return all(low <= float(s) <= high for s in spacing_xyz)


def check_spacing(spacing_xyz: tuple[float, float, float], what: str = "The CT") -> None:
    """Refuses spacings that are not three positive finite millimetre values of a CT (``CT_SPACING_RANGE_MM``)."""
    if len(spacing_xyz) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing_xyz):
        raise InputError(f"The voxel spacing {tuple(spacing_xyz)} is not three positive numbers in mm. Save the CT "
                         "with its voxel spacing in its header (NRRD, NIfTI or MetaImage), then run again.")
    if not spacing_in_ct_range(spacing_xyz):
        low, high = CT_SPACING_RANGE_MM
        raise InputError(f"{what} has a voxel spacing of {tuple(round(float(s), 6) for s in spacing_xyz)} mm, "
                         f"outside that of any CT ({low:g} to {high:g} mm): its header gives the spacing in another "
                         "unit (metres or centimetres), or a wrong one. Save the CT and the annotation with their "
                         "spacing in millimetres, then run again.")
