"""Synthetic abdominal CT volumes with a gastric tumour: training and test material for the networks.

A phantom is drawn from ``np.random.default_rng(seed)`` (and a side stream of the same seed for the
perigastric fat) alone, so a seed names one volume for good.
The anatomy is laid out in a patient frame in mm (x to the patient's left, y posterior, z cranial, as
in LPS; the body axis passes through x = y = 0 and the tumour's centre lies at z = 0), painted layer
by layer with soft edges, then noised and blurred. The volume is a crop of that patient around the
tumour. Seeds from :data:`HELD_OUT_SEED_START` up are kept for evaluation and benchmarks.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial import ConvexHull
from scipy.spatial.distance import pdist

logger = logging.getLogger(__name__)

HELD_OUT_SEED_START = 100_000
PHASES = ("arterial", "venous", "delayed")

_AIR = -1000.0
_HU_MIN, _HU_MAX = -1024, 3071
_EDGE_MARGIN_MM = 10.0  # free space between the tumour and the in-plane edges of the volume
_MIN_MARGIN_SLICES = 1  # free slices above and below the tumour when n_slices is imposed
_ROUGH_MAX_MM = 3.0  # how far the rough surface may move the tumour's boundary
_LABEL_END_COVERAGE_SHIFT = 0.25  # labelled down to 25 % slice coverage along z (0.5 - 0.25)

# (low, high) HU by phase. One uniform draw per structure and case places it within the range, so the
# same seed seen in another phase keeps its anatomy, its noise and its relative enhancement.
_PHASE_HU = {
    "aorta": {"arterial": (250, 350), "venous": (150, 190), "delayed": (100, 130)},
    "vein": {"arterial": (60, 90), "venous": (130, 170), "delayed": (100, 125)},
    "artery": {"arterial": (180, 280), "venous": (130, 170), "delayed": (100, 125)},
    "liver": {"arterial": (65, 80), "venous": (100, 125), "delayed": (85, 100)},
    "spleen": {"arterial": (110, 140), "venous": (110, 130), "delayed": (90, 105)},
    "cortex": {"arterial": (150, 200), "venous": (150, 180), "delayed": (120, 150)},
    "medulla": {"arterial": (60, 90), "venous": (140, 170), "delayed": (150, 200)},
    "wall": {"arterial": (95, 125), "venous": (85, 105), "delayed": (70, 85)},
    "mucosa_extra": {"arterial": (15, 35), "venous": (5, 15), "delayed": (0, 5)},
    "bowel": {"arterial": (60, 80), "venous": (70, 90), "delayed": (60, 75)},
    # Tumour minus gastric wall: darker than the hyper-enhancing wall early, brighter late
    # (delayed enhancement of the fibrous stroma of gastric carcinoma).
    "tumour_delta": {"arterial": (-40, -15), "venous": (-30, -10), "delayed": (10, 30)},
}


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
# Geometry primitives. Distances are signed, in mm, positive inside, and only accurate near the
# boundary (first order: (1 - f) / |grad f|), which is all the soft edges need.


def _ellipse_distance(u, v, a, b):
    uu, vv = u * u / (a * a), v * v / (b * b)  # 2D when the ellipse is not rotated
    grad = np.sqrt(uu / (a * a) + vv / (b * b))
    grad *= 2.0
    grad += 1e-6
    f = uu + vv
    np.subtract(1.0, f, out=f)
    f /= grad
    return f


def _superellipse_distance(x, y, a, b_ant, b_post, p):
    """Body-like cross-section: a superellipse, flatter behind (b_post) than in front (b_ant).

    x: (1, 1, nx), y: (1, ny, 1), the semi-axes (nz, 1, 1). The powers are taken on the 2D
    (z, x) and (z, y) planes, so only the sums touch the full 3D grid.
    """
    b = np.where(y < 0, b_ant, b_post)
    ax, by = np.abs(x) / a, np.abs(y) / b
    gx, gy = p * ax ** (p - 1) / a, p * by ** (p - 1) / b
    # In place: on a full 512 x 512 x 100 grid every temporary costs ~100 MB and ~50 ms.
    d = np.add(ax**p, by**p)
    np.subtract(1.0, d, out=d)
    grad = np.add(gx * gx, gy * gy)
    np.sqrt(grad, out=grad)
    grad += 1e-6
    d /= grad
    return d


class _Canvas:
    """The volume being painted and the patient-frame coordinates (mm) of its voxel centres."""

    def __init__(self, x, y, z, edge_mm):
        self.x, self.y, self.z = x, y, z
        self.vol = np.full((z.size, y.size, x.size), _AIR, dtype=np.float32)
        self.edge = float(edge_mm)

    def soft(self, d):
        """Partial-volume membership in [0, 1] from a signed distance (in place)."""
        d *= 1.0 / self.edge
        d += 0.5
        return np.clip(d, 0.0, 1.0, out=d)

    def paint(self, sl, m, hu):
        """Blends ``hu`` (a scalar, or an array over the box or over the whole grid) in with weight ``m``."""
        v = self.vol[sl]
        if isinstance(hu, np.ndarray) and hu.ndim == 3:
            # Per-slice or per-row fields span the whole grid along their non-singleton axes.
            hu = hu[tuple(s if n == full and n != box else slice(None)
                          for s, n, full, box in zip(sl, hu.shape, self.vol.shape, v.shape))]
        t = np.subtract(hu, v, dtype=np.float32)
        t *= m
        v += t

    def box(self, x_lo, x_hi, y_lo, y_hi, k0=0, k1=None):
        i0, i1 = np.searchsorted(self.x, [x_lo, x_hi])
        j0, j1 = np.searchsorted(self.y, [y_lo, y_hi])
        k1 = self.z.size if k1 is None else k1
        if i1 <= i0 or j1 <= j0 or k1 <= k0:
            return None
        return (slice(k0, k1), slice(j0, j1), slice(i0, i1))

    def tube(self, cx, cy, a, b, theta=0.0, scale=None):
        """Signed in-plane distance to an ellipse that moves and changes along z.

        Args:
            cx, cy, a, b: centre and semi-axes (mm), scalars or per-slice arrays.
            theta: rotation of the ellipse (radians), scalar.
            scale: per-slice factor on the semi-axes; slices where it is 0 are empty.

        Returns:
            ``(slices, distance)`` over the tube's bounding box, or None when it misses the volume.
        """
        nz = self.z.size
        cx, cy, a, b = (np.broadcast_to(np.asarray(v, np.float32), (nz,)) for v in (cx, cy, a, b))
        if scale is not None:
            a, b = a * scale, b * scale
        alive = np.flatnonzero((a > 0.2) & (b > 0.2))
        if alive.size == 0:
            return None
        k0, k1 = alive[0], alive[-1] + 1
        reach = np.maximum(a, b)[k0:k1] + 3.0 * self.edge
        sl = self.box((cx[k0:k1] - reach).min(), (cx[k0:k1] + reach).max(),
                      (cy[k0:k1] - reach).min(), (cy[k0:k1] + reach).max(), k0, k1)
        if sl is None:
            return None
        dx = self.x[sl[2]][None, None, :] - cx[k0:k1, None, None]
        dy = self.y[sl[1]][None, :, None] - cy[k0:k1, None, None]
        if theta:
            c, s = math.cos(theta), math.sin(theta)
            dx, dy = c * dx + s * dy, c * dy - s * dx
        aa = np.maximum(a[k0:k1], 0.2)[:, None, None]
        bb = np.maximum(b[k0:k1], 0.2)[:, None, None]
        d = _ellipse_distance(dx, dy, aa, bb).astype(np.float32, copy=False)
        d[((a[k0:k1] <= 0.2) | (b[k0:k1] <= 0.2))] = -1e3
        return sl, d

    def paint_tube(self, hu, *args, clip=None, **kwargs):
        """Paints a tube (see :meth:`tube`); ``clip(slices)`` may return a membership to intersect."""
        found = self.tube(*args, **kwargs)
        if found is None:
            return
        sl, d = found
        m = self.soft(d)
        if clip is not None:
            np.minimum(m, clip(sl), out=m)
        self.paint(sl, m, hu)


def _ellipsoid_scale(z, zc, c):
    """Per-slice semi-axis factor that turns a tube into an ellipsoid of half-length c along z."""
    return np.sqrt(np.clip(1.0 - ((z - zc) / c) ** 2, 0.0, None)).astype(np.float32)


def _fibonacci_sphere(n):
    i = np.arange(n) + 0.5
    polar = np.arccos(1.0 - 2.0 * i / n)
    azimuth = math.pi * (1.0 + 5.0**0.5) * i
    return np.stack([np.cos(azimuth) * np.sin(polar), np.sin(azimuth) * np.sin(polar), np.cos(polar)], -1)


def _rotation(yaw, tilt):
    cz, sz, cx, sx = math.cos(yaw), math.sin(yaw), math.cos(tilt), math.sin(tilt)
    rz = np.array([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]])
    return rz @ rx


# ----------------------------------------------------------------------------------------------
# The tumour: a main ellipsoid and a few overlapping satellite lobes (their union has notches between
# the lobes, so it is clearly not an ellipsoid), with a rough surface added when it is painted.


@dataclass
class _Tumour:
    centre: np.ndarray  # (3,) patient mm: the main lobe's centre
    offsets: np.ndarray  # (k, 3) lobe centres relative to ``centre``; the main lobe's is 0
    rots: np.ndarray  # (k, 3, 3), columns: each lobe's axes in the patient frame
    axes: np.ndarray  # (k, 3) semi-axes, mm

    def surface(self, n=500):
        """Points on the lobes' surfaces, relative to the centre, (k * n, 3) mm (some lie inside others)."""
        u = _fibonacci_sphere(n)
        return np.concatenate([o + (u * a) @ r.T for o, r, a in zip(self.offsets, self.rots, self.axes)])

    def diameter(self):
        """Longest diameter (mm): the largest distance between two surface points."""
        pts = self.surface()
        return float(pdist(pts[ConvexHull(pts).vertices]).max())

    def z_reach(self):
        """How far the main lobe reaches up and down the z axis through the centre (mm)."""
        return float(1.0 / np.sqrt(((self.rots[0][2] / self.axes[0]) ** 2).sum()))

    def distance(self, p):
        """Signed distance (mm, > 0 inside, first order) to the union of the lobes; ``p`` is (..., 3)."""
        best = None
        for o, r, a in zip(self.offsets, self.rots, self.axes):
            q = (p - o.astype(np.float32)) @ r.astype(np.float32)
            q /= a.astype(np.float32)
            f = (q * q).sum(-1)
            q /= a.astype(np.float32)
            grad = np.sqrt((q * q).sum(-1))
            d = (1.0 - f) / (2.0 * grad + 1e-6)
            best = d if best is None else np.maximum(best, d, out=best)
        return best


