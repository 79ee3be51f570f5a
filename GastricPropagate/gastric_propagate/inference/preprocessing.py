"""From the CT grid to the networks' grid and back.

The networks see an axial crop around the painted cross-section, resampled in-plane to a fixed
spacing, so their cost does not grow with a 512x512 matrix and they see tumours at one scale.
Along z, slices thinner than ``Preprocessing.slice_step_mm`` are resampled to working slices that step
by that distance and pass through the painted slice, so a 0.6 mm series and a 3 mm one take steps of
similar size (the proposer would otherwise drift over hundreds of near-identical steps); thicker
slices are kept as acquired.

Intensities are read relative to the painted region ("prompt" normalisation): its median HU maps
to 0, so a tumour brighter or darker than any seen in training looks the same to the networks.
"""

from __future__ import annotations

import dataclasses
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
        hu_window: (low, high) HU mapped to [-1, 1] ("window" intensity only).
        intensity: "prompt" (HU relative to the painted region's median, ``prompt_scale_hu`` HU per unit,
            clipped at ``prompt_clip`` units, then scaled to [-1, 1]) or "window" (fixed ``hu_window``).
        prompt_scale_hu: HU per unit of the prompt normalisation.
        prompt_clip: units at which the prompt normalisation saturates (air, lung and bone saturate).
        slice_step_mm: slices thinner than this are resampled to working slices this far apart;
            None keeps the CT's own slices.
    """

    pixel_spacing_mm: float = 1.0
    margin_fraction: float = 0.35
    min_margin_mm: float = 16.0
    size_multiple: int = 16
    min_size: int = 64
    hu_window: tuple[float, float] = HU_WINDOW
    intensity: str = "prompt"
    prompt_scale_hu: float = 100.0
    prompt_clip: float = 3.0
    slice_step_mm: float | None = 2.0

    def __post_init__(self):
        if self.intensity not in ("prompt", "window"):
            raise ValueError(f"intensity must be 'prompt' or 'window', not {self.intensity!r}")

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["hu_window"] = list(self.hu_window)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "Preprocessing":
        values = dict(values)
        values["hu_window"] = tuple(values.get("hu_window", HU_WINDOW))
        # Checkpoints written before these fields existed used the fixed window and the CT's own slices.
        values.setdefault("intensity", "window")
        values.setdefault("slice_step_mm", None)
        return cls(**values)


@dataclass(frozen=True)
class CropGrid:
    """An axial crop of the CT on the networks' grid, in the CT's continuous index space.

    Attributes:
        origin_xy: (x, y) index-space position of the crop's first pixel centre.
        step_xy: (x, y) size of one crop pixel in CT voxels.
        size: side of the square crop in pixels.
        origin_z: CT slice index (continuous) of the first working slice.
        step_z: distance between working slices, in CT slices (1: the CT's own slices).
        depth: number of working slices; None: one per CT slice.
    """

    origin_xy: tuple[float, float]
    step_xy: tuple[float, float]
    size: int
    origin_z: float = 0.0
    step_z: float = 1.0
    depth: int | None = None

    def in_plane(self) -> "CropGrid":
        """The same crop on the CT's own slices."""
        return dataclasses.replace(self, origin_z=0.0, step_z=1.0, depth=None)

    def slice_position(self, working_index: int) -> float:
        """CT slice index (continuous) of a working slice."""
        return self.origin_z + working_index * self.step_z

    def working_index(self, ct_slice: float) -> int:
        """The working slice nearest to CT slice ``ct_slice`` (an anchor lies exactly on one)."""
        return int(round((ct_slice - self.origin_z) / self.step_z))

    def nearest_working(self, ct_slice: float) -> set[int]:
        """The working slice(s) nearest to CT slice ``ct_slice``: both where it lies halfway between two, whose masks
        it is then read from alike."""
        position = (ct_slice - self.origin_z) / self.step_z
        return {int(np.floor(position + 0.5 + 1e-6)), int(np.ceil(position - 0.5 - 1e-6))}


def with_working_slices(grid: CropGrid, anchor_slices: list[int], n_slices: int, slice_mm: float,
                        prep: Preprocessing) -> CropGrid:
    """Adds the working slices: every CT slice, or (thin slices, one anchor) slices ``slice_step_mm`` apart
    through the anchor, covering the CT's whole z range."""
    if prep.slice_step_mm is None or slice_mm >= prep.slice_step_mm or len(anchor_slices) != 1:
        return dataclasses.replace(grid, origin_z=0.0, step_z=1.0, depth=n_slices)
    step = prep.slice_step_mm / slice_mm
    anchor = anchor_slices[0]
    origin = anchor - math.floor(anchor / step + 1e-9) * step
    depth = int(math.floor((n_slices - 1 - origin) / step + 1e-9)) + 1
    return dataclasses.replace(grid, origin_z=origin, step_z=step, depth=depth)


def prompt_centre(image: np.ndarray, painted: np.ndarray) -> float:
    """Median HU of the painted voxels: the intensity the prompt normalisation maps to 0."""
    return float(np.median(image[painted]))


def normalise(image: np.ndarray, prep: Preprocessing, centre_hu: float) -> np.ndarray:
    """The networks' intensities (float32 in [-1, 1]) under ``prep.intensity``; see ``Preprocessing``."""
    if prep.intensity == "window":
        return normalise_hu(image, prep.hu_window)
    scaled = (image.astype(np.float32) - np.float32(centre_hu)) / np.float32(prep.prompt_scale_hu)
    np.clip(scaled, -prep.prompt_clip, prep.prompt_clip, out=scaled)
    scaled /= np.float32(prep.prompt_clip)
    return scaled


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
    """Resamples a (z, y, x) volume onto the crop grid's working slices: (depth, size, size) float32.

    Only the CT pixels under the crop are read; the crop's parts outside the CT get ``default_value``.
    """
    depth = volume.shape[0] if grid.depth is None else grid.depth
    y_lo, y_hi, x_lo, x_hi = _covered_box(grid, volume.shape[1:])
    if y_hi <= y_lo or x_hi <= x_lo:
        return np.full((depth, grid.size, grid.size), default_value, dtype=np.float32)
    source = sitk.GetImageFromArray(volume[:, y_lo:y_hi, x_lo:x_hi].astype(np.float32))
    source.SetOrigin((float(x_lo), float(y_lo), 0.0))
    reference = sitk.Image(grid.size, grid.size, depth, sitk.sitkFloat32)
    reference.SetOrigin((grid.origin_xy[0], grid.origin_xy[1], grid.origin_z))
    reference.SetSpacing((grid.step_xy[0], grid.step_xy[1], grid.step_z))
    resampled = sitk.Resample(source, reference, sitk.Transform(), interpolator, default_value, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resampled)


def mask_from_crop(crop: np.ndarray, grid: CropGrid, shape_zyx: tuple[int, int, int],
                   slices: slice | None = None) -> np.ndarray:
    """Resamples crop probabilities onto the CT grid and thresholds them: uint8 (z, y, x).

    Probabilities, not masks, are interpolated (in-plane, and along z between working slices), so the
    outline is smooth on the finer CT grid. Only the box the crop covers is resampled, so pasting back costs
    little on a 512x512 matrix. ``slices`` is the range of working slices ``crop`` holds (crop[0] is working
    slice slices.start); CT slices outside the span of those working slices stay 0.
    """
    w0 = 0 if slices is None else slices.start
    nz = crop.shape[0]
    out = np.zeros(shape_zyx, dtype=np.uint8)
    y_lo, y_hi, x_lo, x_hi = _covered_box(grid, shape_zyx[1:])
    first_z = grid.slice_position(w0)
    last_z = grid.slice_position(w0 + nz - 1)
    z_lo, z_hi = max(0, int(math.ceil(first_z - 1e-6))), min(shape_zyx[0] - 1, int(math.floor(last_z + 1e-6)))
    if x_hi <= x_lo or y_hi <= y_lo or nz == 0 or z_hi < z_lo:
        return out
    source = sitk.GetImageFromArray(crop.astype(np.float32, copy=False))
    source.SetOrigin((grid.origin_xy[0], grid.origin_xy[1], first_z))
    source.SetSpacing((grid.step_xy[0], grid.step_xy[1], grid.step_z))
    reference = sitk.Image(x_hi - x_lo, y_hi - y_lo, z_hi - z_lo + 1, sitk.sitkFloat32)
    reference.SetOrigin((float(x_lo), float(y_lo), float(z_lo)))
    resampled = sitk.Resample(source, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    out[z_lo:z_hi + 1, y_lo:y_hi, x_lo:x_hi] = sitk.GetArrayFromImage(resampled) > 0.5
    return out
