"""A mask written as the box that holds its voxels, on its CT's grid, and placed back on that grid.

A painted slice or a tumour is a few thousand voxels of a 512 x 512 x N grid: the module and its worker exchange them
as boxes (``segment --crop-output``, docs/cli.md): writing and reading both took 14-15 ms of a warm run on the
benchmark's CT, the whole grid 64-83 ms (docs/profile.md). A box is a label map like any other: its origin says
where its first voxel lies, so SimpleITK and Slicer place it on the CT. Where a file does not lie on the grid's own
voxels (other spacing or direction, an origin between voxels, a box reaching outside the grid), ``on_grid`` says
what differs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from gastric_propagate.data.annotation import occupied_box
from gastric_propagate.data.lattice import signed_permutation
from gastric_propagate.data.volumes import DIRECTION_TOLERANCE, ORIGIN_TOLERANCE_VOXELS, SPACING_TOLERANCE

_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class Grid:
    """A 3D voxel grid as ITK describes it: size and spacing (i, j, k), origin (LPS mm), direction (row-major)."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = _IDENTITY

    @classmethod
    def of(cls, image) -> Grid:
        """The grid of a ``sitk.Image`` or of an ``sitk.ImageFileReader`` that has read the header."""
        return cls(tuple(int(n) for n in image.GetSize()), tuple(float(s) for s in image.GetSpacing()),
                   tuple(float(o) for o in image.GetOrigin()), tuple(float(d) for d in image.GetDirection()))

    @property
    def shape(self) -> tuple[int, int, int]:
        """The (z, y, x) shape of the grid's arrays."""
        return self.size[::-1]

    def index_to_physical(self) -> np.ndarray:
        """The 3 x 3 matrix taking a voxel index (i, j, k) to its offset from the origin in mm."""
        return np.asarray(self.direction, dtype=float).reshape(3, 3) * np.asarray(self.spacing, dtype=float)


def box_image(mask: np.ndarray, box: tuple[slice, slice, slice], grid: Grid) -> sitk.Image:
    """``mask[box] > 0`` as a 0 / 1 uint8 image on ``grid``'s voxels: its spacing and direction, the origin at the
    box's first voxel."""
    part = sitk.GetImageFromArray((np.asarray(mask[box]) > 0).view(np.uint8))
    corner = np.array([box[2].start, box[1].start, box[0].start], dtype=float)
    part.SetSpacing(grid.spacing)
    part.SetDirection(grid.direction)
    part.SetOrigin(tuple(float(v) for v in np.asarray(grid.origin) + grid.index_to_physical() @ corner))
    return part


def on_grid(part: sitk.Image, grid: Grid) -> np.ndarray:
    """The (z, y, x) array of ``grid`` holding ``part``'s voxels where they lie and 0 elsewhere (an array of its own:
    a view of an image's voxels does not keep the image alive).

    Raises:
        ValueError: ``part`` is not on ``grid``'s voxels; the message says what differs.
    """
    box = box_on_grid(Grid.of(part), grid)
    if part.GetSize() == grid.size:
        return sitk.GetArrayFromImage(part)
    voxels = sitk.GetArrayViewFromImage(part)
    placed = np.zeros(grid.shape, dtype=voxels.dtype)
    placed[box] = voxels
    return placed