def _draw_tumour(rng, diameter, slice_spacing):
    # Often longer along the body axis than across it, as real masses are (soft-tissue sarcomas run about
    # 1.7 painted diameters); the requested diameter is the longest, so a long tumour is narrower in-plane.
    main = np.array([1.0, rng.uniform(0.6, 1.0), rng.uniform(0.5, 1.0) * math.exp(rng.uniform(0.0, 0.9))])
    k = 1 + int(rng.integers(2, 5))
    offsets, rots, axes = [np.zeros(3)], [_rotation(rng.uniform(0, math.pi), rng.uniform(-0.3, 0.3))], [main]
    for _ in range(k - 1):
        direction = rng.normal(size=3) * np.array([1.0, 1.0, 0.6])
        direction /= np.linalg.norm(direction)
        size = main.mean() * rng.uniform(0.4, 0.65)
        # Centred near the main lobe's surface: it bulges out, still attached.
        r_main = 1.0 / np.sqrt((((rots[0].T @ direction) / main) ** 2).sum())
        offsets.append(direction * r_main * rng.uniform(0.8, 1.05))
        rots.append(_rotation(rng.uniform(0, math.pi), rng.uniform(-0.5, 0.5)))
        axes.append(size * np.array([1.0, rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0)]))
    tumour = _Tumour(np.zeros(3), np.array(offsets), np.array(rots), np.array(axes))
    # The centre sits on a slice centre; reaching more than a slice up and down then gives at least
    # three slices. Otherwise stretch the main lobe along z, the requested diameter giving way if it must.
    need = 1.2 * slice_spacing + 0.5
    for _ in range(8):
        f = diameter / tumour.diameter()
        tumour.offsets *= f
        tumour.axes *= f
        if tumour.z_reach() >= need:
            break
        tumour.axes[0, 2] *= 1.05 * need / tumour.z_reach()
    else:
        tumour.axes[0, 2] *= max(1.0, 1.05 * need / tumour.z_reach())
    return tumour


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
    case["u"] = {name: float(rng.random()) for name in _PHASE_HU}
    return case


