"""The phantom's anatomy: body, spine, organs and stomach, drawn from the case's random stream and painted on the
canvas. Part of ``synthetic.phantom``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gastric_propagate.synthetic.phantom_canvas import AIR, ellipsoid_scale, superellipse_distance

# (low, high) HU by phase. One uniform draw per structure and case places it within the range, so the
# same seed seen in another phase keeps its anatomy, its noise and its relative enhancement.
PHASE_HU = {
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


def case_hu(case, name):
    low, high = PHASE_HU[name][case["phase"]]
    return low + case["u"][name] * (high - low)


@dataclass
class Body:
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


def draw_body(rng):
    a = rng.uniform(135.0, 175.0)
    return Body(a=a, b_ant=a * rng.uniform(0.62, 0.75), b_post=a * rng.uniform(0.55, 0.68),
                 p=rng.uniform(2.1, 2.6), fat=rng.uniform(8.0, 30.0), muscle=rng.uniform(8.0, 14.0),
                 wobble=rng.uniform(0.0, 0.05), wobble_len=rng.uniform(250.0, 500.0),
                 wobble_phase=rng.uniform(0, 2 * np.pi))


@dataclass
class Stomach:
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


def draw_stomach(rng, body, diameter):
    ac, bc = body.a - body.cavity_inset, body.b_ant - body.cavity_inset
    a = min(max(rng.uniform(30.0, 55.0), 0.35 * diameter), 0.4 * ac)
    b = a * rng.uniform(0.6, 0.95)
    # Left upper quadrant, in front; kept off the abdominal wall.
    x0 = min(ac * rng.uniform(0.15, 0.4), ac - a - 25.0)
    y0 = max(-bc * rng.uniform(0.05, 0.35), -bc + a + 25.0)
    return Stomach(x0=x0, y0=y0, kx=rng.uniform(-0.25, 0.1), ky=rng.uniform(-0.15, 0.15),
                    sway=rng.uniform(0.0, 10.0), sway_len=rng.uniform(120.0, 300.0),
                    sway_phase=rng.uniform(0, 2 * np.pi), a=a, b=b, theta=rng.uniform(-0.7, 0.7),
                    wall=rng.uniform(3.0, 7.0))


# ----------------------------------------------------------------------------------------------
# Painting


def body_distance(cv, body, sl):
    """Signed distance to the skin on a box; the inner contours are its level sets (parallel curves)."""
    d = superellipse_distance(cv.x[sl[2]][None, None, :], cv.y[sl[1]][None, :, None], *body.axes(cv.z[sl[0]]),
                               body.p)
    return d.astype(np.float32, copy=False)


def paint_body(cv, rng, body):
    """Skin and subcutaneous fat, the abdominal wall muscles, the fat of the cavity, the table."""
    fat, muscle, cavity = rng.uniform(-115.0, -90.0), rng.uniform(45.0, 60.0), rng.uniform(-105.0, -80.0)
    # The three nested soft layers make HU a piecewise-linear function of the distance to the skin:
    # one interpolation per slab instead of painting the whole grid three times.
    h = cv.edge / 2.0
    knots = [-h, h, body.fat - h, body.fat + h, body.cavity_inset - h, body.cavity_inset + h]
    values = [AIR, fat, fat, muscle, muscle, cavity]
    for k in range(0, cv.z.size, 16):
        slab = np.s_[k:k + 16, :, :]
        cv.vol[slab] = np.interp(body_distance(cv, body, slab), knots, values)
    y_table = body.b_post * (1.0 + body.wobble) + rng.uniform(5.0, 25.0)
    thick, half_width, hu = rng.uniform(6.0, 12.0), rng.uniform(190.0, 230.0), rng.uniform(-400.0, -200.0)
    sl = cv.box(-half_width, half_width, y_table, y_table + thick)
    if sl is not None:
        cv.paint(sl, np.float32(1.0), hu)


def cavity_membership(cv, body, shrink=0.0):
    """``clip`` callback: soft membership of the abdominal cavity (moved in by ``shrink``) on a box."""

    def clip(sl):
        d = body_distance(cv, body, sl)
        d -= body.cavity_inset + shrink
        return cv.soft(d)

    return clip


def paint_spine(cv, rng, body):
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


def paint_organs(cv, rng, body, case, y_vb, r_vb):
    """Aorta, IVC, kidneys, bowel loops, mesenteric vessels, liver and spleen."""
    z = cv.z
    ac = body.a - body.cavity_inset
    ba, bp = body.b_ant - body.cavity_inset, body.b_post - body.cavity_inset
    in_cavity = cavity_membership(cv, body)
    r_ao = rng.uniform(9.0, 13.0)
    cv.paint_tube(case_hu(case, "aorta"), rng.uniform(6.0, 18.0) + 0.03 * z, y_vb - r_vb - r_ao - rng.uniform(1.0, 4.0),
                  r_ao, r_ao)
    cv.paint_tube(case_hu(case, "vein"), -rng.uniform(20.0, 30.0), y_vb - r_vb - rng.uniform(0.0, 8.0),
                  rng.uniform(11.0, 16.0), rng.uniform(8.0, 12.0))
    zk = rng.uniform(-130.0, -30.0)
    for sgn in (-1.0, 1.0):
        zc, c = zk + (12.0 if sgn > 0 else 0.0) + rng.uniform(-5.0, 5.0), rng.uniform(45.0, 60.0)
        a, b = rng.uniform(22.0, 30.0), rng.uniform(28.0, 36.0)
        xc, yc, theta = sgn * rng.uniform(55.0, 75.0), y_vb + rng.uniform(-5.0, 10.0), sgn * rng.uniform(0.3, 0.7)
        scale = ellipsoid_scale(z, zc, c)
        cv.paint_tube(case_hu(case, "cortex"), xc, yc, a, b, theta, scale=scale)
        cv.paint_tube(case_hu(case, "medulla"), xc, yc, 0.55 * a, 0.6 * b, theta, scale=scale)
    # Bowel loops: the look-alikes, some collapsed into soft-tissue blobs next to the stomach.
    for _ in range(int(rng.integers(4, 11))):
        a = rng.uniform(8.0, 18.0)
        b = a * rng.uniform(0.6, 1.0)
        x0 = rng.uniform(-0.6, 0.7) * ac
        x0 = float(np.clip(x0, -(ac - a - 15.0), ac - a - 15.0))
        y0 = float(np.clip(rng.uniform(-0.85, 0.2) * ba, -(ba - a - 15.0), 0.2 * bp))
        zc, c = rng.uniform(z[0], z[-1]), rng.uniform(20.0, 80.0)
        kx, ky, theta = rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3), rng.uniform(0, np.pi)
        cx, cy, scale = x0 + kx * (z - zc), y0 + ky * (z - zc), ellipsoid_scale(z, zc, c)
        kind = rng.choice(["fluid", "gas", "level", "collapsed"], p=[0.35, 0.2, 0.2, 0.25])
        wall_hu = case_hu(case, "bowel") + rng.uniform(-10.0, 10.0)
        cv.paint_tube(wall_hu, cx, cy, a, b, theta, scale=scale, clip=in_cavity)
        wall = rng.uniform(1.5, 3.0)
        content = {"fluid": rng.uniform(0.0, 30.0), "gas": AIR, "collapsed": wall_hu - rng.uniform(0.0, 20.0)}
        hu = content.get(str(kind))
        if hu is None:  # gas above a fluid level
            level = (cy + rng.uniform(-0.5, 0.3) * b)[:, None, None]
            hu = np.where(cv.y[None, :, None] < level, np.float32(AIR), np.float32(rng.uniform(0.0, 30.0)))
        cv.paint_tube(hu, cx, cy, a - wall, b - wall, theta, scale=scale, clip=in_cavity)
    for _ in range(int(rng.integers(4, 11))):
        r = rng.uniform(2.0, 5.0)
        cv.paint_tube(case_hu(case, "artery" if rng.random() < 0.5 else "vein"),
                      rng.uniform(-0.4, 0.5) * ac + rng.uniform(-0.2, 0.2) * z,
                      rng.uniform(-0.6, 0.1) * ba + rng.uniform(-0.2, 0.2) * z, r, r)
    # Liver on the right, tapering to its tip caudally; a few vessels inside.
    z_tip, ramp = rng.uniform(-150.0, -40.0), rng.uniform(40.0, 80.0)
    liver_scale = np.sqrt(np.clip((z - z_tip) / ramp, 0.0, 1.0)).astype(np.float32)
    lx, ly = -ac * rng.uniform(0.35, 0.5), bp * rng.uniform(-0.15, 0.1)
    la, lb, lt = ac * rng.uniform(0.5, 0.62), 0.5 * (ba + bp) * rng.uniform(0.75, 0.95), rng.uniform(-0.35, 0.35)
    liver_hu = case_hu(case, "liver")
    cv.paint_tube(liver_hu, lx, ly, la, lb, lt, scale=liver_scale, clip=in_cavity)
    for _ in range(int(rng.integers(2, 6))):
        r = rng.uniform(2.5, 6.0)
        cv.paint_tube(case_hu(case, "vein"), lx + rng.uniform(-0.4, 0.4) * la, ly + rng.uniform(-0.4, 0.4) * lb, r, r,
                      scale=(liver_scale > 0.6).astype(np.float32))
    cv.paint_tube(case_hu(case, "spleen"), ac * rng.uniform(0.55, 0.72), bp * rng.uniform(0.3, 0.55),
                  rng.uniform(15.0, 25.0), rng.uniform(40.0, 60.0), rng.uniform(0.5, 1.0),
                  scale=ellipsoid_scale(z, rng.uniform(-20.0, 60.0), rng.uniform(45.0, 65.0)), clip=in_cavity)


def paint_stomach(cv, rng, stomach, case):
    """Enhancing wall with a brighter mucosa, gas over fluid in the lumen."""
    cx, cy = stomach.centre(cv.z)
    a, b = stomach.axes(cv.z)
    wall_hu = case_hu(case, "wall")
    cv.paint_tube(wall_hu, cx, cy, a, b, stomach.theta)
    inner = stomach.wall
    cv.paint_tube(wall_hu + case_hu(case, "mucosa_extra"), cx, cy, a - inner + 1.5, b - inner + 1.5, stomach.theta)
    # Supine patient: gas rises to the front (small y); the level is horizontal in the image.
    level = (cy + rng.uniform(-1.2, 0.6) * b).astype(np.float32)[:, None, None]
    fluid = np.float32(rng.uniform(0.0, 20.0))
    gas = np.clip(0.5 + (level - cv.y[None, :, None]) / cv.edge, 0.0, 1.0)
    cv.paint_tube(fluid + gas * (AIR - fluid), cx, cy, a - inner, b - inner, stomach.theta)
    return wall_hu
