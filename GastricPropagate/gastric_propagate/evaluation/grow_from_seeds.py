"""Slicer's own "Grow from seeds" as a baseline, seeded as a user would seed it from one painted axial slice.

Segment Editor's Grow from seeds effect runs ``vtkImageGrowCutSegment`` (fast grow-cut: a Dijkstra
propagation in which a path's cost is the sum of the absolute intensity differences along it, each
voxel taking the label of the seed it is cheapest to reach, 26-neighbourhood). This module calls the
same class from the ``slicer-core`` wheel (``pip install slicer-core==5.13.31053.0``), imported only
when the method runs, so the engine itself never needs Slicer.

The seeds are what a Slicer user would paint with one axial slice of information:

* tumour (label 1): the painted region on the painted slice;
* background (label 2): a ring ``ring_mm`` to ``ring_mm + ring_width_mm`` outside the painted outline
  on the painted slice, plus the whole (cropped) axial slices beyond ``extent_factor`` times the
  painted equivalent diameter above and below the painted slice (beyond the
  ``round(extent_factor x diameter / slice spacing)`` slices that :func:`baselines.copy_slice` fills),
  where such slices lie inside the volume.

The grow-cut runs on a crop around the painted region: its bounding box widened in-plane by
``max(ring_mm + ring_width_mm + margin_mm, margin_factor x diameter)``, and along z up to and including
the first background slice on each side (or the volume's edge). Like every baseline (see
:mod:`gastric_propagate.evaluation.baselines`), it keeps the painted slice exactly as drawn.

Defaults: ``ring_mm`` and ``extent_factor`` were chosen on training-seed phantoms (seeds 0-23), never on held-out
phantoms or on real cases; ``extent_factor`` is held at 0.5, the extent the other baselines assume, because nearer
"background" slices would lie on a tumour as tall as it is wide (docs/decisions.md).
"""

from __future__ import annotations

import logging
import math

import numpy as np
from scipy import ndimage

from gastric_propagate.evaluation.baselines import painted_slice
from gastric_propagate.inference.masks import bounds, equivalent_diameter_mm, parts_touching, slices_for

logger = logging.getLogger(__name__)

SLICER_CORE_REQUIREMENT = "slicer-core==5.13.31053.0"

_TUMOUR, _BACKGROUND = 1, 2


def grow_from_seeds(image: np.ndarray, spacing_xyz: tuple[float, float, float], annotation: np.ndarray, *,
                    ring_mm: float = 1.0, extent_factor: float = 0.5, ring_width_mm: float = 3.0,
                    margin_mm: float = 10.0, margin_factor: float = 0.5, seed_locality: float = 0.0,
                    **_: object) -> np.ndarray:
    """Slicer's Grow from seeds (``slicer.vtkImageGrowCutSegment``) from seeds drawn on the painted slice.

    Args:
        image: CT (z, y, x) in HU.
        spacing_xyz: voxel spacing (x, y, z) in mm.
        annotation: (z, y, x), non-zero on one axial slice.
        ring_mm: distance in mm from the painted outline to the inner edge of the background ring.
        extent_factor: the slices beyond ``round(extent_factor x diameter / slice spacing)`` from the
            painted slice are background seeds (the tumour is assumed not to reach them).
        ring_width_mm: width in mm of the background ring.
        margin_mm: in-plane crop margin in mm beyond the background ring.
        margin_factor: the in-plane crop margin is at least this fraction of the equivalent diameter.
        seed_locality: the effect's "Seed locality" (the filter's DistancePenalty); 0 as in Slicer.

    Returns:
        uint8 (z, y, x) mask; the painted slice equals the annotation.

    Raises:
        RuntimeError: the ``slicer-core`` wheel (which provides ``slicer.vtkImageGrowCutSegment``) is missing.
    """
    k, painted = painted_slice(image, spacing_xyz, annotation)
    grow_cut_class, numpy_support = _slicer_grow_cut()
    sx, sy, sz = (float(s) for s in spacing_xyz)
    diameter = equivalent_diameter_mm(painted, spacing_xyz)

    # Crop: in-plane around the painted region, along z up to the first background slice on each side.
    margin = max(ring_mm + ring_width_mm + margin_mm, margin_factor * diameter)
    (y0, y1), (x0, x1) = bounds(painted, (math.ceil(margin / sy), math.ceil(margin / sx)))
    # The tumour may reach as many slices as the other baselines assume; the next slice on is background.
    first_background = slices_for(extent_factor * diameter, spacing_xyz) + 1
    z0, z1 = max(0, k - first_background), min(image.shape[0] - 1, k + first_background)
    crop = np.ascontiguousarray(image[z0:z1 + 1, y0:y1 + 1, x0:x1 + 1], dtype=np.float32)
    kc = k - z0
    painted_crop = painted[y0:y1 + 1, x0:x1 + 1]

    seeds = np.zeros(crop.shape, dtype=np.uint8)
    outside = ndimage.distance_transform_edt(~painted_crop, sampling=(sy, sx))
    seeds[kc][(outside > ring_mm) & (outside <= ring_mm + ring_width_mm)] = _BACKGROUND
    for z in (kc - first_background, kc + first_background):
        if 0 <= z < crop.shape[0]:
            seeds[z] = _BACKGROUND
    seeds[kc][painted_crop] = _TUMOUR

    labels = _run_grow_cut(grow_cut_class, numpy_support, crop, seeds, (sx, sy, sz), seed_locality)
    tumour = labels == _TUMOUR
    tumour = parts_touching(tumour, seeds == _TUMOUR, structure=np.ones((3, 3, 3), dtype=bool))

    mask = np.zeros(image.shape, dtype=np.uint8)
    mask[z0:z1 + 1, y0:y1 + 1, x0:x1 + 1] = tumour
    mask[k] = painted
    logger.debug("grow from seeds: crop %s, background slices at +-%d, %d voxels", crop.shape, first_background,
                 int(mask.sum()))
    return mask