def _hu(case, name):
    low, high = _PHASE_HU[name][case["phase"]]
    return low + case["u"][name] * (high - low)


@dataclass
class _Body:
    a: float  # left-right semi-axis, mm
    b_ant: float
    b_post: float
    p: float  # superellipse power
    fat: float  # subcutaneous fat thickness
    muscle: float  # abdominal wall thickness
    wobble: float
    wobble_len: float
    wobble_phase: float

    def axes(self, z):
        """Per-slice semi-axes (nz, 1, 1) of the skin contour: left-right, front, back."""
        f = (1.0 + self.wobble * np.sin(2 * np.pi * z / self.wobble_len + self.wobble_phase)).astype(np.float32)
        f = f.reshape(-1, 1, 1)
        return self.a * f, self.b_ant * f, self.b_post * f

    @property
    def cavity_inset(self):
        return self.fat + self.muscle


def _draw_body(rng):
    a = rng.uniform(135.0, 175.0)
    return _Body(a=a, b_ant=a * rng.uniform(0.62, 0.75), b_post=a * rng.uniform(0.55, 0.68),
                 p=rng.uniform(2.1, 2.6), fat=rng.uniform(8.0, 30.0), muscle=rng.uniform(8.0, 14.0),
                 wobble=rng.uniform(0.0, 0.05), wobble_len=rng.uniform(250.0, 500.0),
                 wobble_phase=rng.uniform(0, 2 * np.pi))


