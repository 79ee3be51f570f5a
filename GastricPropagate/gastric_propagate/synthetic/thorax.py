"""Synthetic chest CT around a lung nodule: a lesion surrounded by air.

The third generator, unlike the other two: an anatomy of the lung rather than the abdomen or random regions.
Lung parenchyma (air with a fine texture and patchy density), a vessel tree and bronchi (air with a soft wall)
and, in some cases, the chest wall (pleura, muscle, fat, a rib) or the mediastinum nearby. The nodule is
solid, part-solid or ground-glass, 4-35 mm, nearly as long as it is wide, and lies free in the parenchyma,
against the pleura (juxta-pleural: a flat base on the wall) or on a vessel (juxta-vascular: the vessel runs on
beyond it, unlabelled). That is what networks trained on abdominal phantoms had never seen: on real lung
nodules they lost the tumour on 18 % of the slices (``scripts/opinions_breakdown.py``).

The label map is rendered by ``synthetic.acquisition`` (TorchIO). A case is drawn from its seed alone.
Training-only: Slicer never imports this module.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from gastric_propagate.data.cases import CaseData
from gastric_propagate.synthetic.acquisition import acquire, draw_spacing, log_uniform
from gastric_propagate.synthetic.shapes import distance_to_line, lobulated_lesion, random_rotation, smooth_field

SLICE_MM = (0.5, 5.0)  # slice spacing range (log-uniform)
PIXEL_MM = (0.5, 0.9)  # in-plane spacing range
NODULE_DIAMETER_MM = (4.0, 35.0)  # equivalent diameter range (log-uniform)
SITES = {"free": 0.45, "juxta-pleural": 0.3, "juxta-vascular": 0.25}
KINDS = {"solid": 0.65, "part-solid": 0.15, "ground-glass": 0.2}


def _choice(rng: np.random.Generator, table: dict[str, float]) -> str:
    names = list(table)
    return names[int(rng.choice(len(names), p=np.array([table[n] for n in names])))]


def _near(value: float, spread: float = 3.0) -> tuple[float, float]:
    return value - spread, value + spread


def _in_plane_direction(rng: np.random.Generator, tilt: float = 0.3) -> np.ndarray:
    angle = rng.uniform(0.0, 2.0 * np.pi)
    direction = np.array([np.cos(angle), np.sin(angle), rng.uniform(-tilt, tilt)])
    return direction / np.linalg.norm(direction)


class _Scene:
    """A label map built layer by layer; each label gets the (low, high) ranges of its mean and SD."""

    def __init__(self, shape: tuple[int, int, int]):
        self.labels = np.zeros(shape, dtype=np.int16)
        self.means: list[tuple[float, float]] = []
        self.stds: list[tuple[float, float]] = []

    def add(self, where: np.ndarray, mean_hu: float, sd_hu: float) -> int:
        label = len(self.means)
        self.labels[where] = label
        self.means.append(_near(mean_hu))
        self.stds.append((sd_hu, sd_hu))
        return label


def _scene(rng: np.random.Generator, shape: tuple[int, int, int], spacing_zyx: tuple[float, float, float],
           diameter: float) -> tuple[_Scene, list[int]]:
    """The label map on the fine grid (the nodule's centre at the origin) and the nodule's labels."""
    dz, dy, dx = spacing_zyx
    z, y, x = np.meshgrid(*(np.arange(n) - (n - 1) / 2.0 for n in shape), indexing="ij")
    coords = np.stack([x * dx, y * dy, z * dz])
    radius = diameter / 2.0
    site = _choice(rng, SITES)
    scene = _Scene(shape)

    # Parenchyma: air with a fine texture, patchy (dependent or emphysematous) density.
    lung_hu = rng.uniform(-900.0, -780.0)
    scene.add(np.ones(shape, dtype=bool), lung_hu, rng.uniform(15.0, 45.0))
    patches = smooth_field(rng, shape, tuple(rng.uniform(4.0, 12.0) / s for s in spacing_zyx)) > rng.uniform(0.3, 1.5)
    scene.add(patches, lung_hu + rng.uniform(-80.0, 150.0), rng.uniform(15.0, 45.0))

    # The chest wall (a gently curved plane) or the mediastinum, beside the nodule or further away.
    wall_depth = None
    if site == "juxta-pleural" or rng.random() < 0.35:
        normal = _in_plane_direction(rng, tilt=0.4)
        gap = radius * rng.uniform(0.5, 0.9) if site == "juxta-pleural" else radius + rng.uniform(3.0, 30.0)
        along = np.einsum("i,i...->...", normal, coords)
        across2 = (coords ** 2).sum(axis=0) - along ** 2
        wall_depth = along - gap + across2 / (2.0 * rng.uniform(80.0, 250.0))  # > 0 beyond the pleura
        if rng.random() < 0.7:  # chest wall: intercostal muscle, extrapleural fat, muscle, and a rib
            muscle_hu = rng.uniform(30.0, 65.0)
            scene.add(wall_depth > 0, muscle_hu, rng.uniform(5.0, 15.0))
            fat_from = rng.uniform(3.0, 8.0)
            scene.add((wall_depth > fat_from) & (wall_depth < fat_from + rng.uniform(3.0, 15.0)),
                      rng.uniform(-120.0, -80.0), rng.uniform(5.0, 15.0))
            rib_axis = np.cross(normal, random_rotation(rng)[:, 0])
            rib_axis /= np.linalg.norm(rib_axis) + 1e-9
            rib_centre = normal * (gap + rng.uniform(4.0, 10.0)) + np.array([0.0, 0.0, rng.uniform(-1.0, 1.0) * radius])
            rib_distance = distance_to_line(coords, rib_centre, rib_axis)
            rib_radius = rng.uniform(3.0, 6.0)
            scene.add((rib_distance < rib_radius) & (wall_depth > 0), rng.uniform(150.0, 300.0), 20.0)  # marrow
            scene.add((rib_distance < rib_radius) & (rib_distance > rib_radius - 1.2) & (wall_depth > 0),
                      rng.uniform(500.0, 1000.0), 40.0)  # cortex
        else:  # the mediastinum: soft tissue with patches of fat
            scene.add(wall_depth > 0, rng.uniform(20.0, 60.0), rng.uniform(5.0, 20.0))
            fat = (wall_depth > 0) & (smooth_field(rng, shape, tuple(8.0 / s for s in spacing_zyx)) > 0.4)
            scene.add(fat, rng.uniform(-120.0, -70.0), rng.uniform(5.0, 15.0))

    # Bronchi: air in a thin soft wall.
    for _ in range(int(rng.integers(0, 3))):
        point = rng.uniform(-0.4, 0.4, size=3) * np.array(shape[::-1]) * np.array([dx, dy, dz])
        lumen = log_uniform(rng, 1.0, 5.0)
        distance = distance_to_line(coords, point, random_rotation(rng)[:, 0])
        if wall_depth is not None:
            distance[wall_depth > 0] = np.inf
        scene.add(distance < lumen + rng.uniform(0.7, 1.5), rng.uniform(0.0, 50.0), 10.0)
        scene.add(distance < lumen, rng.uniform(-1000.0, -930.0), 10.0)

    # Vessels: a few tubes, each with a branch or two; enhanced or not (one state for the whole case).
    vessel_hu = rng.uniform(150.0, 350.0) if rng.random() < 0.5 else rng.uniform(25.0, 55.0)
    vessels = np.zeros(shape, dtype=bool)
    for number in range(int(rng.integers(2, 8))):
        direction = random_rotation(rng)[:, 0]
        vessel_radius = log_uniform(rng, 0.5, 4.0)
        if number == 0 and site == "juxta-vascular":  # one vessel runs into the nodule's edge
            side = np.cross(direction, random_rotation(rng)[:, 0])
            side /= np.linalg.norm(side) + 1e-9
            point = side * (radius + vessel_radius * rng.uniform(-0.6, 0.6))
        else:
            point = rng.uniform(-0.45, 0.45, size=3) * np.array(shape[::-1]) * np.array([dx, dy, dz])
        vessels |= distance_to_line(coords, point, direction) < vessel_radius
        for _ in range(int(rng.integers(0, 3))):
            start = point + direction * rng.uniform(-30.0, 30.0)
            branch = direction + rng.normal(0.0, 0.7, size=3)
            vessels |= distance_to_line(coords, start, branch / np.linalg.norm(branch), half=True) < vessel_radius * 0.7
    if wall_depth is not None:
        vessels &= wall_depth <= 0
    scene.add(vessels, vessel_hu, rng.uniform(5.0, 20.0))

    # The nodule, painted last; against the pleura it has a flat base on the wall.
    nodule = lobulated_lesion(rng, coords, diameter, log_elongation=(-0.3, 0.1))
    if wall_depth is not None:
        nodule &= wall_depth <= 0
    kind = _choice(rng, KINDS)
    solid_hu = rng.uniform(-10.0, 70.0)
    body_hu = rng.uniform(-700.0, -350.0) if kind != "solid" else solid_hu
    nodule_labels = [scene.add(nodule, body_hu, rng.uniform(8.0, 25.0))]
    if kind == "part-solid":
        core = ndimage.binary_erosion(nodule, iterations=max(1, int(diameter / 5.0 / dx)))
        core &= smooth_field(rng, shape, tuple(diameter / 5.0 / s for s in spacing_zyx)) > 0.0
        if core.any():
            nodule_labels.append(scene.add(core, solid_hu, rng.uniform(8.0, 25.0)))
    return scene, nodule_labels


def make_thorax_case(seed: int) -> CaseData:
    """One chest CT crop around a lung nodule: int16 HU image and uint8 nodule label on a grid of random spacing.

    The slice spacing is log-uniform over 0.5-5 mm; thick slices average thinner sub-slices (partial volume),
    and a thick slice is labelled where the nodule fills more than a quarter of it (``acquisition.LABEL_COVERAGE``).
    """
    rng = np.random.default_rng([seed, 11])
    slice_mm, pixel_mm, sub = draw_spacing(rng, SLICE_MM, PIXEL_MM)
    fine_mm = slice_mm / sub
    diameter = log_uniform(rng, *NODULE_DIAMETER_MM)
    side_mm = float(np.clip(diameter * rng.uniform(2.0, 3.0) + 30.0, 50.0, 150.0))
    depth_mm = diameter * 2.5 + rng.uniform(20.0, 50.0)
    n_xy = int(side_mm / pixel_mm)
    n_z = max(3, int(depth_mm / slice_mm)) * sub
    spacing_zyx = (fine_mm, pixel_mm, pixel_mm)
    scene, nodule_labels = _scene(rng, (n_z, n_xy, n_xy), spacing_zyx, diameter)
    image, label = acquire(scene.labels, nodule_labels, scene.means, scene.stds, spacing_zyx, sub, rng, seed,
                           noise_hu=(5.0, 40.0))
    return CaseData(f"thorax_{seed}", image, label, (pixel_mm, pixel_mm, slice_mm))
