"""The one painted slice a user would draw, made from a 3D label: the default and robustness variants.

Variants (all on one axial slice, uint8 (z, y, x), deterministic given ``seed``):
    largest: the largest cross-section, copied from the label (the slice the protocol asks for).
    random_slice: a random tumour slice whose area is at least a quarter of the largest one
        (a user who paints another slice than the largest; tiny end slices are not drawn).
    random_slice_ticked: the same slice as random_slice, run as the largest (a user who paints another slice and
        leaves the box ticked, as the engine's advice is there to catch).
    next_slice: the slice just above or below the largest cross-section, at random (a user who misses the
        largest by one slice and, believing it the largest, leaves the options as they are).
    eroded: the largest cross-section shrunk in-plane by a random 1-2 mm (a tight outline).
    dilated: the largest cross-section grown in-plane by a random 1-2 mm (a generous outline).
"""

from __future__ import annotations

import zlib
from typing import Callable

import numpy as np
from scipy import ndimage

from gastric_propagate.data.annotation import annotation_from_label, largest_cross_section_index, slice_areas

DEFAULT_VARIANT = "largest"
# Variants run as not the largest cross-section (--painted-not-largest), as a user who knows it would; a user who
# misses the largest by a slice (next_slice) believes it the largest.
PAINTED_NOT_LARGEST = frozenset({"random_slice"})
# Variants that draw the same annotation as another one (their own random stream would pick another slice).
SAME_SLICE_AS = {"random_slice_ticked": "random_slice"}
# A random-slice annotation is drawn only on slices at least this fraction of the largest area.
MIN_RANDOM_SLICE_AREA_FRACTION = 0.25
# In-plane outline change of the eroded / dilated variants, in mm (drawn uniformly).
OUTLINE_CHANGE_MM = (1.0, 2.0)


def largest(label: np.ndarray, spacing_xyz: tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
    """The largest cross-section, exactly as in the label."""
    return annotation_from_label(label)


def random_slice(label: np.ndarray, spacing_xyz: tuple[float, float, float],
                 rng: np.random.Generator) -> np.ndarray:
    """The label on a random tumour slice with at least a quarter of the largest area."""
    areas = slice_areas(label)
    candidates = np.flatnonzero(areas >= MIN_RANDOM_SLICE_AREA_FRACTION * areas.max())
    return annotation_from_label(label, int(rng.choice(candidates)))


def next_slice(label: np.ndarray, spacing_xyz: tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
    """The label on the slice just above or below the largest cross-section (one that holds tumour), at random."""
    k = largest_cross_section_index(label)
    areas = slice_areas(label)
    neighbours = [z for z in (k - 1, k + 1) if 0 <= z < len(areas) and areas[z] > 0]
    return annotation_from_label(label, int(rng.choice(neighbours)) if neighbours else k)


def eroded(label: np.ndarray, spacing_xyz: tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
    """The largest cross-section shrunk in-plane by 1-2 mm (never to nothing)."""
    return _change_outline(label, spacing_xyz, -float(rng.uniform(*OUTLINE_CHANGE_MM)))


def dilated(label: np.ndarray, spacing_xyz: tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
    """The largest cross-section grown in-plane by 1-2 mm."""
    return _change_outline(label, spacing_xyz, float(rng.uniform(*OUTLINE_CHANGE_MM)))


VARIANTS: dict[str, Callable[[np.ndarray, tuple[float, float, float], np.random.Generator], np.ndarray]] = {
    "largest": largest,
    "random_slice": random_slice,
    "random_slice_ticked": random_slice,
    "next_slice": next_slice,
    "eroded": eroded,
    "dilated": dilated,
}


def make_annotation(label: np.ndarray, spacing_xyz: tuple[float, float, float], variant: str = DEFAULT_VARIANT,
                    *, seed: int = 0) -> np.ndarray:
    """The annotation of one variant for one label; the same (label, variant, seed) gives the same result.

    Args:
        label: reference label (z, y, x); non-zero = tumour.
        spacing_xyz: voxel spacing (x, y, z) in mm.
        variant: one of ``VARIANTS``.
        seed: randomness of the variant (the case's seed, for instance); each variant draws from
            its own stream, so adding a variant does not change the others.

    Returns:
        uint8 (z, y, x), non-zero on exactly one axial slice.

    Raises:
        ValueError: an unknown variant or an empty label.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown annotation variant {variant!r}; choose from {', '.join(VARIANTS)}")
    if not np.any(label):
        raise ValueError("the label is empty: there is no tumour to annotate")
    stream = SAME_SLICE_AS.get(variant, variant)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(stream.encode())])
    return VARIANTS[variant](label, spacing_xyz, rng)


def _change_outline(label: np.ndarray, spacing_xyz: tuple[float, float, float], change_mm: float) -> np.ndarray:
    k = largest_cross_section_index(label)
    painted = label[k] > 0
    sampling = (float(spacing_xyz[1]), float(spacing_xyz[0]))  # (y, x)
    if change_mm >= 0:
        changed = ndimage.distance_transform_edt(~painted, sampling=sampling) <= change_mm
    else:
        depth = ndimage.distance_transform_edt(painted, sampling=sampling)
        changed = depth > -change_mm
        if not changed.any():  # a thin outline: keep its innermost pixels rather than nothing
            changed = depth >= depth.max()
    annotation = np.zeros(label.shape, dtype=np.uint8)
    annotation[k] = changed
    return annotation