@dataclass
class _Stomach:
    x0: float
    y0: float
    kx: float
    ky: float
    sway: float
    sway_len: float
    sway_phase: float
    a: float
    b: float
    theta: float
    wall: float

    def centre(self, z):
        s = self.sway * np.sin(2 * np.pi * z / self.sway_len + self.sway_phase)
        return self.x0 + self.kx * z + s, self.y0 + self.ky * z + 0.5 * s

    def axes(self, z):
        f = 1.0 + 0.12 * np.sin(2 * np.pi * z / self.sway_len + 1.3 * self.sway_phase)
        return self.a * f, self.b * f


def _draw_stomach(rng, body, diameter):
    ac, bc = body.a - body.cavity_inset, body.b_ant - body.cavity_inset
    a = min(max(rng.uniform(30.0, 55.0), 0.35 * diameter), 0.4 * ac)
    b = a * rng.uniform(0.6, 0.95)
    # Left upper quadrant, in front; kept off the abdominal wall.
    x0 = min(ac * rng.uniform(0.15, 0.4), ac - a - 25.0)
    y0 = max(-bc * rng.uniform(0.05, 0.35), -bc + a + 25.0)
    return _Stomach(x0=x0, y0=y0, kx=rng.uniform(-0.25, 0.1), ky=rng.uniform(-0.15, 0.15),
                    sway=rng.uniform(0.0, 10.0), sway_len=rng.uniform(120.0, 300.0),
                    sway_phase=rng.uniform(0, 2 * np.pi), a=a, b=b, theta=rng.uniform(-0.7, 0.7),
                    wall=rng.uniform(3.0, 7.0))


def _place_tumour(rng, tumour, stomach, body):
    """Puts the tumour's centre near a random point of the stomach wall on slice z = 0."""
    (cx, cy), (a, b) = stomach.centre(0.0), stomach.axes(0.0)
    phi = rng.uniform(0, 2 * np.pi)
    c, s = math.cos(stomach.theta), math.sin(stomach.theta)
    ex, ey = a * math.cos(phi), b * math.sin(phi)  # wall point in the stomach's own frame
    nx, ny = ex / a**2, ey / b**2  # outward normal there
    norm = math.hypot(nx, ny)
    nx, ny = (c * nx - s * ny) / norm, (s * nx + c * ny) / norm
    wx, wy = cx + c * ex - s * ey, cy + s * ex + c * ey
    r = float(tumour.axes[0, :2].mean())
    offset = rng.uniform(-0.5, 0.4) * r  # < 0: polypoid, into the lumen; > 0: exophytic
    # An exophytic mass with no room outside, or heading back towards the spine, grows into the lumen.
    ac = body.a - body.cavity_inset
    bc = (body.b_ant if wy < 0 else body.b_post) - body.cavity_inset
    if ny > 0.3 or (abs(wx + offset * nx) + r) / ac > 0.95 or (abs(wy + offset * ny) + r) / bc > 0.95:
        offset = -abs(offset)
    tumour.centre = np.array([wx + offset * nx, wy + offset * ny, 0.0])


# ----------------------------------------------------------------------------------------------
# Painting


def _body_distance(cv, body, sl):
    """Signed distance to the skin on a box; the inner contours are its level sets (parallel curves)."""
    d = _superellipse_distance(cv.x[sl[2]][None, None, :], cv.y[sl[1]][None, :, None], *body.axes(cv.z[sl[0]]),
                               body.p)
    return d.astype(np.float32, copy=False)


def _paint_body(cv, rng, body):
    """Skin and subcutaneous fat, the abdominal wall muscles, the fat of the cavity, the table."""
    fat, muscle, cavity = rng.uniform(-115.0, -90.0), rng.uniform(45.0, 60.0), rng.uniform(-105.0, -80.0)
    # The three nested soft layers make HU a piecewise-linear function of the distance to the skin:
    # one interpolation per slab instead of painting the whole grid three times.
    h = cv.edge / 2.0
    knots = [-h, h, body.fat - h, body.fat + h, body.cavity_inset - h, body.cavity_inset + h]
    values = [_AIR, fat, fat, muscle, muscle, cavity]
    for k in range(0, cv.z.size, 16):
        slab = np.s_[k:k + 16, :, :]
        cv.vol[slab] = np.interp(_body_distance(cv, body, slab), knots, values)
    y_table = body.b_post * (1.0 + body.wobble) + rng.uniform(5.0, 25.0)
    thick, half_width, hu = rng.uniform(6.0, 12.0), rng.uniform(190.0, 230.0), rng.uniform(-400.0, -200.0)
    sl = cv.box(-half_width, half_width, y_table, y_table + thick)
    if sl is not None:
        cv.paint(sl, np.float32(1.0), hu)


