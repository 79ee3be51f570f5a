"""Random-shape CT-like volumes (SynthSeg-style domain randomisation): a lesion among random structures.

Structurally unlike :mod:`gastric_propagate.synthetic.phantom` (a painted abdominal anatomy): here the
scene is a random label map (the arg-max of smooth random fields, plus tubes and an optional lumen
touching the lesion) and every structure gets a random tissue class and intensity. What stays constant
is only the task: a lobulated lesion that the painted contour outlines. The networks learn to follow
*what was painted*, not what a gastric tumour looks like in one generator.

TorchIO turns the label map into an image (``RandomLabelsToImage``, SynthSeg's generator) and adds the
acquisition (``synthetic.acquisition``): bias field, blur, partial volume across thick slices, noise. A case is
drawn from its seed alone. Training-only: Slicer never imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from gastric_propagate.data.cases import CaseData
from gastric_propagate.inference.masks import largest_component
from gastric_propagate.synthetic.acquisition import acquire, draw_spacing, log_uniform

# Tissue classes a structure (or the lesion) may be drawn from: (probability, (low HU, high HU)).
_TISSUES = {
    "fat": (0.22, (-130.0, -60.0)),
    "soft": (0.34, (10.0, 90.0)),
    "lung": (0.12, (-950.0, -650.0)),
    "water": (0.08, (-10.0, 25.0)),
    "bright": (0.12, (130.0, 450.0)),
    "bone": (0.04, (400.0, 1200.0)),
    "any": (0.08, (-300.0, 300.0)),
}
# What touches the lesion as a "lumen": positive oral contrast, neutral (water), negative (air).
_LUMEN_HU = ((150.0, 1200.0), (-10.0, 30.0), (-1000.0, -900.0))
SLICE_MM = (0.5, 5.0)           # slice spacing range (log-uniform)
PIXEL_MM = (0.6, 1.0)           # in-plane spacing range
LESION_DIAMETER_MM = (8.0, 80.0)  # equivalent diameter range (log-uniform)


@dataclass(frozen=True)
class _Scene:
    labels: np.ndarray   # (z, y, x) int, fine z grid; lesion labels are listed in ``lesion_labels``
    lesion_labels: tuple[int, ...]
    means: list[tuple[float, float]]
    stds: list[tuple[float, float]]


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: tuple[float, ...]) -> np.ndarray:
    """Unit-variance smooth Gaussian noise; drawn on a coarse grid and zoomed for speed."""
    factor = [max(1.0, s / 2.0) for s in sigma_vox]
    coarse_shape = [max(2, int(np.ceil(n / f)) + 2) for n, f in zip(shape, factor)]
    coarse = ndimage.gaussian_filter(rng.standard_normal(coarse_shape), [s / f for s, f in zip(sigma_vox, factor)])
    field = ndimage.zoom(coarse, [n / c for n, c in zip(shape, coarse_shape)], order=1)
    field = field[tuple(slice(0, n) for n in shape)]
    return (field - field.mean()) / (field.std() + 1e-6)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def distance_to_line(coords: np.ndarray, point: np.ndarray, direction: np.ndarray, half: bool = False) -> np.ndarray:
    """Distance (mm) of every voxel (``coords``: (3, z, y, x) mm) to the line through ``point`` along the unit
    ``direction``; to the half-line from ``point`` when ``half``."""
    offset = coords - point[:, None, None, None]
    along = np.einsum("i,i...->...", direction, offset)
    if half:
        along = np.maximum(along, 0.0)
    return np.linalg.norm(offset - along * direction[:, None, None, None], axis=0)


def lobulated_lesion(rng: np.random.Generator, coords_mm: np.ndarray, diameter: float,
                     log_elongation: tuple[float, float] = (-0.3, 1.0)) -> np.ndarray:
    """A lobulated blob: a rotated ellipsoid whose surface is pushed in and out by a smooth random field.

    Its axis along z is stretched by exp(U(log_elongation)): lesions are often longer along the body axis (real
    sarcomas run about 1.7 painted diameters; the default reaches 2.7).
    """
    axes = diameter / 2.0 * np.exp(rng.uniform(-0.35, 0.35, size=3))
    axes[2] *= np.exp(rng.uniform(*log_elongation))
    local = np.einsum("ij,j...->i...", random_rotation(rng) if rng.random() < 0.7 else np.eye(3), coords_mm)
    rho = np.sqrt(sum((local[i] / axes[i]) ** 2 for i in range(3)))
    spacing_mm = float(np.linalg.norm(coords_mm[:, 1, 1, 1] - coords_mm[:, 0, 0, 0])) / np.sqrt(3)
    sigma = max(1.0, diameter / 5.0 / max(spacing_mm, 0.3))
    bumps = smooth_field(rng, rho.shape, (sigma,) * 3) * rng.uniform(0.05, 0.3)
    blob = rho + bumps < 1.0
    return largest_component(blob)


def _tissue_range(rng: np.random.Generator) -> tuple[float, float]:
    names = list(_TISSUES)
    probabilities = np.array([_TISSUES[n][0] for n in names])
    low, high = _TISSUES[names[rng.choice(len(names), p=probabilities / probabilities.sum())]][1]
    centre = rng.uniform(low, high)
    return centre - 5.0, centre + 5.0


def _scene(rng: np.random.Generator, shape: tuple[int, int, int], spacing_zyx: tuple[float, float, float],
           diameter: float) -> _Scene:
    """The random label map on the fine grid, with the lesion's labels and each label's intensity ranges."""
    nz, ny, nx = shape
    dz, dy, dx = spacing_zyx
    z, y, x = np.meshgrid(*(np.arange(n) - (n - 1) / 2.0 for n in shape), indexing="ij")
    coords = np.stack([x * dx, y * dy, z * dz])
    lesion = lobulated_lesion(rng, coords, diameter)

    # Background structures: the arg-max of K smooth fields (blobby regions of random size).
    count = int(rng.integers(3, 9))
    sigma_mm = rng.uniform(6.0, 30.0)
    fields = np.stack([smooth_field(rng, shape, (sigma_mm / dz, sigma_mm / dy, sigma_mm / dx))
                       for _ in range(count)])
    labels = np.argmax(fields, axis=0).astype(np.int16)
    next_label = count
    # Tubes (vessels, bowel loops) crossing the volume at random angles.
    for _ in range(int(rng.integers(0, 4))):
        direction = random_rotation(rng)[:, 0]
        point = rng.uniform(-0.4, 0.4, size=3) * np.array([nx * dx, ny * dy, nz * dz])
        distance = distance_to_line(coords, point, direction)
        labels[distance < rng.uniform(1.5, 7.0)] = next_label
        next_label += 1
    # A lumen touching the lesion (stomach or bowel with oral contrast, water or air), half the time.
    lumen_label = None
    if rng.random() < 0.5:
        side = rng.standard_normal(3)
        side /= np.linalg.norm(side)
        radius = diameter * rng.uniform(0.4, 1.2) / 2.0
        centre = side * (diameter / 2.0 + radius * rng.uniform(0.6, 1.1))
        lumen = np.linalg.norm(coords - centre[:, None, None, None], axis=0) < radius
        labels[lumen] = next_label
        lumen_label = next_label
        next_label += 1

    lesion_labels = [next_label]
    labels[lesion] = next_label
    next_label += 1
    if rng.random() < 0.3 and lesion.sum() > 200:  # a necrotic or cystic core, still lesion
        core = ndimage.binary_erosion(lesion, iterations=max(1, int(diameter / 6.0 / dx)))
        core &= smooth_field(rng, shape, (diameter / 6.0 / dz, diameter / 6.0 / dy, diameter / 6.0 / dx)) > 0.0
        if core.any():
            labels[core] = next_label
            lesion_labels.append(next_label)
            next_label += 1

    means = [_tissue_range(rng) for _ in range(next_label)]
    lesion_mean = rng.uniform(-60.0, 120.0) if rng.random() < 0.75 else float(np.mean(_tissue_range(rng)))
    if rng.random() < 0.3:  # nearly isodense with a neighbour (sarcoma and muscle, tumour and gastric wall)
        touching = np.unique(labels[ndimage.binary_dilation(lesion, iterations=2) & ~lesion])
        touching = [t for t in touching if t not in lesion_labels]
        if touching:
            neighbour = float(np.mean(means[int(rng.choice(touching))]))
            lesion_mean = neighbour + rng.choice([-1.0, 1.0]) * rng.uniform(10.0, 35.0)
    means[lesion_labels[0]] = (lesion_mean - 3.0, lesion_mean + 3.0)
    if len(lesion_labels) > 1:
        core_mean = lesion_mean - rng.uniform(15.0, 60.0)
        means[lesion_labels[1]] = (core_mean - 3.0, core_mean + 3.0)
    if lumen_label is not None:
        low, high = _LUMEN_HU[int(rng.integers(len(_LUMEN_HU)))]
        value = rng.uniform(low, high)
        means[lumen_label] = (value - 5.0, value + 5.0)
    stds = [(s, s) for s in rng.uniform(3.0, 30.0, size=next_label)]
    return _Scene(labels, tuple(lesion_labels), means, stds)


def make_shapes_case(seed: int) -> CaseData:
    """One random-shape case: int16 HU image and uint8 lesion label on a grid of random spacing.

    The slice spacing is log-uniform over 0.5-5 mm; thick slices average thinner sub-slices (partial volume),
    and the label of a thick slice is where the lesion fills more than a quarter of it
    (``acquisition.LABEL_COVERAGE``).
    """
    rng = np.random.default_rng([seed, 7])
    slice_mm, pixel_mm, sub = draw_spacing(rng, SLICE_MM, PIXEL_MM)
    fine_mm = slice_mm / sub
    diameter = log_uniform(rng, *LESION_DIAMETER_MM)
    # The field of view holds the lesion and its surroundings, as the networks' crop does.
    side_mm = float(np.clip(diameter * rng.uniform(1.8, 2.8) + 30.0, 60.0, 190.0))
    depth_mm = diameter * 3.2 + rng.uniform(20.0, 60.0)  # room for the longest lesions
    n_xy = int(side_mm / pixel_mm)
    n_z = max(3, int(depth_mm / slice_mm)) * sub
    scene = _scene(rng, (n_z, n_xy, n_xy), (fine_mm, pixel_mm, pixel_mm), diameter)

    image, label = acquire(scene.labels, scene.lesion_labels, scene.means, scene.stds, (fine_mm, pixel_mm, pixel_mm),
                           sub, rng, seed)
    return CaseData(f"shapes_{seed}", image, label, (pixel_mm, pixel_mm, slice_mm))
