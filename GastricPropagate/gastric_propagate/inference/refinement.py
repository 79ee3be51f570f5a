"""The refiner: a 2.5D U-Net that corrects the proposer's coarse mask, all slices in one batched pass.

2.5D rather than 3D because slice spacing varies from 1 to 5 mm between scans: a 3D network would need
z-resampling (and its cost) to see tumours at one scale, while three neighbouring slices give the
through-plane context the proposer lacks, at the price of a 2D network.
"""

from __future__ import annotations

import numpy as np

from gastric_propagate.inference.propagation import NetworkRunner

BATCH_SLICES = 32


def refiner_input(image: np.ndarray, coarse: np.ndarray, slices: list[int]) -> np.ndarray:
    """(len(slices), 6, S, S): image and coarse mask on slices k-1, k, k+1 (clamped at the ends)."""
    last = image.shape[0] - 1
    index = np.array([[min(max(k + offset, 0), last) for offset in (-1, 0, 1)] for k in slices])
    return np.concatenate([image[index], coarse[index]], axis=1)


def refine(network: NetworkRunner, image: np.ndarray, coarse: np.ndarray, slices: list[int]) -> np.ndarray:
    """Refined probabilities for ``slices``; other slices of the returned (Z, S, S) array are 0.

    Args:
        network: the refiner's runner (``propagation.NetworkRunner``).
        image: (Z, S, S) normalised crop, float32.
        coarse: (Z, S, S) proposer probabilities; binarised at 0.5. (The refiner learned from both: about 70 % of
            its samples the proposer's own probabilities, the others binary masks. Given the probabilities as they
            are, the judges of stop 46 moved by 0.002 at most: docs/evaluation/real-ct-training/rules.md.)
        slices: the axial indices to refine.
    """
    coarse_mask = (coarse > 0.5).astype(np.float32)
    refined = np.zeros(coarse.shape, dtype=np.float32)
    for start in range(0, len(slices), BATCH_SLICES):
        chunk = slices[start:start + BATCH_SLICES]
        refined[chunk] = network(refiner_input(image, coarse_mask, chunk))
    return refined