def _cavity_membership(cv, body, shrink=0.0):
    """``clip`` callback: soft membership of the abdominal cavity (moved in by ``shrink``) on a box."""

    def clip(sl):
        d = _body_distance(cv, body, sl)
        d -= body.cavity_inset + shrink
        return cv.soft(d)

    return clip


def _paint_spine(cv, rng, body):
    """Vertebrae with discs, spinal canal, paraspinal and psoas muscles."""
    z = cv.z
    r_vb = rng.uniform(16.0, 22.0)
    y_vb = body.b_post - body.fat - rng.uniform(55.0, 70.0)
    muscle = rng.uniform(45.0, 60.0)
    side = rng.uniform(28.0, 38.0)
    y_para, r_para = y_vb + r_vb + rng.uniform(22.0, 32.0), rng.uniform(22.0, 30.0)
    for sgn in (-1.0, 1.0):
        cv.paint_tube(muscle, sgn * side, y_para, r_para * 1.1, r_para)
    z_psoas = rng.uniform(-50.0, 50.0)
    r_psoas = np.clip(8.0 + 0.12 * (z_psoas - z), 4.0, 22.0)
    for sgn in (-1.0, 1.0):
        cv.paint_tube(muscle, sgn * (r_vb + 12.0 + 0.5 * r_psoas), y_vb - 2.0, r_psoas, r_psoas * 0.85)
    # Vertebral bodies of ~30 mm separated by ~8 mm discs; posterior elements on part of each level.
    period, disc = rng.uniform(30.0, 36.0), rng.uniform(6.0, 9.0)
    level = np.mod(z - rng.uniform(0, period), period)
    is_disc = level < disc
    cortex, cancellous = rng.uniform(600.0, 950.0), rng.uniform(180.0, 320.0)
    hu_body = np.where(is_disc, rng.uniform(70.0, 100.0), cortex).astype(np.float32)[:, None, None]
    hu_core = np.where(is_disc, rng.uniform(70.0, 100.0), cancellous).astype(np.float32)[:, None, None]
    posterior = ((level > disc + 4.0) & (level < disc + 22.0)).astype(np.float32)
    cv.paint_tube(hu_body, 0.0, y_vb, r_vb * 1.12, r_vb)
    cv.paint_tube(hu_core, 0.0, y_vb, r_vb * 1.12 - 2.0, r_vb - 2.0)
    y_canal, r_canal = y_vb + r_vb + 8.0, rng.uniform(6.0, 8.0)
    cv.paint_tube(rng.uniform(500.0, 800.0), 0.0, y_canal + 8.0, 15.0, 9.0, scale=posterior)
    cv.paint_tube(rng.uniform(500.0, 800.0), 0.0, y_canal + 25.0, 4.0, 14.0, scale=posterior)
    for sgn in (-1.0, 1.0):
        cv.paint_tube(rng.uniform(500.0, 800.0), sgn * (r_vb + 8.0), y_canal, 14.0, 4.5, scale=posterior)
    cv.paint_tube(rng.uniform(5.0, 20.0), 0.0, y_canal, r_canal, r_canal * 0.9)
    return y_vb, r_vb


