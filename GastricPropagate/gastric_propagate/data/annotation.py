"""What a radiologist paints, derived from a 3D label: the largest axial cross-section, and back; the slices and the
box that hold a mask's voxels."""

from __future__ import annotations

import numpy as np


def painted_slices(annotation: np.ndarray) -> list[int]:
    """Axial (K) indices of the slices that hold painted voxels, for a (z, y, x) array."""
    return [int(k) for k in np.flatnonzero(annotation.reshape(annotation.shape[0], -1).any(axis=1))]


def occupied_box(mask: np.ndarray) -> tuple[slice, slice, slice]:
    """The (z, y, x) box holding the non-zero voxels of ``mask``; for an empty mask its first voxel (a file holds one).

    The slices first, then rows and columns on those slices only: a whole CT's mask is read once (voxels below 0 are
    held too, so no thresholded copy of the whole grid is made first).
    """
    occupied = painted_slices(mask)
    if not occupied:
        return slice(0, 1), slice(0, 1), slice(0, 1)
    z = slice(occupied[0], occupied[-1] + 1)
    in_plane = mask[z].any(axis=0)
    ys, xs = np.flatnonzero(in_plane.any(axis=1)), np.flatnonzero(in_plane.any(axis=0))
    return z, slice(int(ys[0]), int(ys[-1]) + 1), slice(int(xs[0]), int(xs[-1]) + 1)


def describe_slices(slices: list[int], limit: int = 8) -> str:
    """Slice indices for a message: the first ``limit`` of them, then "..." if there are more."""
    shown = ", ".join(str(k) for k in slices[:limit])
    return shown + (", ..." if len(slices) > limit else "")


def slice_areas(label: np.ndarray) -> np.ndarray:
    """Number of foreground voxels on each axial slice of a (z, y, x) label."""
    return (label > 0).reshape(label.shape[0], -1).sum(axis=1)


def largest_cross_section_index(label: np.ndarray) -> int:
    """Index of the axial slice with the largest tumour area (the slice a radiologist paints)."""
    areas = slice_areas(label)
    if areas.max() == 0:
        raise ValueError("the label is empty: there is no tumour to take a cross-section of")
    return int(np.argmax(areas))


def annotation_from_label(label: np.ndarray, slice_index: int | None = None) -> np.ndarray:
    """A one-slice annotation (uint8, same shape) copied from ``label`` on ``slice_index``.

    With no index, the largest cross-section is taken: the slice the protocol asks a radiologist to paint.
    """
    k = largest_cross_section_index(label) if slice_index is None else int(slice_index)
    annotation = np.zeros(label.shape, dtype=np.uint8)
    annotation[k] = label[k] > 0
    return annotation


#: The thickest stroke (voxels across its plane) still read as painted in a side view: a sphere brush's.
SIDE_VIEW_SLAB = 3


def side_view(painted: np.ndarray, axes: np.ndarray) -> str | None:
    """The view ("sagittal", "coronal" or "axial") whose plane holds the painted voxels (z, y, x) when they lie on two
    or more K slices, all in one I (x) or J (y) plane, or in a slab of up to 3 such planes (a sphere brush) across at
    least 3 times as many consecutive K slices: painted in that view, not on one K slice (where erasing "the other
    slices" would leave a line); else None. "axial" only on a volume whose K slices are not axial (a sagittal or
    coronal series painted in the axial view). ``axes``: 3x3, its columns the I, J, K axes' directions in any patient
    frame with the head-foot axis third (RAS or LPS, scaled or not)."""
    slices = np.flatnonzero(painted.reshape(painted.shape[0], -1).max(axis=1) > 0)
    if slices.size < 2:
        return None
    _k, ys, xs = np.nonzero(painted[slices] > 0)
    # A stroke is continuous across the slices; axial keyframes of a small lesion are not.
    contiguous = int(slices[-1] - slices[0] + 1) == slices.size
    for column, values in ((0, xs), (1, ys)):
        normal = int(np.argmax(np.abs(np.asarray(axes)[:3, column])))
        thickness = int(values.max() - values.min() + 1)
        if thickness == 1 or (thickness <= SIDE_VIEW_SLAB and contiguous and slices.size >= 3 * thickness):
            return ("sagittal", "coronal", "axial")[normal]
    return None
