"""The phantom's gastric tumour: its lobes, its place on the stomach wall, the fat plane around it, and its painting
and label. Part of ``synthetic.phantom``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial import ConvexHull
from scipy.spatial.distance import pdist

from gastric_propagate.synthetic.phantom_anatomy import case_hu, cavity_membership
from gastric_propagate.synthetic.phantom_canvas import fibonacci_sphere, rotation, smooth_field

ROUGH_MAX_MM = 3.0  # how far the rough surface may move the tumour's boundary
LABEL_END_COVERAGE_SHIFT = 0.25  # labelled down to 25 % slice coverage along z (0.5 - 0.25)


# ----------------------------------------------------------------------------------------------
# The tumour: a main ellipsoid and a few overlapping satellite lobes (their union has notches between
# the lobes, so it is clearly not an ellipsoid), with a rough surface added when it is painted.


@dataclass
class Tumour:
    centre: np.ndarray  # (3,) patient mm: the main lobe's centre
    offsets: np.ndarray  # (k, 3) lobe centres relative to ``centre``; the main lobe's is 0
    rots: np.ndarray  # (k, 3, 3), columns: each lobe's axes in the patient frame
    axes: np.ndarray  # (k, 3) semi-axes, mm

    def surface(self, n=500):
        """Points on the lobes' surfaces, relative to the centre, (k * n, 3) mm (some lie inside others)."""
        u = fibonacci_sphere(n)
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


def draw_tumour(rng, diameter, slice_spacing):
    # Often longer along the body axis than across it, as real masses are (soft-tissue sarcomas run about
    # 1.7 painted diameters); the requested diameter is the longest, so a long tumour is narrower in-plane.
    main = np.array([1.0, rng.uniform(0.6, 1.0), rng.uniform(0.5, 1.0) * math.exp(rng.uniform(0.0, 0.9))])
    k = 1 + int(rng.integers(2, 5))
    offsets, rots, axes = [np.zeros(3)], [rotation(rng.uniform(0, math.pi), rng.uniform(-0.3, 0.3))], [main]
    for _ in range(k - 1):
        direction = rng.normal(size=3) * np.array([1.0, 1.0, 0.6])
        direction /= np.linalg.norm(direction)
        size = main.mean() * rng.uniform(0.4, 0.65)
        # Centred near the main lobe's surface: it bulges out, still attached.
        r_main = 1.0 / np.sqrt((((rots[0].T @ direction) / main) ** 2).sum())
        offsets.append(direction * r_main * rng.uniform(0.8, 1.05))
        rots.append(rotation(rng.uniform(0, math.pi), rng.uniform(-0.5, 0.5)))
        axes.append(size * np.array([1.0, rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0)]))
    tumour = Tumour(np.zeros(3), np.array(offsets), np.array(rots), np.array(axes))
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


def place_tumour(rng, tumour, stomach, body):
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


def tumour_box(cv, tumour, pad):
    """The grid box around the tumour grown by ``pad`` mm, and its voxels' positions relative to the centre."""
    pts = tumour.surface() + tumour.centre
    k0, k1 = np.searchsorted(cv.z, [pts[:, 2].min() - pad, pts[:, 2].max() + pad])
    sl = cv.box(pts[:, 0].min() - pad, pts[:, 0].max() + pad, pts[:, 1].min() - pad, pts[:, 1].max() + pad, k0, k1)
    p = np.stack(np.broadcast_arrays(cv.x[sl[2]][None, None, :] - tumour.centre[0],
                                     cv.y[sl[1]][None, :, None] - tumour.centre[1],
                                     cv.z[sl[0]][:, None, None] - tumour.centre[2]), -1)
    return sl, p


