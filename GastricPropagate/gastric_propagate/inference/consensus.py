"""The consensus: a voxel is tumour when at least two of three independent opinions say so.

The three opinions fail in different ways, so their majority is wrong only where two fail together:
    - the networks (proposer + refiner): follow the outline's shape and find where the tumour ends, but
      leak into tissue of the same density or lose tissue unlike their training data;
    - slice-to-slice registration (``registration.py``, Demons): follows how the tissue moves, learned from
      nothing, but drifts on low contrast and stops at a fixed reach;
    - the painted outline copied along z over ± 0.6 of its equivalent diameter (``REACH_FACTOR``): no image
      at all, so it cannot leak, but it ignores how the outline changes.

Chosen on held-out synthetic cases (20 of each generator, seeds no training or evaluation uses), not on real CT;
``scripts/choose_vote.py`` prints the figures. Mean Dice on phantoms / 'shapes' / 'thorax', all at a reach of 0.5
(the run that chose the reach): this majority 0.885 / 0.860 / 0.908; with affine instead of Demons registration
0.885 / 0.843 / 0.902; all four members 0.895 / 0.844 / 0.902; without the networks 0.873 / 0.855 / 0.901; the
networks alone 0.892 / 0.666 / 0.808; Demons alone 0.882 / 0.853 / 0.896. No single member and no other vote was
better on all three. It applies to the protocol's single painted largest cross-section; keyframes and
a painted slice that is not the largest keep the networks' result (the copy and the reach assume the largest).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from gastric_propagate.inference.registration import propagate_by_registration, slices_within

# How far the copied outline and the registration reach each way along z, in painted equivalent diameters.
# Chosen on the dev cases of scripts/choose_vote.py (the best mean over the three generators; engine Dice on phantom /
# shapes / thorax): 0.885 / 0.860 / 0.908 at 0.5, 0.876 / 0.869 / 0.913 at 0.6, 0.867 / 0.867 / 0.911 at 0.75,
# 0.832 / 0.848 / 0.911 at 1. A close call: 40 phantoms and 40 'shapes' cases had also put 0.6 (0.879 / 0.857) a
# little ahead of 0.5 (0.882 / 0.849). Real tumours run about 1.1 (nodules) to 1.7 (sarcomas) painted diameters.
REACH_FACTOR = 0.6
# The registration of the vote: Demons (deformable; also faster than the affine one on a 512x512 CT).
REGISTRATION = {"transform": "demons", "iterations": 10}


def take_vote(network_mask: np.ndarray, image: np.ndarray, spacing_xyz: tuple[float, float, float], k: int,
              painted: np.ndarray, limits: tuple[int, int], *,
              extent_factor: float = REACH_FACTOR) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """The result of the vote on the CT grid, and its three opinions (networks, registration, copy).

    Args:
        network_mask: (z, y, x) the networks' mask.
        image: CT (z, y, x) in HU.
        spacing_xyz: voxel spacing (x, y, z) in mm.
        k: the painted slice; painted: its (y, x) cross-section, kept exactly.
        limits: lowest and highest slice (inclusive) the result may reach.
        extent_factor: how far the registration and the copy reach, in painted equivalent diameters.
    """
    registered = propagate_by_registration(image, spacing_xyz, k, painted, extent_factor=extent_factor,
                                           **REGISTRATION)
    opinions = (network_mask, registered, copy_along_z(image.shape, k, painted, spacing_xyz,
                                                       extent_factor=extent_factor))
    mask = majority(*opinions)
    mask[:limits[0]], mask[limits[1] + 1:] = 0, 0  # the registration and the copy know nothing of the slice limits
    mask[k] = painted
    return keep_connected(mask, k, painted), opinions


def reach_slices(painted: np.ndarray, spacing_xyz: tuple[float, float, float], *,
                 extent_factor: float = REACH_FACTOR) -> int:
    """How many slices each way the copy and the registration reach: ``extent_factor`` painted diameters.

    Beyond it two of the three opinions are empty, so no voxel can win the vote: the networks need not go there.
    """
    return slices_within(painted, spacing_xyz, extent_factor)


def copy_along_z(shape_zyx: tuple[int, int, int], k: int, painted: np.ndarray,
                 spacing_xyz: tuple[float, float, float], *, extent_factor: float = REACH_FACTOR) -> np.ndarray:
    """The painted cross-section copied onto the slices within ``extent_factor`` diameters of slice ``k``."""
    reach = reach_slices(painted, spacing_xyz, extent_factor=extent_factor)
    mask = np.zeros(shape_zyx, dtype=np.uint8)
    mask[max(0, k - reach):min(shape_zyx[0], k + reach + 1)] = painted
    return mask


def majority(*opinions: np.ndarray) -> np.ndarray:
    """uint8 mask of the voxels that more than half of the (same-shape, binary) ``opinions`` hold."""
    votes = np.zeros(opinions[0].shape, dtype=np.uint8)
    for opinion in opinions:
        votes += opinion > 0
    return (2 * votes > len(opinions)).astype(np.uint8)


def keep_connected(mask: np.ndarray, k: int, painted: np.ndarray) -> np.ndarray:
    """The parts of ``mask`` that connect (in 3D) to the painted voxels on slice ``k``; the rest are strays."""
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask
    touching = np.unique(labels[k][painted])
    return np.isin(labels, touching[touching > 0]).astype(np.uint8)


def agreement(opinions: tuple[np.ndarray, ...], slices) -> dict[int, float]:
    """Per slice, the share of the voxels any opinion marks that every opinion marks (1: unanimous; 0: none in common,
    or nothing marked). Where the opinions part, the vote decided a close call: a slice worth a look."""
    shares = {}
    for k in slices:
        union = np.zeros(opinions[0].shape[1:], dtype=bool)
        common = np.ones(opinions[0].shape[1:], dtype=bool)
        for opinion in opinions:
            union |= opinion[k] > 0
            common &= opinion[k] > 0
        total = int(union.sum())
        shares[k] = float(common.sum()) / total if total else 0.0
    return shares