def _slicer_grow_cut():
    """``slicer.vtkImageGrowCutSegment`` and ``vtk.util.numpy_support``, or a RuntimeError saying what to install."""
    try:
        import slicer  # optional: imported only when this baseline runs
        from vtk.util import numpy_support
        grow_cut_class = slicer.vtkImageGrowCutSegment
    except (ImportError, AttributeError) as error:
        raise RuntimeError(
            "The grow-from-seeds baseline needs Slicer's vtkImageGrowCutSegment from the slicer-core wheel, "
            f"which is not available here ({error}). Install it with: pip install {SLICER_CORE_REQUIREMENT}"
        ) from error
    return grow_cut_class, numpy_support


def _to_vtk_image(array: np.ndarray, spacing_xyz: tuple[float, float, float], numpy_support):
    """A vtkImageData (deep copy) of a (z, y, x) array; x varies fastest in both layouts."""
    import vtk

    image = vtk.vtkImageData()
    image.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    image.SetSpacing(*spacing_xyz)
    image.SetOrigin(0.0, 0.0, 0.0)
    scalars = numpy_support.numpy_to_vtk(np.ascontiguousarray(array).ravel(), deep=True)
    image.GetPointData().SetScalars(scalars)
    return image


def _run_grow_cut(grow_cut_class, numpy_support, intensity: np.ndarray, seeds: np.ndarray,
                  spacing_xyz: tuple[float, float, float], seed_locality: float) -> np.ndarray:
    """Runs the grow-cut filter on (z, y, x) arrays and returns the label array (z, y, x)."""
    if min(intensity.shape) < 3:  # the filter needs one voxel of padding on every side
        pad = [(max(0, (3 - n + 1) // 2),) * 2 for n in intensity.shape]
        padded = _run_grow_cut(grow_cut_class, numpy_support, np.pad(intensity, pad, mode="edge"),
                               np.pad(seeds, pad), spacing_xyz, seed_locality)
        return padded[tuple(slice(p[0], p[0] + n) for p, n in zip(pad, intensity.shape))]
    grow_cut = grow_cut_class()
    grow_cut.SetIntensityVolume(_to_vtk_image(intensity, spacing_xyz, numpy_support))
    grow_cut.SetSeedLabelVolume(_to_vtk_image(seeds, spacing_xyz, numpy_support))
    grow_cut.SetDistancePenalty(float(seed_locality))
    grow_cut.Update()
    output = grow_cut.GetOutput()
    if output is None or output.GetPointData().GetScalars() is None:
        raise RuntimeError("slicer.vtkImageGrowCutSegment returned no result (see the VTK warning above).")
    labels = numpy_support.vtk_to_numpy(output.GetPointData().GetScalars())
    return labels.reshape(intensity.shape).copy()
