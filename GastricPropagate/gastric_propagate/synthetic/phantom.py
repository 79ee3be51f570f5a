"""Synthetic abdominal CT volumes with a gastric tumour: training and test material for the networks.

A phantom is drawn from ``np.random.default_rng(seed)`` (and side streams of the same seed for the
perigastric fat and the tumour's optional low-density parts) alone, so a seed names one volume for good.
The anatomy is laid out in a patient frame in mm (x to the patient's left, y posterior, z cranial, as
in LPS; the body axis passes through x = y = 0 and the tumour's centre lies at z = 0), painted layer
by layer with soft edges, then noised and blurred. The volume is a crop of that patient around the
tumour. Seeds from :data:`HELD_OUT_SEED_START` up are kept for evaluation and benchmarks.

This module draws the case and puts the parts together: ``phantom_canvas`` (the painted volume, noise and blur),
``phantom_anatomy`` (body, spine, organs, stomach) and ``phantom_tumour`` (the tumour, its fat plane and its label).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from gastric_propagate.synthetic.phantom_anatomy import (PHASE_HU, draw_body, draw_stomach, paint_body, paint_organs,
                                                         paint_spine, paint_stomach)
from gastric_propagate.synthetic.phantom_canvas import Canvas, noise_and_blur
from gastric_propagate.synthetic.phantom_tumour import (LABEL_END_COVERAGE_SHIFT, ROUGH_MAX_MM, draw_tumour,
                                                        paint_fat_plane, paint_tumour, place_tumour)

logger = logging.getLogger(__name__)

HELD_OUT_SEED_START = 100_000
PHASES = ("arterial", "venous", "delayed")
_HU_MIN, _HU_MAX = -1024, 3071
_EDGE_MARGIN_MM = 10.0  # free space between the tumour and the in-plane edges of the volume
_MIN_MARGIN_SLICES = 1  # free slices above and below the tumour when n_slices is imposed


@dataclass(frozen=True)
class Phantom:
    """One synthetic CT volume and its tumour label.

    Attributes:
        image: int16 Hounsfield units.
        label: uint8, tumour = 1; same size, spacing, origin and direction as ``image``.
        seed: the seed it was drawn from.
        phase: the contrast phase, one of :data:`PHASES`.
    """

    image: sitk.Image
    label: sitk.Image
    seed: int
    phase: str

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The image (int16) and label (uint8) as (z, y, x) numpy arrays."""
        return sitk.GetArrayFromImage(self.image), sitk.GetArrayFromImage(self.label)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel spacing in mm, (x, y, z)."""
        return tuple(float(s) for s in self.image.GetSpacing())


# ----------------------------------------------------------------------------------------------
# Validation


def _check_number(name, value, low, high, integer=False):
    if value is None:
        return None
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
        raise ValueError(f"{name} must be {'an integer' if integer else 'a number'}, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must lie in [{low}, {high}], got {value!r}")
    return int(value) if integer else float(value)


def _validated(seed, size_xy, n_slices, slice_spacing, pixel_spacing, phase, tumour_diameter_mm,
               oblique) -> dict:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if phase is not None and phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    if oblique is not None and not isinstance(oblique, (bool, np.bool_)):
        raise ValueError(f"oblique must be True, False or None, got {oblique!r}")
    return {
        "size_xy": _check_number("size_xy", size_xy, 64, 1024, integer=True),
        "n_slices": _check_number("n_slices", n_slices, 8, 2000, integer=True),
        "slice_spacing": _check_number("slice_spacing", slice_spacing, 0.3, 10.0),
        "pixel_spacing": _check_number("pixel_spacing", pixel_spacing, 0.2, 2.0),
        "phase": phase,
        "tumour_diameter_mm": _check_number("tumour_diameter_mm", tumour_diameter_mm, 8.0, 150.0),
        "oblique": None if oblique is None else bool(oblique),
    }


# ----------------------------------------------------------------------------------------------
# The case: every random choice, drawn in a fixed order so that an override changes only itself.


def _draw_case(rng, o):
    case = {
        "phase": PHASES[int(rng.integers(len(PHASES)))],
        "size_xy": int(rng.integers(224, 385)),
        "pixel_spacing": float(rng.uniform(0.6, 1.0)),
        "slice_spacing": float(rng.uniform(1.0, 5.0)),
        "tumour_diameter_mm": float(math.exp(rng.uniform(math.log(15.0), math.log(80.0)))),
        "oblique": bool(rng.random() < 0.3),
    }
    given = {key: value for key, value in o.items() if value is not None}
    case.update(given)
    case["diameter_given"] = "tumour_diameter_mm" in given
    case["n_slices"] = o["n_slices"]
    case["u"] = {name: float(rng.random()) for name in PHASE_HU}
    return case


# ----------------------------------------------------------------------------------------------
# Public API


def make_phantom(seed: int, *, size_xy: int | None = None, n_slices: int | None = None,
                 slice_spacing: float | None = None, pixel_spacing: float | None = None,
                 phase: str | None = None, tumour_diameter_mm: float | None = None,
                 oblique: bool | None = None, low_density_parts: bool = False) -> Phantom:
    """Draws one synthetic abdominal CT with a gastric tumour.

    Everything not given is drawn from ``seed``; what is given replaces only its own draw, so the
    same seed in another phase has the same anatomy, noise and label.

    Args:
        seed: non-negative integer; training uses seeds below :data:`HELD_OUT_SEED_START`.
        size_xy: in-plane size in pixels (default: 224-384).
        n_slices: number of slices (default: the tumour plus 10-20 slices above and below).
        slice_spacing: mm between slices (default: 1-5).
        pixel_spacing: in-plane pixel size in mm (default: 0.6-1.0).
        phase: one of :data:`PHASES` (default: drawn).
        tumour_diameter_mm: the tumour's longest diameter (default: 15-80 mm, log-uniform).
        oblique: whether the direction matrix is other than identity (default: drawn, ~30%):
            in-plane axis flips (content flipped to match, so anatomy stays in place physically)
            or a small in-plane rotation of the direction cosines. The third axis stays the slice axis.
        low_density_parts: the tumour also gets large low-density parts reaching its outline (necrotic, cystic or
            myxoid; generator 'hypodense'), drawn from a stream of their own: the rest of the phantom is the seed's.

    Returns:
        The :class:`Phantom`.

    Raises:
        ValueError: an argument is out of range, or the tumour cannot fit in the requested volume.
    """
    o = _validated(seed, size_xy, n_slices, slice_spacing, pixel_spacing, phase, tumour_diameter_mm, oblique)
    if not isinstance(low_density_parts, (bool, np.bool_)):
        raise ValueError(f"low_density_parts must be True or False, got {low_density_parts!r}")
    seed = int(seed)
    rng = np.random.default_rng(seed)
    case = _draw_case(rng, o)
    px, dz, n_xy = case["pixel_spacing"], case["slice_spacing"], case["size_xy"]

    extent_xy = (n_xy - 1) * px
    max_diameter = extent_xy - 2.0 * (_EDGE_MARGIN_MM + ROUGH_MAX_MM)
    diameter = case["tumour_diameter_mm"]
    if diameter > max_diameter:
        if case["diameter_given"]:
            raise ValueError(
                f"a {diameter:.0f} mm tumour does not fit in a {extent_xy:.0f} mm field of view "
                f"(size_xy x pixel_spacing) with {_EDGE_MARGIN_MM:.0f} mm to spare: ask for a smaller tumour "
                f"or a larger size_xy or pixel_spacing")
        diameter = max_diameter

    body = draw_body(rng)
    tumour = draw_tumour(rng, diameter, dz)
    stomach = draw_stomach(rng, body, diameter)
    place_tumour(rng, tumour, stomach, body)

    # Slices: the tumour's centre on a slice, its extent plus margins.
    pts = tumour.surface() + tumour.centre
    pad = np.array([ROUGH_MAX_MM, ROUGH_MAX_MM, ROUGH_MAX_MM + LABEL_END_COVERAGE_SHIFT * dz])
    reach_lo, reach_hi = pts.min(axis=0) - pad, pts.max(axis=0) + pad
    below, above = int(math.ceil(-reach_lo[2] / dz)), int(math.ceil(reach_hi[2] / dz))
    margin_lo, margin_hi = int(rng.integers(10, 21)), int(rng.integers(10, 21))
    jitter = rng.random()
    n_z = case["n_slices"]
    if n_z is None:
        n_z, k_centre = below + above + 1 + margin_lo + margin_hi, margin_lo + below
    else:
        free = n_z - (below + above + 1) - 2 * _MIN_MARGIN_SLICES
        if free < 0:
            raise ValueError(
                f"the tumour spans {below + above + 1} slices of {dz:.2f} mm: n_slices={n_z} leaves no free "
                f"slice above and below it; ask for more slices, a larger slice_spacing or a smaller tumour")
        k_centre = _MIN_MARGIN_SLICES + below + int(jitter * (free + 1))
    # In-plane: the view is centred near the body axis, shifted as needed to hold the tumour.
    half = extent_xy / 2.0
    centre = []
    for axis, jitter_mm in ((0, rng.uniform(-25.0, 25.0)), (1, rng.uniform(-15.0, 25.0))):
        low = reach_hi[axis] + _EDGE_MARGIN_MM - half
        high = reach_lo[axis] - _EDGE_MARGIN_MM + half
        centre.append(float(np.clip(jitter_mm, low, high)))
    x = (centre[0] - half + px * np.arange(n_xy)).astype(np.float32)
    y = (centre[1] - half + px * np.arange(n_xy)).astype(np.float32)
    z = (dz * (np.arange(n_z) - k_centre)).astype(np.float32)

    cv = Canvas(x, y, z, edge_mm=px)
    paint_body(cv, rng, body)
    y_vb, r_vb = paint_spine(cv, rng, body)
    paint_organs(cv, rng, body, case, y_vb, r_vb)
    # Its own random stream: adding the fat plane left every other draw of a seed as it was.
    paint_fat_plane(cv, np.random.default_rng([seed, 1]), tumour, stomach, body)
    wall_hu = paint_stomach(cv, rng, stomach, case)
    label = paint_tumour(cv, rng, tumour, body, case, wall_hu, px, dz,
                         low_density_rng=np.random.default_rng([seed, 2]) if low_density_parts else None)
    vol, noise_std = noise_and_blur(cv, rng, px, dz)
    np.rint(vol, out=vol)
    image = np.clip(vol, _HU_MIN, _HU_MAX, out=vol).astype(np.int16)
    del vol, cv

    direction = np.eye(3)
    draw_flip, draw_angle = rng.random() < 0.5, rng.uniform(0.08, 0.35) * rng.choice([-1.0, 1.0])
    if case["oblique"]:
        if draw_flip:
            # The array is stored the other way round; flip the content so the anatomy stays put.
            direction = np.diag([-1.0, -1.0, 1.0])
            image, label = image[:, ::-1, ::-1], label[:, ::-1, ::-1]
        else:
            c, s = math.cos(draw_angle), math.sin(draw_angle)
            direction = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    spacing = np.array([px, px, dz])
    table = np.array([rng.uniform(-40.0, 40.0), rng.uniform(-60.0, 60.0), rng.uniform(-700.0, 100.0)])
    middle = table + np.array([centre[0], centre[1], 0.0])
    origin = middle - direction @ (spacing * (np.array([n_xy, n_xy, n_z]) - 1) / 2.0)
    origin = np.where(np.abs(origin) < 1.0, origin + 1.5, origin)

    label_slices = np.flatnonzero(label.reshape(n_z, -1).any(axis=1))
    if label_slices.size < 3 or label_slices[0] == 0 or label_slices[-1] == n_z - 1:
        raise RuntimeError(f"phantom {seed}: tumour on slices {label_slices.tolist()} of {n_z} (a bug)")

    images = []
    for array in (image, label):
        img = sitk.GetImageFromArray(np.ascontiguousarray(array))
        img.SetSpacing(tuple(float(s) for s in spacing))
        img.SetOrigin(tuple(float(v) for v in origin))
        img.SetDirection(tuple(float(v) for v in direction.ravel()))
        images.append(img)
    logger.debug("phantom %d: %s, %dx%dx%d, %.2fx%.2f mm, tumour %.0f mm on %d slices, noise %.0f HU",
                 seed, case["phase"], n_xy, n_xy, n_z, px, dz, diameter, label_slices.size, noise_std)
    return Phantom(image=images[0], label=images[1], seed=seed, phase=case["phase"])


def write_phantoms(out_dir, seeds, *, fmt: str = "nrrd", **overrides) -> list[tuple[Path, Path]]:
    """Writes <out_dir>/case_<seed>_image.<ext> and case_<seed>_label.<ext> (ext: nrrd or nii.gz); returns the pairs.

    All or nothing: every file is staged beside its destination and all are renamed into place together once the
    last one is written (``data.outputs.OutputBatch``), so a crash or SIGTERM leaves no half-written file and no
    incomplete set of pairs.

    Args:
        out_dir: folder, created if missing.
        seeds: the seeds to draw.
        fmt: ``"nrrd"`` or ``"nii.gz"``.
        **overrides: keyword arguments of :func:`make_phantom`, applied to every case.
    """
    from gastric_propagate.data.outputs import OutputBatch

    if fmt not in ("nrrd", "nii.gz"):
        raise ValueError(f"fmt must be 'nrrd' or 'nii.gz', got {fmt!r}")
    out = Path(out_dir)
    pairs = []
    with OutputBatch() as outputs:
        for seed in seeds:
            phantom = make_phantom(seed, **overrides)
            pairs.append((outputs.image(phantom.image, out / f"case_{seed}_image.{fmt}"),
                          outputs.image(phantom.label, out / f"case_{seed}_label.{fmt}")))
    logger.info("wrote %d phantoms to %s", len(pairs), out)
    return pairs


def make_phantoms_main(*, out: str, count: int, seed_start: int | None, fmt: str, overwrite: bool) -> int:
    """``gastric-propagate make-phantoms``: checks the folder and the files it would replace, writes ``count``
    pairs from ``seed_start`` (the held-out range when None) and says so; returns 0."""
    from gastric_propagate.data.output_checks import check_outputs, check_writable_folder

    start = HELD_OUT_SEED_START if seed_start is None else seed_start
    check_writable_folder(out, f"the output folder {out}")
    seeds = range(start, start + count)
    check_outputs({f"phantom {kind} {seed}": Path(out) / f"case_{seed}_{kind}.{fmt}"
                   for seed in seeds for kind in ("image", "label")}, overwrite=overwrite)
    pairs = write_phantoms(out, seeds, fmt=fmt)
    print(f"wrote {len(pairs)} image/label pairs to {out}")
    return 0
