"""Slice-to-slice registration: the painted outline carried from slice to slice by 2D image registration.

The classical method that generalises best on real CT, because it learned nothing from any training set.
The pipeline uses it as one of the three opinions of its consensus (see ``consensus.py``); the evaluation
also scores it alone, as a baseline.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Hashable

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from gastric_propagate.inference.masks import bounding_box, bounds, largest_component, slices_within

logger = logging.getLogger(__name__)

# The HU range the registration compares: soft tissue and contrast resolved, air and bone clipped, so that
# a rib or the lung does not decide how a soft-tissue tumour moved.
REGISTRATION_HU = (-300.0, 400.0)
# Lowest standard deviation (HU) assumed for the painted region: a very homogeneous painted region would
# otherwise give an intensity window too narrow to follow.
MIN_HU_SD = 12.0
# Pixels of the warped outline given back around what the intensity window kept, on each slice. The window drops
# the partial-volume rim of a tumour (its edge pixels mix tumour and fat or air), and along a chain of slices that
# loss would add up to a steady shrinking. One pixel, and never beyond the warped outline.
RESTORED_RIM_PX = 1


def propagate_by_registration(image: np.ndarray, spacing_xyz: tuple[float, float, float], k: int,
                              painted: np.ndarray, *, transform: str = "affine", iterations: int = 25,
                              margin_mm: float = 12.0, multiplier: float = 1.5, extent_factor: float = 0.5,
                              min_area_fraction: float = 0.05, min_inside_window: float = 0.5,
                              restored_rim_px: int = RESTORED_RIM_PX,
                              limits: tuple[int, int] | None = None,
                              memo: tuple[WalkMemo, Hashable] | None = None,
                              should_stop: Callable[[], bool] | None = None) -> np.ndarray:
    """The mask of slice k warped onto slice k±1, up and down, one slice at a time.

    Each step registers a crop around the current mask (``margin_mm`` around it) of slice k±1 (fixed) to
    slice k (moving) with SimpleITK, mean squares metric, then warps the mask. The warped mask is
    intersected with the painted region's intensity window (mean ± ``multiplier`` SD on a median-filtered
    slice), opened, reduced to its largest component and its holes filled; then the warped outline's pixels
    within ``restored_rim_px`` of what is left are given back (the tumour's partial-volume rim). A direction
    stops when the mask vanishes (smaller than ``min_area_fraction`` of the painted area), when less than
    ``min_inside_window`` of the warped mask lies in the intensity window (it left plausible HU), or
    ``extent_factor`` equivalent diameters away from the painted slice (a tumour about as long as it is wide).

    Args:
        image: CT (z, y, x) in HU.
        spacing_xyz: voxel spacing (x, y, z) in mm.
        k: the painted slice.
        painted: (y, x) bool, the painted cross-section on slice ``k``; must not be empty.
        transform: "affine" (2D affine, gradient descent) or "demons" (fast symmetric forces Demons).
        iterations: optimiser (or Demons) iterations per slice pair.
        margin_mm: margin of the registration crop around the current mask.
        multiplier: half-width of the intensity window in standard deviations.
        extent_factor: furthest distance along z, as a fraction of the equivalent diameter.
        min_area_fraction: a propagated mask smaller than this fraction of the painted area ends it.
        min_inside_window: the fraction of a warped mask that must lie in the intensity window.
        restored_rim_px: how many pixels of the warped outline to give back around what the window kept.
        limits: the lowest and highest slice (inclusive) the caller needs: the walks go no further (each step
            depends only on the one before, so the slices they reach are the same as without limits).
        memo: a ``WalkMemo`` and the name of this CT's voxels (which the caller guarantees to change whenever they
            do): a walk it holds from an earlier run is served from it instead of being walked again.
        should_stop: polled before each step; once it returns True the walks end where they are (nothing is
            remembered) and the mask is incomplete: a caller whose run failed or was cancelled stops them so, and
            waits, before the CT they read may be freed.

    Returns:
        uint8 (z, y, x) mask; slice ``k`` equals ``painted``.
    """
    if transform not in ("affine", "demons"):
        raise ValueError(f"transform must be 'affine' or 'demons', not {transform!r}")
    sx, sy, _sz = spacing_xyz
    around = bounding_box(painted, margin=1)  # a painted pixel's 3x3 median reads only its neighbours: no whole slice
    lower, upper = hu_window(median_2d(image[k][around], spacing_xyz)[painted[around]], multiplier)
    max_steps = slices_within(painted, spacing_xyz, extent_factor)
    min_area = max(4, int(min_area_fraction * painted.sum()))
    margin = (max(2, math.ceil(margin_mm / sy)), max(2, math.ceil(margin_mm / sx)))
    opening = ndimage.generate_binary_structure(2, 1)

    mask = np.zeros(image.shape, dtype=np.uint8)
    mask[k] = painted

    lowest, highest = (0, image.shape[0] - 1) if limits is None else (max(0, limits[0]),
                                                                     min(image.shape[0] - 1, limits[1]))

    settings = None if memo is None else (
        memo[1], k, hashlib.blake2b(np.packbits(painted).tobytes() + repr(painted.shape).encode()).hexdigest(),
        tuple(spacing_xyz), transform, iterations, margin, multiplier, max_steps, min_area, min_inside_window,
        restored_rim_px, image.shape)

    def walk(direction: int) -> None:
        limit = highest if direction > 0 else lowest
        key = None if settings is None else (direction, *settings)
        if key is not None:
            walked = memo[0].recall(key, limit, direction)
            if walked is not None:
                for target, cross_section in walked.items():
                    mask[target] = cross_section
                return
        current, j, ended_itself = painted, k, True
        while True:
            if should_stop is not None and should_stop():
                return  # an incomplete walk: never remembered
            if not (abs(j + direction - k) <= max_steps and 0 <= j + direction < image.shape[0]):
                break
            if not lowest <= j + direction <= highest:
                ended_itself = False  # stopped by the limit: a later run that needs more must walk again
                break
            target = j + direction
            (y0, y1), (x0, x1) = bounds(current, margin)
            window = (slice(y0, y1 + 1), slice(x0, x1 + 1))
            warped = warp_mask(image[j][window], image[target][window], current[window], (sx, sy),
                               transform=transform, iterations=iterations)
            if warped.sum() < min_area:
                break
            fixed = median_2d(image[target][window], spacing_xyz)
            plausible = (fixed >= lower) & (fixed <= upper)
            if (warped & plausible).sum() < min_inside_window * warped.sum():
                break
            kept = ndimage.binary_fill_holes(largest_component(ndimage.binary_opening(warped & plausible, opening)))
            if restored_rim_px:
                kept |= ndimage.binary_dilation(kept, opening, iterations=restored_rim_px) & warped
            if kept.sum() < min_area:
                break
            current = np.zeros_like(painted)
            current[window] = kept
            mask[target] = current
            j = target
        if key is not None:
            memo[0].remember(key, limit, ended_itself, {t: mask[t] for t in range(k + direction, j + direction,
                                                                                  direction)})

    # Up and down are independent walks over different slices: one thread each. SimpleITK's registration releases
    # the GIL, so on two cores the walks run side by side; the mask does not depend on it.
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(walk, (1, -1)))
    return mask


class WalkMemo:
    """Registration walks of earlier runs on the same CT, to serve again: a re-propagation after a correction walks
    from the painted slice exactly as the run before it did, and only the corrected slice's walks are new.

    A walk is known by everything it depends on: the name the caller gives the CT's voxels, its direction, its
    anchor's slice and outline, and every setting of ``propagate_by_registration``. It is served again for a limit no
    further than the one it was walked to, or for any limit when it ended by itself (the tumour ended, or its reach
    or the volume did), truncated at the new limit: each step depends only on the one before, so that is the walk a
    new run would make. The last ``capacity`` walks are kept (their masks packed to bits).
    """

    def __init__(self, capacity: int = 8) -> None:
        self.capacity = capacity
        self._walks: OrderedDict = OrderedDict()
        self._lock = threading.Lock()  # the up and down walks run in two threads

    def recall(self, key: Hashable, limit: int, direction: int) -> dict[int, np.ndarray] | None:
        """The walk's cross-sections (slice -> (y, x) bool) up to ``limit``, or None when it must be walked."""
        with self._lock:
            entry = self._walks.get(key)
            if entry is not None:
                self._walks.move_to_end(key)
        if entry is None:
            return None
        walked_to, ended_itself, shape, packed = entry
        if not ended_itself and direction * (limit - walked_to) > 0:
            return None  # it stopped at its limit, and this run needs more
        return {target: np.unpackbits(bits, count=shape[0] * shape[1]).reshape(shape).astype(bool)
                for target, bits in packed.items() if direction * (limit - target) >= 0}

    def remember(self, key: Hashable, limit: int, ended_itself: bool, walked: dict[int, np.ndarray]) -> None:
        shape = next(iter(walked.values())).shape if walked else (0, 0)
        packed = {target: np.packbits(cross_section.astype(bool)) for target, cross_section in walked.items()}
        with self._lock:
            self._walks[key] = (limit, ended_itself, shape, packed)
            self._walks.move_to_end(key)
            while len(self._walks) > self.capacity:
                self._walks.popitem(last=False)


