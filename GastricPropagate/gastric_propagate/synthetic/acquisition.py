"""From a label map on a fine grid to a CT-like volume and its lesion label: what the scanner adds.

Shared by the label-map generators (``shapes``, ``thorax``). TorchIO turns the label map into an image
(``RandomLabelsToImage``, SynthSeg's generator) and adds bias field and blur; thick slices then average their
thinner sub-slices (partial volume), and noise is added last. Training-only: Slicer never imports this module.
"""

from __future__ import annotations

import numpy as np
import torch

LABEL_COVERAGE = 0.25  # a thick slice is labelled where the lesion fills more than this share of it
FINE_SLICE_MM = 1.2  # thick slices are drawn as up to 4 thinner sub-slices of about this thickness


def log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def draw_spacing(rng: np.random.Generator, slice_mm: tuple[float, float], pixel_mm: tuple[float, float]
                 ) -> tuple[float, float, int]:
    """(slice spacing, log-uniform; pixel spacing, uniform; sub-slices per acquired slice), all in mm but the last."""
    slice_spacing = log_uniform(rng, *slice_mm)
    pixel_spacing = float(rng.uniform(*pixel_mm))
    return slice_spacing, pixel_spacing, int(np.clip(round(slice_spacing / FINE_SLICE_MM), 1, 4))


def acquire(labels: np.ndarray, lesion_labels, means, stds, fine_spacing_zyx: tuple[float, float, float], sub: int,
            rng: np.random.Generator, seed: int, noise_hu: tuple[float, float] = (3.0, 35.0)
            ) -> tuple[np.ndarray, np.ndarray]:
    """(int16 HU image, uint8 lesion label) on the acquired grid: every ``sub`` fine slices make one.

    Args:
        labels: (z, y, x) int label map on the fine grid; z a multiple of ``sub``.
        lesion_labels: the labels that make up the lesion.
        means, stds: per label, the (low, high) range its mean and its SD are drawn from (TorchIO's convention).
        fine_spacing_zyx: the fine grid's spacing in mm.
        rng: the case's random stream; seed: the case's seed (seeds TorchIO's own draws).
        noise_hu: range of the white noise's SD.
    """
    import torchio as tio  # training-only dependency (the "train" extra)

    # TorchIO wants one mean per label present, numbered 0..n-1: drop labels that later layers covered entirely.
    present = np.unique(labels)
    labels = np.searchsorted(present, labels).astype(np.int16)
    means, stds = [means[i] for i in present], [stds[i] for i in present]
    lesion_labels = [int(np.searchsorted(present, i)) for i in lesion_labels if i in present]
    dz, dy, dx = fine_spacing_zyx
    affine = np.diag([dx, dy, dz, 1.0])
    subject = tio.Subject(label=tio.LabelMap(tensor=torch.from_numpy(labels.T[None].astype(np.int64)), affine=affine))
    to_image = tio.RandomLabelsToImage(label_key="label", image_key="image", mean=means, std=stds)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        subject = to_image(subject)
        image = subject["image"].data[0].numpy().T.astype(np.float32)  # back to (z, y, x)
        # Bias and blur act on attenuation (HU + 1000), as a scanner's do.
        effects = tio.Compose([
            tio.RandomBiasField(coefficients=float(rng.uniform(0.0, 0.15)), p=0.5),
            tio.RandomBlur(std=(0.2, 1.2)),
        ])
        blurred = effects(tio.ScalarImage(tensor=torch.from_numpy((image + 1000.0).T.copy())[None], affine=affine))
        image = blurred.data[0].numpy().T - 1000.0
    lesion = np.isin(labels, lesion_labels).astype(np.float32)
    # Partial volume: each acquired slice averages its ``sub`` fine slices; a partly covered end slice that still
    # shows the lesion is outlined, as annotators do (real nodules' end slices hold about a quarter of the largest
    # cross-section's area: scripts/opinions_breakdown.py).
    image = image.reshape(-1, sub, *image.shape[1:]).mean(axis=1)
    coverage = lesion.reshape(-1, sub, *lesion.shape[1:]).mean(axis=1)
    label = coverage > LABEL_COVERAGE
    image += rng.normal(0.0, rng.uniform(*noise_hu), size=image.shape).astype(np.float32)
    if not label.any():  # a lesion thinner than a quarter of a slice: keep its most-covered slice
        label = coverage >= coverage.max() * 0.999
    image = np.clip(np.rint(image), -1024, 3071).astype(np.int16)
    return image, label.astype(np.uint8)