def paint_fat_plane(cv, rng, tumour, stomach, body):
    """Perigastric fat around the stomach and the tumour, painted before both.

    The stomach and the tumour are painted over it, so the tumour still grows from the gastric wall, but
    a plane of fat sets it apart from the liver, spleen and bowel it would otherwise touch at equal HU,
    as on a real CT. Beyond the tumour's ends the wall goes on: telling tumour from wall stays the task.
    """
    fat_hu = rng.uniform(-110.0, -80.0)
    plane = ROUGH_MAX_MM + rng.uniform(3.0, 8.0)
    in_cavity = cavity_membership(cv, body, shrink=2.0)
    cx, cy = stomach.centre(cv.z)
    a, b = stomach.axes(cv.z)
    cv.paint_tube(fat_hu, cx, cy, a + plane, b + plane, stomach.theta, clip=in_cavity)
    sl, p = tumour_box(cv, tumour, plane + 2.0 * cv.edge)
    m = cv.soft(tumour.distance(p) + plane)
    np.minimum(m, in_cavity(sl), out=m)
    cv.paint(sl, m, fat_hu)


def paint_tumour(cv, rng, tumour, body, case, wall_hu, px, dz, low_density_rng=None):
    """Paints the tumour (heterogeneous, soft-edged) last and returns its label on the whole grid.

    With ``low_density_rng`` (a stream of its own, so that every other draw of the seed stays as it was) the tumour
    also gets large low-density parts (``low_density_drop``).
    """
    sl, p = tumour_box(cv, tumour, ROUGH_MAX_MM + 2.0 * max(px, dz))
    r = np.linalg.norm(p, axis=-1)
    d = tumour.distance(p)
    # A rough surface, bounded so that the mass stays within the extent the volume was laid out for.
    rough = np.clip(smooth_field(rng, d.shape, 3.0, px, dz), -2.0, 2.0)
    d += rough * (ROUGH_MAX_MM / 2.0 * rng.uniform(0.5, 1.0))
    # Partial volume: the edge spreads over a pixel in-plane and over a slice where the surface faces z.
    cos_z = p[..., 2] / np.maximum(r, 1e-6)
    width = np.sqrt(px * px * (1.0 - cos_z**2) + dz * dz * cos_z**2)
    m = np.clip(0.5 + d / width, 0.0, 1.0).astype(np.float32)
    inside_cavity = cavity_membership(cv, body, shrink=2.0)(sl)
    np.minimum(m, inside_cavity, out=m)
    # Heterogeneity: smooth texture, and a darker necrotic core in some of the larger masses.
    texture = smooth_field(rng, m.shape, 2.5, px, dz) * rng.uniform(5.0, 14.0)
    necrosis = rng.uniform(20.0, 50.0) if (tumour.axes[0].max() > 20.0 and rng.random() < 0.5) else 0.0
    hu = wall_hu + case_hu(case, "tumour_delta") + texture
    hu -= necrosis * np.clip((0.45 - r / tumour.axes[0].min()) / 0.15, 0.0, 1.0)
    if low_density_rng is not None:
        hu -= low_density_drop(low_density_rng, d, 2.0 * float(tumour.axes[0].mean()), px, dz)
    cv.paint(sl, m, hu)
    label = np.zeros(cv.vol.shape, dtype=np.uint8)
    # In-plane the label follows the surface; a slice the surface crosses along z is labelled where the tumour
    # fills more than a quarter of its thickness, as annotators outline a partial-volume end slice.
    label[sl] = (d >= -LABEL_END_COVERAGE_SHIFT * dz * cos_z**2) & (inside_cavity >= 0.5)
    return label


def low_density_drop(rng, distance, size_mm, px, dz):
    """How many HU to take off each voxel of the tumour's box for its low-density parts: blotches of a smooth random
    field (about a quarter of the tumour's size across) covering 20-70 % of the tumour, 25-90 HU darker, down to
    fat-like density, reaching the outline as necrotic, cystic and myxoid parts of real sarcomas do (where the
    networks trained on uniformly dense phantoms lost real tumour, docs/training.md). ``distance`` is the signed
    distance to the surface (> 0 inside)."""
    field = smooth_field(rng, distance.shape, rng.uniform(0.15, 0.35) * size_mm, px, dz)
    inside = distance > 0
    level = float(np.quantile(field[inside], 1.0 - rng.uniform(0.2, 0.7))) if inside.any() else np.inf
    part = np.clip((field - level) / 0.3 + 0.5, 0.0, 1.0)  # a soft edge, a few mm wide
    return (rng.uniform(25.0, 90.0) * part).astype(np.float32)
