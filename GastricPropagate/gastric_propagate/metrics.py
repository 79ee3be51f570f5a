"""Overlap and distance metrics between binary masks on one voxel grid."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient 2|A∩B|/(|A|+|B|); 1.0 when both masks are empty."""
    a = prediction > 0
    b = truth > 0
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))  # counted, not summed: no integer copy of a CT
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(a & b)) / total


def volume_ml(mask: np.ndarray, spacing_xyz: tuple[float, float, float]) -> float:
    """Volume of a (z, y, x) mask in millilitres, given the voxel spacing in mm (x, y, z)."""
    return float(np.count_nonzero(mask > 0)) * float(np.prod(spacing_xyz)) / 1000.0


def volume_error_percent(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Signed volume error of the prediction relative to the truth, in percent."""
    truth_voxels = int(np.count_nonzero(truth > 0))
    if truth_voxels == 0:
        raise ValueError("the reference mask is empty: a relative volume error is undefined")
    return 100.0 * (int(np.count_nonzero(prediction > 0)) - truth_voxels) / truth_voxels


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1))


def hausdorff95_mm(prediction: np.ndarray, truth: np.ndarray,
                   spacing_xyz: tuple[float, float, float]) -> float:
    """95th percentile of the symmetric surface distance in mm: both directions' surface distances pooled, as
    medpy's ``hd95`` (MONAI's ``compute_hausdorff_distance(percentile=95)`` takes the larger of the two one-way
    percentiles instead); inf when exactly one mask is empty."""
    a = prediction > 0
    b = truth > 0
    if not a.any() and not b.any():
        return 0.0
    if not a.any() or not b.any():
        return float("inf")
    sampling = tuple(float(s) for s in reversed(spacing_xyz))  # arrays are (z, y, x)
    surface_a, surface_b = _surface(a), _surface(b)
    distance_to_b = ndimage.distance_transform_edt(~surface_b, sampling=sampling)
    distance_to_a = ndimage.distance_transform_edt(~surface_a, sampling=sampling)
    distances = np.concatenate([distance_to_b[surface_a], distance_to_a[surface_b]])
    return float(np.percentile(distances, 95))