def _paint_organs(cv, rng, body, case, y_vb, r_vb):
    """Aorta, IVC, kidneys, bowel loops, mesenteric vessels, liver and spleen."""
    z = cv.z
    ac = body.a - body.cavity_inset
    ba, bp = body.b_ant - body.cavity_inset, body.b_post - body.cavity_inset
    in_cavity = _cavity_membership(cv, body)
    r_ao = rng.uniform(9.0, 13.0)
    cv.paint_tube(_hu(case, "aorta"), rng.uniform(6.0, 18.0) + 0.03 * z, y_vb - r_vb - r_ao - rng.uniform(1.0, 4.0),
                  r_ao, r_ao)
    cv.paint_tube(_hu(case, "vein"), -rng.uniform(20.0, 30.0), y_vb - r_vb - rng.uniform(0.0, 8.0),
                  rng.uniform(11.0, 16.0), rng.uniform(8.0, 12.0))
    zk = rng.uniform(-130.0, -30.0)
    for sgn in (-1.0, 1.0):
        zc, c = zk + (12.0 if sgn > 0 else 0.0) + rng.uniform(-5.0, 5.0), rng.uniform(45.0, 60.0)
        a, b = rng.uniform(22.0, 30.0), rng.uniform(28.0, 36.0)
        xc, yc, theta = sgn * rng.uniform(55.0, 75.0), y_vb + rng.uniform(-5.0, 10.0), sgn * rng.uniform(0.3, 0.7)
        scale = _ellipsoid_scale(z, zc, c)
        cv.paint_tube(_hu(case, "cortex"), xc, yc, a, b, theta, scale=scale)
        cv.paint_tube(_hu(case, "medulla"), xc, yc, 0.55 * a, 0.6 * b, theta, scale=scale)
    # Bowel loops: the look-alikes, some collapsed into soft-tissue blobs next to the stomach.
    for _ in range(int(rng.integers(4, 11))):
        a = rng.uniform(8.0, 18.0)
        b = a * rng.uniform(0.6, 1.0)
        x0 = rng.uniform(-0.6, 0.7) * ac
        x0 = float(np.clip(x0, -(ac - a - 15.0), ac - a - 15.0))
        y0 = float(np.clip(rng.uniform(-0.85, 0.2) * ba, -(ba - a - 15.0), 0.2 * bp))
        zc, c = rng.uniform(z[0], z[-1]), rng.uniform(20.0, 80.0)
        kx, ky, theta = rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3), rng.uniform(0, np.pi)
        cx, cy, scale = x0 + kx * (z - zc), y0 + ky * (z - zc), _ellipsoid_scale(z, zc, c)
        kind = rng.choice(["fluid", "gas", "level", "collapsed"], p=[0.35, 0.2, 0.2, 0.25])
        wall_hu = _hu(case, "bowel") + rng.uniform(-10.0, 10.0)
        cv.paint_tube(wall_hu, cx, cy, a, b, theta, scale=scale, clip=in_cavity)
        wall = rng.uniform(1.5, 3.0)
        content = {"fluid": rng.uniform(0.0, 30.0), "gas": _AIR, "collapsed": wall_hu - rng.uniform(0.0, 20.0)}
        hu = content.get(str(kind))
        if hu is None:  # gas above a fluid level
            level = (cy + rng.uniform(-0.5, 0.3) * b)[:, None, None]
            hu = np.where(cv.y[None, :, None] < level, np.float32(_AIR), np.float32(rng.uniform(0.0, 30.0)))
        cv.paint_tube(hu, cx, cy, a - wall, b - wall, theta, scale=scale, clip=in_cavity)
    for _ in range(int(rng.integers(4, 11))):
        r = rng.uniform(2.0, 5.0)
        cv.paint_tube(_hu(case, "artery" if rng.random() < 0.5 else "vein"),
                      rng.uniform(-0.4, 0.5) * ac + rng.uniform(-0.2, 0.2) * z,
                      rng.uniform(-0.6, 0.1) * ba + rng.uniform(-0.2, 0.2) * z, r, r)
    # Liver on the right, tapering to its tip caudally; a few vessels inside.
    z_tip, ramp = rng.uniform(-150.0, -40.0), rng.uniform(40.0, 80.0)
    liver_scale = np.sqrt(np.clip((z - z_tip) / ramp, 0.0, 1.0)).astype(np.float32)
    lx, ly = -ac * rng.uniform(0.35, 0.5), bp * rng.uniform(-0.15, 0.1)
    la, lb, lt = ac * rng.uniform(0.5, 0.62), 0.5 * (ba + bp) * rng.uniform(0.75, 0.95), rng.uniform(-0.35, 0.35)
    liver_hu = _hu(case, "liver")
    cv.paint_tube(liver_hu, lx, ly, la, lb, lt, scale=liver_scale, clip=in_cavity)
    for _ in range(int(rng.integers(2, 6))):
        r = rng.uniform(2.5, 6.0)
        cv.paint_tube(_hu(case, "vein"), lx + rng.uniform(-0.4, 0.4) * la, ly + rng.uniform(-0.4, 0.4) * lb, r, r,
                      scale=(liver_scale > 0.6).astype(np.float32))
    cv.paint_tube(_hu(case, "spleen"), ac * rng.uniform(0.55, 0.72), bp * rng.uniform(0.3, 0.55),
                  rng.uniform(15.0, 25.0), rng.uniform(40.0, 60.0), rng.uniform(0.5, 1.0),
                  scale=_ellipsoid_scale(z, rng.uniform(-20.0, 60.0), rng.uniform(45.0, 65.0)), clip=in_cavity)


