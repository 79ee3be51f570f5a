"""What a radiologist paints, derived from a 3D label: the largest axial cross-section, and back."""

from __future__ import annotations

import numpy as np


def painted_slices(annotation: np.ndarray) -> list[int]:
    """Axial (K) indices of the slices that hold painted voxels, for a (z, y, x) array."""
    return [int(k) for k in np.flatnonzero(annotation.reshape(annotation.shape[0], -1).any(axis=1))]


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
