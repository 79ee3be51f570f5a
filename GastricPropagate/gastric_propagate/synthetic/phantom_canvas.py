"""The phantom's canvas: the volume being painted in patient-frame mm, its geometry primitives, and what the
scanner adds (noise and blur). Part of ``synthetic.phantom``."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

AIR = -1000.0


# ----------------------------------------------------------------------------------------------
# Geometry primitives. Distances are signed, in mm, positive inside, and only accurate near the
# boundary (first order: (1 - f) / |grad f|), which is all the soft edges need.


def ellipse_distance(u, v, a, b):
    uu, vv = u * u / (a * a), v * v / (b * b)  # 2D when the ellipse is not rotated
    grad = np.sqrt(uu / (a * a) + vv / (b * b))
    grad *= 2.0
    grad += 1e-6
    f = uu + vv
    np.subtract(1.0, f, out=f)
    f /= grad
    return f


def superellipse_distance(x, y, a, b_ant, b_post, p):
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


class Canvas:
    """The volume being painted and the patient-frame coordinates (mm) of its voxel centres."""

    def __init__(self, x, y, z, edge_mm):
        self.x, self.y, self.z = x, y, z
        self.vol = np.full((z.size, y.size, x.size), AIR, dtype=np.float32)
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
        d = ellipse_distance(dx, dy, aa, bb).astype(np.float32, copy=False)
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


def ellipsoid_scale(z, zc, c):
    """Per-slice semi-axis factor that turns a tube into an ellipsoid of half-length c along z."""
    return np.sqrt(np.clip(1.0 - ((z - zc) / c) ** 2, 0.0, None)).astype(np.float32)


def fibonacci_sphere(n):
    i = np.arange(n) + 0.5
    polar = np.arccos(1.0 - 2.0 * i / n)
    azimuth = math.pi * (1.0 + 5.0**0.5) * i
    return np.stack([np.cos(azimuth) * np.sin(polar), np.sin(azimuth) * np.sin(polar), np.cos(polar)], -1)


def rotation(yaw, tilt):
    cz, sz, cx, sx = math.cos(yaw), math.sin(yaw), math.cos(tilt), math.sin(tilt)
    rz = np.array([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]])
    return rz @ rx


def smooth_field(rng, shape, sigma_mm, px, dz):
    """Gaussian random field with unit standard deviation and a correlation length of ``sigma_mm``."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), (sigma_mm / dz, sigma_mm / px,
                                                                                   sigma_mm / px), mode="nearest")
    field /= max(float(field.std()), 1e-6)
    return field


def noise_and_blur(cv, rng, px, dz):
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
