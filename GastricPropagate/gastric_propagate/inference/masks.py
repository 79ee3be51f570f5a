"""Binary-mask helpers shared by the engine, the baselines and the generators: bounding boxes, connected parts,
equivalent diameters and the slice counts they span.

Per-slice areas and the painted slices of an annotation live in ``data.annotation``, which this layer may import and
which must not import it.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from gastric_propagate.data.annotation import occupied_box


def bounding_box(mask: np.ndarray, margin: int | tuple[int, ...] = 0) -> tuple[slice, ...]:
    """The slices of ``mask``'s bounding box (it must hold something), widened by ``margin`` (one for every axis, or
    one per axis) within the array."""
    margins = (margin,) * mask.ndim if isinstance(margin, int) else tuple(margin)
    box = []
    for axis in range(mask.ndim):
        found = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if found.size == 0:
            raise ValueError("the mask is empty: it has no bounding box")
        box.append(slice(max(0, int(found[0]) - margins[axis]),
                         min(mask.shape[axis], int(found[-1]) + 1 + margins[axis])))
    return tuple(box)



def in_plane_box(volumes, window: slice, outlines=(), *, margin: int = 0) -> tuple[slice, slice]:
    """The (y, x) box that holds every voxel the (z, y, x) ``volumes`` hold on the slices of ``window`` and every pixel
    of the (y, x) ``outlines``, widened by ``margin``: where work on those slices need look, and nowhere else."""
    held = np.zeros(volumes[0].shape[1:], dtype=bool)
    for volume in volumes:
        held |= volume[window].any(axis=0)
    for outline in outlines:
        held |= outline > 0
    return bounding_box(held, margin=margin)

def bounds(mask: np.ndarray, margin: tuple[int, int] = (0, 0)) -> tuple[tuple[int, int], tuple[int, int]]:
    """((y0, y1), (x0, x1)), inclusive: a 2D mask's bounding box widened by ``margin``, clipped to the slice."""
    (y0, y1), (x0, x1) = ((box.start, box.stop - 1) for box in bounding_box(mask, margin))
    return (y0, y1), (x0, x1)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected part of a binary mask (the mask itself when it has one part or none)."""
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def parts_touching(mask: np.ndarray, seeds: np.ndarray, *, structure: np.ndarray | None = None) -> np.ndarray:
    """The connected parts of ``mask`` (bool, same shape) that hold a voxel of ``seeds``; ``structure`` as in
    ``scipy.ndimage.label`` (face neighbours when None)."""
    labels, _count = ndimage.label(mask, structure=structure)
    touching = np.unique(labels[seeds])
    return np.isin(labels, touching[touching > 0])


def keep_connected(mask: np.ndarray, anchors: dict[int, np.ndarray]) -> np.ndarray:
    """The parts of ``mask`` that connect (in 3D) to a painted voxel of an anchor slice; the rest are strays."""
    if not mask.any():
        return mask
    box = occupied_box(mask)  # z first: y and x are then scanned on the mask's slices only
    labels, count = ndimage.label(mask[box])  # within the mask's bounding box: a whole CT takes far longer
    touching = np.unique(np.concatenate([labels[k - box[0].start][painted[box[1:]]] for k, painted in anchors.items()
                                         if box[0].start <= k < box[0].stop] + [np.zeros(0, labels.dtype)]))
    if count <= 1 and touching.any():  # the one part, connected
        return mask
    kept = np.zeros_like(mask)
    kept[box] = np.isin(labels, touching[touching > 0])
    return kept


def equivalent_diameter_mm(mask_2d: np.ndarray, spacing_xyz: tuple[float, float, float]) -> float:
    """Diameter of the disc with the same area as ``mask_2d``."""
    area = float(np.count_nonzero(mask_2d)) * spacing_xyz[0] * spacing_xyz[1]
    return 2.0 * math.sqrt(area / math.pi)


def slices_for(distance_mm: float, spacing_xyz: tuple[float, float, float]) -> int:
    """How many slices ``distance_mm`` spans along z (rounded)."""
    return int(round(distance_mm / spacing_xyz[2]))


def slices_within(painted: np.ndarray, spacing_xyz: tuple[float, float, float], extent_factor: float) -> int:
    """How many slices ``extent_factor`` equivalent diameters of ``painted`` span along z (rounded)."""
    return slices_for(extent_factor * equivalent_diameter_mm(painted, spacing_xyz), spacing_xyz)
