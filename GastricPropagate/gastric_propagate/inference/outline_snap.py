"""The result's outline moved onto the edge the radiologist drew: the HU level of the painted outline.

On the painted slice, the threshold that best separates the painted pixels from the others in a one-pixel band
along the painted outline (balanced accuracy) says at which HU this user, on this scanner, draws a tumour's edge.
Where it separates them well, the user drew along an intensity edge, and on every other slice of the result the
same band along the outline is decided again by that threshold: a generous or a tight outline is followed as it
was drawn. Where it separates them poorly (a tumour as dense as its neighbour), nothing changes.

Chosen on held-out synthetic cases, not on real CT (docs/decisions.md).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from gastric_propagate.inference.masks import bounds
from gastric_propagate.inference.registration import median_2d

# The painted band must be split this well (balanced accuracy) by one threshold before the outline is snapped.
MIN_FIT = 0.8
# Width of the band along the outline, in pixels each side: the partial-volume rim.
BAND_PX = 1
# A slice whose snapped outline keeps less than this share of the voted area keeps the voted outline.
MIN_KEPT_AREA = 0.5
# How far around a slice's mask (or the painted outline) the snap reads the CT: the band and the median filter's rim.
SNAP_MARGIN_PX = BAND_PX + 2
_CROSS = ndimage.generate_binary_structure(2, 1)


def edge_threshold(image_slice: np.ndarray, painted: np.ndarray, spacing_xyz) -> tuple[float, bool, float] | None:
    """(threshold in HU, tumour brighter than its surroundings, balanced accuracy) on the painted band, or None
    when the painted outline has no band on both sides (it fills the slice, or is a pixel thin)."""
    window = _window(painted, SNAP_MARGIN_PX)
    smoothed = median_2d(image_slice[window], spacing_xyz)
    inner, outer = _band(painted[window])
    band = outer & ~inner
    inside, outside = painted[window] & band, band & ~painted[window]
    if not inside.any() or not outside.any():
        return None
    brighter = bool(smoothed[inside].mean() > smoothed[outside].mean())
    values, truth = smoothed[band], painted[window][band]
    best = None
    for threshold in np.unique(np.quantile(values, np.linspace(0.02, 0.98, 49))):
        above = values > threshold if brighter else values < threshold
        accuracy = 0.5 * (above[truth].mean() + (~above[~truth]).mean())
        if best is None or accuracy > best[2]:
            best = (float(threshold), brighter, float(accuracy))
    return best


def snap_outline(mask: np.ndarray, image: np.ndarray, spacing_xyz, k: int, painted: np.ndarray, *,
                 fixed=()) -> np.ndarray:
    """``mask`` with the band along its outline on every slice but ``k`` and the ``fixed`` ones (other painted
    slices) decided by the painted edge's HU level; ``mask`` itself when the painted outline does not follow an
    intensity edge (see the module docstring)."""
    fit = edge_threshold(image[k], painted, spacing_xyz)
    if fit is None or fit[2] < MIN_FIT:
        return mask
    threshold, brighter, _ = fit
    snapped = mask.copy()
    for z in np.flatnonzero(mask.any(axis=(1, 2))):
        if z == k or z in fixed:
            continue
        window = _window(mask[z], SNAP_MARGIN_PX)
        inner, outer = _band(mask[z][window] > 0)
        smoothed = median_2d(image[z][window], spacing_xyz)
        edge = smoothed > threshold if brighter else smoothed < threshold
        kept = ndimage.binary_fill_holes(inner | (outer & edge))
        if kept.sum() >= MIN_KEPT_AREA * np.count_nonzero(mask[z]):
            snapped[z] = 0
            snapped[z][window] = kept
    return snapped


def _band(mask_2d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The outline's inside kept as it is, and the area it may reach: ``BAND_PX`` pixels in and out."""
    return (ndimage.binary_erosion(mask_2d, _CROSS, iterations=BAND_PX),
            ndimage.binary_dilation(mask_2d, _CROSS, iterations=BAND_PX))


def _window(mask_2d: np.ndarray, margin: int) -> tuple[slice, slice]:
    (y0, y1), (x0, x1) = bounds(mask_2d, (margin, margin))
    return slice(y0, y1 + 1), slice(x0, x1 + 1)