def _paint_stomach(cv, rng, stomach, case):
    """Enhancing wall with a brighter mucosa, gas over fluid in the lumen."""
    cx, cy = stomach.centre(cv.z)
    a, b = stomach.axes(cv.z)
    wall_hu = _hu(case, "wall")
    cv.paint_tube(wall_hu, cx, cy, a, b, stomach.theta)
    inner = stomach.wall
    cv.paint_tube(wall_hu + _hu(case, "mucosa_extra"), cx, cy, a - inner + 1.5, b - inner + 1.5, stomach.theta)
    # Supine patient: gas rises to the front (small y); the level is horizontal in the image.
    level = (cy + rng.uniform(-1.2, 0.6) * b).astype(np.float32)[:, None, None]
    fluid = np.float32(rng.uniform(0.0, 20.0))
    gas = np.clip(0.5 + (level - cv.y[None, :, None]) / cv.edge, 0.0, 1.0)
    cv.paint_tube(fluid + gas * (_AIR - fluid), cx, cy, a - inner, b - inner, stomach.theta)
    return wall_hu


def _smooth_field(rng, shape, sigma_mm, px, dz):
    """Gaussian random field with unit standard deviation and a correlation length of ``sigma_mm``."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), (sigma_mm / dz, sigma_mm / px,
                                                                                   sigma_mm / px), mode="nearest")
    field /= max(float(field.std()), 1e-6)
    return field


def _tumour_box(cv, tumour, pad):
    """The grid box around the tumour grown by ``pad`` mm, and its voxels' positions relative to the centre."""
    pts = tumour.surface() + tumour.centre
    k0, k1 = np.searchsorted(cv.z, [pts[:, 2].min() - pad, pts[:, 2].max() + pad])
    sl = cv.box(pts[:, 0].min() - pad, pts[:, 0].max() + pad, pts[:, 1].min() - pad, pts[:, 1].max() + pad, k0, k1)
    p = np.stack(np.broadcast_arrays(cv.x[sl[2]][None, None, :] - tumour.centre[0],
                                     cv.y[sl[1]][None, :, None] - tumour.centre[1],
                                     cv.z[sl[0]][:, None, None] - tumour.centre[2]), -1)
    return sl, p


def _paint_fat_plane(cv, rng, tumour, stomach, body):
    """Perigastric fat around the stomach and the tumour, painted before both.

    The stomach and the tumour are painted over it, so the tumour still grows from the gastric wall, but
    a plane of fat sets it apart from the liver, spleen and bowel it would otherwise touch at equal HU,
    as on a real CT. Beyond the tumour's ends the wall goes on: telling tumour from wall stays the task.
    """
    fat_hu = rng.uniform(-110.0, -80.0)
    plane = _ROUGH_MAX_MM + rng.uniform(3.0, 8.0)
    in_cavity = _cavity_membership(cv, body, shrink=2.0)
    cx, cy = stomach.centre(cv.z)
    a, b = stomach.axes(cv.z)
    cv.paint_tube(fat_hu, cx, cy, a + plane, b + plane, stomach.theta, clip=in_cavity)
    sl, p = _tumour_box(cv, tumour, plane + 2.0 * cv.edge)
    m = cv.soft(tumour.distance(p) + plane)
    np.minimum(m, in_cavity(sl), out=m)
    cv.paint(sl, m, fat_hu)


def _paint_tumour(cv, rng, tumour, body, case, wall_hu, px, dz):
    """Paints the tumour (heterogeneous, soft-edged) last and returns its label on the whole grid."""
    sl, p = _tumour_box(cv, tumour, _ROUGH_MAX_MM + 2.0 * max(px, dz))
    r = np.linalg.norm(p, axis=-1)
    d = tumour.distance(p)
    # A rough surface, bounded so that the mass stays within the extent the volume was laid out for.
    rough = np.clip(_smooth_field(rng, d.shape, 3.0, px, dz), -2.0, 2.0)
    d += rough * (_ROUGH_MAX_MM / 2.0 * rng.uniform(0.5, 1.0))
    # Partial volume: the edge spreads over a pixel in-plane and over a slice where the surface faces z.
    cos_z = p[..., 2] / np.maximum(r, 1e-6)
    width = np.sqrt(px * px * (1.0 - cos_z**2) + dz * dz * cos_z**2)
    m = np.clip(0.5 + d / width, 0.0, 1.0).astype(np.float32)
    inside_cavity = _cavity_membership(cv, body, shrink=2.0)(sl)
    np.minimum(m, inside_cavity, out=m)
    # Heterogeneity: smooth texture, and a darker necrotic core in some of the larger masses.
    texture = _smooth_field(rng, m.shape, 2.5, px, dz) * rng.uniform(5.0, 14.0)
    necrosis = rng.uniform(20.0, 50.0) if (tumour.axes[0].max() > 20.0 and rng.random() < 0.5) else 0.0
    hu = wall_hu + _hu(case, "tumour_delta") + texture
    hu -= necrosis * np.clip((0.45 - r / tumour.axes[0].min()) / 0.15, 0.0, 1.0)
    cv.paint(sl, m, hu)
    label = np.zeros(cv.vol.shape, dtype=np.uint8)
    # In-plane the label follows the surface; a slice the surface crosses along z is labelled where the tumour
    # fills more than a quarter of its thickness, as annotators outline a partial-volume end slice.
    label[sl] = (d >= -_LABEL_END_COVERAGE_SHIFT * dz * cos_z**2) & (inside_cavity >= 0.5)
    return label


