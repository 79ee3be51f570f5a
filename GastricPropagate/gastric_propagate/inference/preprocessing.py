"""From the CT grid to the networks' grid and back.

The networks see an axial crop around the painted cross-section, resampled in-plane to a fixed
spacing, so their cost does not grow with a 512x512 matrix and they see tumours at one scale.
Slices are kept as acquired (no resampling along z): propagation goes slice by slice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

# Intensity window the networks see: soft tissue, tumour and wall well resolved, gas and bone clipped.
HU_WINDOW = (-250.0, 350.0)
AIR_HU = -1024.0


@dataclass(frozen=True)
class Preprocessing:
    """The preprocessing a checkpoint was trained with; stored in the checkpoint and reused at inference.

    Attributes:
        pixel_spacing_mm: in-plane spacing of the networks' grid.
        margin_fraction: crop margin around the anchors' bounding box, as a fraction of its extent.
        min_margin_mm: the smallest crop margin.
        size_multiple: crop sizes are rounded up to this (the U-Net's downsampling factor).
        min_size: the smallest crop side in pixels.
        hu_window: (low, high) HU mapped to [-1, 1].
    """

    pixel_spacing_mm: float = 1.0
    margin_fraction: float = 0.35
    min_margin_mm: float = 16.0
    size_multiple: int = 16
    min_size: int = 64
    hu_window: tuple[float, float] = HU_WINDOW

    def to_dict(self) -> dict:
        return {"pixel_spacing_mm": self.pixel_spacing_mm, "margin_fraction": self.margin_fraction,
                "min_margin_mm": self.min_margin_mm, "size_multiple": self.size_multiple,
                "min_size": self.min_size, "hu_window": list(self.hu_window)}

    @classmethod
    def from_dict(cls, values: dict) -> "Preprocessing":
        values = dict(values)
        values["hu_window"] = tuple(values.get("hu_window", HU_WINDOW))
        return cls(**values)


@dataclass(frozen=True)
class CropGrid:
    """An axial crop of the CT on the networks' grid, in the CT's continuous index space.

    Attributes:
        origin_xy: (x, y) index-space position of the crop's first pixel centre.
        step_xy: (x, y) size of one crop pixel in CT voxels.
        size: side of the square crop in pixels.
    """

    origin_xy: tuple[float, float]
    step_xy: tuple[float, float]
    size: int


def normalise_hu(image: np.ndarray, window: tuple[float, float] = HU_WINDOW) -> np.ndarray:
    """Maps HU linearly so that ``window`` becomes [-1, 1], clipping outside it (float32)."""
    low, high = window
    scaled = (image.astype(np.float32) - low) * (2.0 / (high - low)) - 1.0
    return np.clip(scaled, -1.0, 1.0, out=scaled)


def crop_grid_for(anchor_mask: np.ndarray, spacing_xyz: tuple[float, float, float],
                  prep: Preprocessing, *, centre_shift_mm: tuple[float, float] = (0.0, 0.0),
                  extra_margin_mm: float = 0.0) -> CropGrid:
    """A square crop around the painted voxels of every anchor slice (``anchor_mask`` is (z, y, x)).

    ``centre_shift_mm`` and ``extra_margin_mm`` jitter the crop during training only.
    """
    in_plane = anchor_mask.reshape(-1, *anchor_mask.shape[-2:]).any(axis=0)
    ys, xs = np.nonzero(in_plane)
    sx, sy = float(spacing_xyz[0]), float(spacing_xyz[1])
    extent_mm = max((xs.max() - xs.min() + 1) * sx, (ys.max() - ys.min() + 1) * sy)
    margin_mm = max(prep.min_margin_mm, prep.margin_fraction * extent_mm) + extra_margin_mm
    side_mm = extent_mm + 2.0 * margin_mm
    size = max(prep.min_size, int(math.ceil(side_mm / prep.pixel_spacing_mm / prep.size_multiple)) * prep.size_multiple)
    step_x, step_y = prep.pixel_spacing_mm / sx, prep.pixel_spacing_mm / sy
    centre_x = (xs.min() + xs.max()) / 2.0 + centre_shift_mm[0] / sx
    centre_y = (ys.min() + ys.max()) / 2.0 + centre_shift_mm[1] / sy
    origin = (centre_x - step_x * (size - 1) / 2.0, centre_y - step_y * (size - 1) / 2.0)
    return CropGrid(origin_xy=origin, step_xy=(step_x, step_y), size=size)


def _covered_box(grid: CropGrid, shape_yx: tuple[int, int]) -> tuple[int, int, int, int]:
    """(y_lo, y_hi, x_lo, x_hi): the CT pixels the crop grid covers, one pixel of margin, clipped to the CT."""
    x_lo = max(0, int(math.floor(grid.origin_xy[0])) - 1)
    y_lo = max(0, int(math.floor(grid.origin_xy[1])) - 1)
    x_hi = min(shape_yx[1], int(math.ceil(grid.origin_xy[0] + grid.step_xy[0] * (grid.size - 1))) + 2)
    y_hi = min(shape_yx[0], int(math.ceil(grid.origin_xy[1] + grid.step_xy[1] * (grid.size - 1))) + 2)
    return y_lo, y_hi, x_lo, x_hi


def to_crop(volume: np.ndarray, grid: CropGrid, *, interpolator=sitk.sitkLinear,
            default_value: float = AIR_HU) -> np.ndarray:
    """Resamples every axial slice of a (z, y, x) volume onto the crop grid: (z, size, size) float32.

    Only the CT pixels under the crop are read; the crop's parts outside the CT get ``default_value``.
    """
    y_lo, y_hi, x_lo, x_hi = _covered_box(grid, volume.shape[1:])
    if y_hi <= y_lo or x_hi <= x_lo:
        return np.full((volume.shape[0], grid.size, grid.size), default_value, dtype=np.float32)
    source = sitk.GetImageFromArray(volume[:, y_lo:y_hi, x_lo:x_hi].astype(np.float32))
    source.SetOrigin((float(x_lo), float(y_lo), 0.0))
    reference = sitk.Image(grid.size, grid.size, volume.shape[0], sitk.sitkFloat32)
    reference.SetOrigin((grid.origin_xy[0], grid.origin_xy[1], 0.0))
    reference.SetSpacing((grid.step_xy[0], grid.step_xy[1], 1.0))
    resampled = sitk.Resample(source, reference, sitk.Transform(), interpolator, default_value, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resampled)


def mask_from_crop(crop: np.ndarray, grid: CropGrid, shape_zyx: tuple[int, int, int],
                   slices: slice | None = None) -> np.ndarray:
    """Resamples (z, size, size) crop probabilities onto the CT grid and thresholds them: uint8 (z, y, x).

    Probabilities, not masks, are interpolated, so the outline is smooth on the finer CT grid.

    Only the in-plane box the crop covers is resampled, so pasting back costs little on a 512x512 matrix.
    ``slices`` restricts the work to the axial range the crop values cover (crop[0] is slice slices.start).
    """
    z0 = 0 if slices is None else slices.start
    nz = crop.shape[0]
    out = np.zeros(shape_zyx, dtype=np.uint8)
    y_lo, y_hi, x_lo, x_hi = _covered_box(grid, shape_zyx[1:])
    if x_hi <= x_lo or y_hi <= y_lo or nz == 0:
        return out
    source = sitk.GetImageFromArray(crop.astype(np.float32, copy=False))
    source.SetOrigin((grid.origin_xy[0], grid.origin_xy[1], 0.0))
    source.SetSpacing((grid.step_xy[0], grid.step_xy[1], 1.0))
    reference = sitk.Image(x_hi - x_lo, y_hi - y_lo, nz, sitk.sitkFloat32)
    reference.SetOrigin((float(x_lo), float(y_lo), 0.0))
    resampled = sitk.Resample(source, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    out[z0:z0 + nz, y_lo:y_hi, x_lo:x_hi] = sitk.GetArrayFromImage(resampled) > 0.5
    return out