def reordered_on_grid(part: sitk.Image, grid: Grid) -> np.ndarray:
    """``on_grid`` for a file that holds the grid's own voxels in another axis order or direction (a flipped or
    permuted array, as tools that store NIfTI in RAS order write it): the same voxels reordered, nothing resampled.

    Raises:
        ValueError: ``part``'s voxel centres are not the grid's (another spacing, a rotation, an origin between its
            voxels), or it reaches outside the grid.
    """
    # Each of part's axes as one of the grid's, either way: a signed permutation of the directions (as box_on_grid's
    # tolerance), then the same spacing along each pair (as tight as box_on_grid's: a slice drifting over a long
    # volume would otherwise land on the next one).
    axes = np.linalg.solve(np.reshape(grid.direction, (3, 3)), np.reshape(part.GetDirection(), (3, 3)))
    whole = signed_permutation(axes, DIRECTION_TOLERANCE)
    if whole is None:
        raise ValueError("its axes are not the grid's in another order (rotated)")
    source = [int(np.argmax(np.abs(whole[axis]))) for axis in range(3)]  # grid axis (i, j, k) <- part axis
    spacing = np.asarray(part.GetSpacing(), dtype=float)[source]
    if not np.allclose(spacing, grid.spacing, rtol=SPACING_TOLERANCE, atol=0.0):
        raise ValueError(f"spacing {_rounded(spacing)} vs {_rounded(grid.spacing)} once its axes are reordered")
    corner = np.linalg.solve(grid.index_to_physical(), np.asarray(part.GetOrigin()) - np.asarray(grid.origin))
    first = np.rint(corner)
    if np.abs(corner - first).max() > ORIGIN_TOLERANCE_VOXELS:
        raise ValueError(f"origin {_rounded(part.GetOrigin())} lies between the grid's voxels")
    voxels = np.transpose(sitk.GetArrayViewFromImage(part), [2 - source[2 - a] for a in range(3)])
    start = np.empty(3, dtype=int)
    for axis in range(3):
        flipped = whole[axis, source[axis]] < 0
        if flipped:  # the part's first voxel is the box's last along this axis
            voxels = np.flip(voxels, axis=2 - axis)
        start[axis] = int(first[axis]) - (part.GetSize()[source[axis]] - 1 if flipped else 0)
    stop = start + np.asarray(voxels.shape[::-1])
    if (start < 0).any() or (stop > np.asarray(grid.size)).any():
        raise ValueError(f"it covers voxels {start.tolist()} to {(stop - 1).tolist()} of a grid of size {grid.size}")
    placed = np.zeros(grid.shape, dtype=voxels.dtype)
    placed[start[2]:stop[2], start[1]:stop[1], start[0]:stop[0]] = voxels
    return placed


def write_box(mask: np.ndarray, grid: Grid, path) -> None:
    """Writes the box that holds the non-zero voxels of ``mask`` (a (z, y, x) array on ``grid``), as 0 / 1, compressed:
    how the module sends its painted slice."""
    mask = np.asarray(mask)
    sitk.WriteImage(box_image(mask, occupied_box(mask), grid), str(path), True)


def box_on_grid(part: Grid, grid: Grid) -> tuple[slice, slice, slice]:
    """The (z, y, x) box of ``grid`` that ``part`` covers voxel for voxel.

    Raises:
        ValueError: another spacing or direction, an origin between ``grid``'s voxels, or a box reaching outside it.
    """
    if not np.allclose(part.spacing, grid.spacing, rtol=SPACING_TOLERANCE, atol=0.0):
        raise ValueError(f"spacing {_rounded(part.spacing)} vs {_rounded(grid.spacing)}")
    if not np.allclose(part.direction, grid.direction, rtol=0.0, atol=DIRECTION_TOLERANCE):
        raise ValueError(f"direction {_rounded(part.direction)} vs {_rounded(grid.direction)}")
    corner = np.linalg.solve(grid.index_to_physical(), np.asarray(part.origin) - np.asarray(grid.origin))
    index = np.rint(corner)
    if np.abs(corner - index).max() > ORIGIN_TOLERANCE_VOXELS:
        raise ValueError(f"origin {_rounded(part.origin)} lies between the voxels of the grid at "
                         f"{_rounded(grid.origin)} (voxel index {_rounded(corner)})")
    start = index.astype(int)
    stop = start + np.asarray(part.size)
    if (start < 0).any() or (stop > np.asarray(grid.size)).any():
        raise ValueError(f"size {part.size} from voxel {tuple(int(v) for v in start)} reaches outside the grid of "
                         f"size {grid.size}")
    return tuple(slice(int(a), int(b)) for a, b in zip(start[::-1], stop[::-1]))


def _rounded(values) -> tuple[float, ...]:
    return tuple(round(float(v), 4) for v in values)