def _noise_and_blur(cv, rng, px, dz):
    """Gaussian noise, then a light blur that also correlates it (scaled so the std comes out as drawn)."""
    std = rng.uniform(10.0, 25.0)
    sigma_z, sigma_xy = rng.uniform(0.3, 0.5), rng.uniform(0.5, 0.8)
    sigma = (sigma_z, sigma_xy, sigma_xy)

    truncate = 3.0

    def kernel_norm(s):  # L2 norm of scipy's sampled Gaussian: the factor the blur keeps of white noise
        x = np.arange(-int(truncate * s + 0.5), int(truncate * s + 0.5) + 1)
        k = np.exp(-0.5 * (x / s) ** 2)
        return float(np.sqrt(((k / k.sum()) ** 2).sum()))

    gain = np.prod([kernel_norm(s) for s in sigma])
    noise = rng.standard_normal(cv.vol.shape, dtype=np.float32)
    noise *= std / gain
    cv.vol += noise
    del noise
    return ndimage.gaussian_filter(cv.vol, sigma, output=np.float32, truncate=truncate), std


# ----------------------------------------------------------------------------------------------
# Public API


def make_phantom(seed: int, *, size_xy: int | None = None, n_slices: int | None = None,
                 slice_spacing: float | None = None, pixel_spacing: float | None = None,
                 phase: str | None = None, tumour_diameter_mm: float | None = None,
                 oblique: bool | None = None) -> Phantom:
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

    Returns:
        The :class:`Phantom`.

    Raises:
        ValueError: an argument is out of range, or the tumour cannot fit in the requested volume.
    """
    o = _validated(seed, size_xy, n_slices, slice_spacing, pixel_spacing, phase, tumour_diameter_mm, oblique)
    seed = int(seed)
    rng = np.random.default_rng(seed)
    case = _draw_case(rng, o)
    px, dz, n_xy = case["pixel_spacing"], case["slice_spacing"], case["size_xy"]

    extent_xy = (n_xy - 1) * px
    max_diameter = extent_xy - 2.0 * (_EDGE_MARGIN_MM + _ROUGH_MAX_MM)
    diameter = case["tumour_diameter_mm"]
    if diameter > max_diameter:
        if case["diameter_given"]:
            raise ValueError(
                f"a {diameter:.0f} mm tumour does not fit in a {extent_xy:.0f} mm field of view "
                f"(size_xy x pixel_spacing) with {_EDGE_MARGIN_MM:.0f} mm to spare: ask for a smaller tumour "
                f"or a larger size_xy or pixel_spacing")
        diameter = max_diameter

    body = _draw_body(rng)
    tumour = _draw_tumour(rng, diameter, dz)
    stomach = _draw_stomach(rng, body, diameter)
    _place_tumour(rng, tumour, stomach, body)

    # Slices: the tumour's centre on a slice, its extent plus margins.
    pts = tumour.surface() + tumour.centre
    pad = np.array([_ROUGH_MAX_MM, _ROUGH_MAX_MM, _ROUGH_MAX_MM + _LABEL_END_COVERAGE_SHIFT * dz])
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

    cv = _Canvas(x, y, z, edge_mm=px)
    _paint_body(cv, rng, body)
    y_vb, r_vb = _paint_spine(cv, rng, body)
    _paint_organs(cv, rng, body, case, y_vb, r_vb)
    # Its own random stream: adding the fat plane left every other draw of a seed as it was.
    _paint_fat_plane(cv, np.random.default_rng([seed, 1]), tumour, stomach, body)
    wall_hu = _paint_stomach(cv, rng, stomach, case)
    label = _paint_tumour(cv, rng, tumour, body, case, wall_hu, px, dz)
    vol, noise_std = _noise_and_blur(cv, rng, px, dz)
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
    last one is written (``data.io.OutputBatch``), so a crash or SIGTERM leaves no half-written file and no
    incomplete set of pairs.

    Args:
        out_dir: folder, created if missing.
        seeds: the seeds to draw.
        fmt: ``"nrrd"`` or ``"nii.gz"``.
        **overrides: keyword arguments of :func:`make_phantom`, applied to every case.
    """
    from gastric_propagate.data.io import OutputBatch

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
