"""The methods GastricPropagate is compared with, each from the same one painted axial slice.

Every method has the signature::

    method(image, spacing_xyz, annotation, **kw) -> mask

    image        np.ndarray (z, y, x), CT in Hounsfield units
    spacing_xyz  (sx, sy, sz) in mm
    annotation   np.ndarray (z, y, x), non-zero on exactly one axial slice
    kw           method options; unknown keywords (such as ``truth_label``) are ignored
    mask         np.ndarray uint8 (z, y, x), 1 = tumour; the painted slice equals the annotation

The painted slice is always kept exactly as drawn, as the engine does, so that every method
starts from the same information. The automatic baselines reach no further along z than the
painted cross-section's equivalent radius (the extent a user would guess from the outline). Their
defaults were set on training-seed phantoms (seeds 0-23), never on the held-out ones.
"""

from __future__ import annotations

import logging

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from gastric_propagate.data.annotation import slice_areas
from gastric_propagate.data.validation import check_annotation, check_spacing
from gastric_propagate.errors import InputError
from gastric_propagate.inference.consensus import copy_along_z
from gastric_propagate.inference.masks import bounds, equivalent_diameter_mm, parts_touching, slices_for
from gastric_propagate.inference.registration import RESTORED_RIM_PX, hu_window, propagate_by_registration

logger = logging.getLogger(__name__)


def copy_slice(image: np.ndarray, spacing_xyz: tuple[float, float, float], annotation: np.ndarray, *,
               extent_factor: float = 0.5, **_: object) -> np.ndarray:
    """The naive baseline: the painted mask copied unchanged onto neighbouring slices.

    The number of slices is what a user would guess from the painted outline: the tumour is assumed
    to extend ``extent_factor`` times the painted cross-section's equivalent diameter above and
    below the painted slice (0.5: as far as a sphere of that diameter).

    Args:
        image: CT (z, y, x) in HU (only its shape is used).
        spacing_xyz: voxel spacing (x, y, z) in mm.
        annotation: (z, y, x), non-zero on one axial slice.
        extent_factor: half-extent along z, as a fraction of the equivalent diameter.

    Returns:
        uint8 (z, y, x) mask.
    """
    k, painted = painted_slice(image, spacing_xyz, annotation)
    return copy_along_z(image.shape, k, painted, spacing_xyz, extent_factor=extent_factor)