def warp_mask(moving: np.ndarray, fixed: np.ndarray, moving_mask: np.ndarray, spacing_xy: tuple[float, float], *,
              transform: str = "affine", iterations: int = 25) -> np.ndarray:
    """Registers ``fixed`` to ``moving`` (2D crops, HU) and returns ``moving_mask`` warped onto ``fixed``.

    A failed affine registration (too few overlapping samples after a wild step) keeps the mask in place,
    which is what copying the slice would do.
    """
    def to_image(array: np.ndarray) -> sitk.Image:
        result = sitk.GetImageFromArray(np.clip(array, *REGISTRATION_HU).astype(np.float32))
        result.SetSpacing(tuple(float(s) for s in spacing_xy))
        return result

    fixed_image, moving_image = to_image(fixed), to_image(moving)
    mask_image = sitk.GetImageFromArray(moving_mask.astype(np.float32))
    mask_image.CopyInformation(moving_image)
    if transform == "demons":
        demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
        demons.SetNumberOfThreads(1)  # a small 2D crop: a second thread did not pay (same field; benchmark)
        demons.SetNumberOfIterations(iterations)
        demons.SetStandardDeviations(1.5)
        field = demons.Execute(fixed_image, moving_image)
        found: sitk.Transform = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    else:
        ys, xs = np.nonzero(moving_mask)
        initial = sitk.AffineTransform(2)
        initial.SetCenter(moving_image.TransformContinuousIndexToPhysicalPoint((float(xs.mean()), float(ys.mean()))))
        registration = sitk.ImageRegistrationMethod()
        registration.SetMetricAsMeanSquares()
        registration.SetMetricSamplingStrategy(registration.NONE)
        registration.SetInterpolator(sitk.sitkLinear)
        registration.SetOptimizerAsRegularStepGradientDescent(
            learningRate=1.0, minStep=0.01, numberOfIterations=iterations, relaxationFactor=0.5)
        registration.SetOptimizerScalesFromPhysicalShift()
        registration.SetInitialTransform(initial, inPlace=False)
        try:
            found = registration.Execute(fixed_image, moving_image)
        except RuntimeError as error:
            logger.debug("registration failed (%s); keeping the mask in place", error)
            found = initial
    warped = sitk.Resample(mask_image, fixed_image, found, sitk.sitkLinear, 0.0)
    return sitk.GetArrayFromImage(warped) > 0.5


def hu_window(values: np.ndarray, multiplier: float) -> tuple[float, float]:
    """Mean ± ``multiplier`` SD of ``values`` (the SD at least ``MIN_HU_SD``)."""
    mean = float(np.mean(values))
    sd = max(float(np.std(values)), MIN_HU_SD)
    return mean - multiplier * sd, mean + multiplier * sd


def median_2d(slice_2d: np.ndarray, spacing_xyz: tuple[float, float, float]) -> np.ndarray:
    """A 3x3 median filter of one slice (noise would otherwise punch holes in the intensity window)."""
    image = sitk.GetImageFromArray(slice_2d.astype(np.float32))
    image.SetSpacing((float(spacing_xyz[0]), float(spacing_xyz[1])))
    return sitk.GetArrayFromImage(sitk.Median(image, [1, 1]))