def region_growing(image: np.ndarray, spacing_xyz: tuple[float, float, float], annotation: np.ndarray, *,
                   multiplier: float = 1.5, margin_factor: float = 0.35, extent_factor: float = 0.5,
                   opening_mm: float = 2.5, max_growth: float = 1.3, **_: object) -> np.ndarray:
    """3D region growing (SimpleITK ConnectedThreshold) from the painted voxels.

    The intensity window is the painted region's mean ± ``multiplier`` standard deviations on a
    median-filtered image. Growth is confined to a bounding region a user would accept: the painted
    outline widened in-plane by ``margin_factor`` times its equivalent diameter (at least 5 mm), over
    ± ``extent_factor`` equivalent diameters along z. A light in-plane opening cuts thin leaks into
    neighbouring tissue of similar density. Then, slice by slice away from the painted one, only the
    grown parts that continue the previous slice's region are kept (holes filled), and a direction
    ends where the region vanishes or jumps to more than ``max_growth`` times the previous area (a leak).

    Args:
        image: CT (z, y, x) in HU.
        spacing_xyz: voxel spacing (x, y, z) in mm.
        annotation: (z, y, x), non-zero on one axial slice.
        multiplier: half-width of the intensity window in standard deviations.
        margin_factor: in-plane margin around the painted outline, as a fraction of its diameter.
        extent_factor: half-extent along z, as a fraction of the equivalent diameter.
        opening_mm: radius of the in-plane morphological opening in mm (0 switches it off).
        max_growth: largest accepted area ratio between a slice's region and the previous one's.

    Returns:
        uint8 (z, y, x) mask.
    """
    k, painted = painted_slice(image, spacing_xyz, annotation)
    sx, sy, _sz = spacing_xyz
    diameter = equivalent_diameter_mm(painted, spacing_xyz)
    footprint = ndimage.distance_transform_edt(~painted, sampling=(sy, sx)) <= max(5.0, margin_factor * diameter)
    half_extent = slices_for(extent_factor * diameter, spacing_xyz)
    z0, z1 = max(0, k - half_extent), min(image.shape[0] - 1, k + half_extent)
    (y0, y1), (x0, x1) = bounds(footprint)
    footprint = footprint[y0:y1 + 1, x0:x1 + 1]
    seeds_2d = painted[y0:y1 + 1, x0:x1 + 1]

    crop = sitk.GetImageFromArray(image[z0:z1 + 1, y0:y1 + 1, x0:x1 + 1].astype(np.float32))
    crop.SetSpacing(tuple(float(s) for s in spacing_xyz))
    smoothed = sitk.GetArrayFromImage(sitk.Median(crop, [1, 1, 0]))
    lower, upper = hu_window(smoothed[k - z0][seeds_2d], multiplier)
    smoothed[:, ~footprint] = lower - 1000.0  # outside the bounding region: never grown into

    core = ndimage.binary_erosion(seeds_2d)
    candidates = np.argwhere((core if core.any() else seeds_2d)
                             & (smoothed[k - z0] >= lower) & (smoothed[k - z0] <= upper))
    if candidates.size == 0:
        logger.warning("region growing: no painted voxel lies inside its own intensity window; "
                       "returning the painted slice only")
        mask = np.zeros(image.shape, dtype=np.uint8)
        mask[k] = painted
        return mask
    step = max(1, len(candidates) // 200)  # a few hundred seeds are plenty for one connected region
    seeds = [(int(x), int(y), int(k - z0)) for y, x in candidates[::step]]
    grown_image = sitk.GetImageFromArray(smoothed)
    grown_image.CopyInformation(crop)
    grown = sitk.ConnectedThreshold(grown_image, seedList=seeds, lower=float(lower), upper=float(upper),
                                    replaceValue=1)
    radius = [max(1, round(opening_mm / sx)), max(1, round(opening_mm / sy)), 0] if opening_mm > 0 else None
    if radius is not None:
        grown = sitk.BinaryMorphologicalOpening(grown, radius, sitk.sitkBall, 0, 1)
    grown_array = _slice_by_slice(sitk.GetArrayFromImage(grown).astype(bool), k - z0, seeds_2d, spacing_xyz,
                                  max_growth=max_growth)
    mask = np.zeros(image.shape, dtype=np.uint8)
    mask[z0:z1 + 1, y0:y1 + 1, x0:x1 + 1] = grown_array
    mask[k] = painted
    return mask


def registration_propagation(image: np.ndarray, spacing_xyz: tuple[float, float, float], annotation: np.ndarray,
                             *, transform: str = "affine", iterations: int = 25, margin_mm: float = 12.0,
                             multiplier: float = 1.5, extent_factor: float = 0.5, min_area_fraction: float = 0.05,
                             min_inside_window: float = 0.5, restored_rim_px: int = RESTORED_RIM_PX,
                             **_: object) -> np.ndarray:
    """Slice-to-slice 2D registration alone: ``inference.registration.propagate_by_registration`` (its
    docstring has the method and the options) from the one painted slice.
    """
    k, painted = painted_slice(image, spacing_xyz, annotation)
    return propagate_by_registration(image, spacing_xyz, k, painted, transform=transform, iterations=iterations,
                                     margin_mm=margin_mm, multiplier=multiplier, extent_factor=extent_factor,
                                     min_area_fraction=min_area_fraction, min_inside_window=min_inside_window,
                                     restored_rim_px=restored_rim_px)


def fill_between_slices_ideal(image: np.ndarray, spacing_xyz: tuple[float, float, float],
                              annotation: np.ndarray, *, truth_label: np.ndarray, **_: object) -> np.ndarray:
    """An upper reference for shape-only methods: the ideal of Slicer's "Fill between slices".

    THIS METHOD READS THE TRUTH. It is given the TRUE first, largest and last tumour slices of
    ``truth_label`` (what a perfect user would paint for Fill between slices) and interpolates the
    slices between them; the annotation is not used, so its result is the same for every
    annotation variant. The interpolation is shape-based (Raya & Udupa): the in-plane signed
    distance maps (SimpleITK SignedMaurerDistanceMap, in mm) of neighbouring key slices are blended
    linearly along z and thresholded at the contour. For concentric outlines this matches the
    morphological contour interpolation of Slicer's effect (ITK MorphologicalContourInterpolator,
    which SimpleITK does not wrap): the outline moves linearly from one key slice to the next.

    Args:
        image: CT (z, y, x) in HU (only its shape is used).
        spacing_xyz: voxel spacing (x, y, z) in mm.
        annotation: ignored (kept for the common signature).
        truth_label: the reference label (z, y, x); non-zero = tumour.

    Returns:
        uint8 (z, y, x) mask, equal to the truth on the three key slices.
    """
    truth = np.asarray(truth_label) > 0
    if truth.shape != image.shape:
        raise InputError(f"The truth label's grid {truth.shape} differs from the image's {image.shape}.")
    areas = slice_areas(truth)
    slices = np.flatnonzero(areas)
    if slices.size == 0:
        raise InputError("The truth label is empty: there are no key slices to fill between.")
    keys = sorted({int(slices[0]), int(np.argmax(areas)), int(slices[-1])})
    threshold = 0.5 * min(spacing_xyz[0], spacing_xyz[1])  # the contour lies half a pixel outside
    distances = {z: _signed_distance_2d(truth[z], spacing_xyz) for z in keys}
    mask = np.zeros(truth.shape, dtype=np.uint8)
    for a, b in zip(keys[:-1], keys[1:]):
        for z in range(a + 1, b):
            t = (z - a) / (b - a)
            mask[z] = ((1.0 - t) * distances[a] + t * distances[b]) < threshold
    for z in keys:
        mask[z] = truth[z]
    return mask


def painted_slice(image: np.ndarray, spacing_xyz: tuple[float, float, float],
                  annotation: np.ndarray) -> tuple[int, np.ndarray]:
    """The painted slice of a baseline's annotation and its (y, x) bool mask, once both are checked.

    Raises:
        InputError: the spacing is not usable, or the annotation is not on exactly one axial slice of the image.
    """
    check_spacing(spacing_xyz)
    slices = check_annotation(annotation, image.shape, spacing_xyz, keyframes=False)
    k = slices[0]
    return k, np.asarray(annotation[k]) > 0


def _slice_by_slice(grown: np.ndarray, k: int, painted: np.ndarray, spacing_xyz: tuple[float, float, float], *,
                    max_growth: float) -> np.ndarray:
    """Keeps, slice by slice away from the painted slice ``k``, the grown regions that continue the previous slice.

    On each slice only the grown pixels within ``max(3 mm, slice spacing)`` of the previous slice's region
    are kept, and of those only the connected parts that overlap it (holes filled). A slice whose region
    is more than ``max_growth`` times the previous one is a leak into a neighbour of similar density,
    and a region smaller than a few pixels is the tumour's end: either ends that direction.
    """
    sampling = (float(spacing_xyz[1]), float(spacing_xyz[0]))
    reach_mm = max(3.0, float(spacing_xyz[2]))
    kept = np.zeros_like(grown)
    kept[k] = painted
    for direction in (1, -1):
        previous, z = painted, k + direction
        while 0 <= z < grown.shape[0]:
            near = ndimage.distance_transform_edt(~previous, sampling=sampling) <= reach_mm
            region = ndimage.binary_fill_holes(parts_touching(grown[z] & near, previous))
            if region.sum() < 4 or region.sum() > max_growth * previous.sum():
                break
            kept[z], previous, z = region, region, z + direction
    return kept


def _signed_distance_2d(mask_2d: np.ndarray, spacing_xyz: tuple[float, float, float]) -> np.ndarray:
    image = sitk.GetImageFromArray(mask_2d.astype(np.uint8))
    image.SetSpacing((float(spacing_xyz[0]), float(spacing_xyz[1])))
    distance = sitk.SignedMaurerDistanceMap(image, insideIsPositive=False, squaredDistance=False,
                                            useImageSpacing=True)
    return sitk.GetArrayFromImage(distance)
