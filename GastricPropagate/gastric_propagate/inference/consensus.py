"""The consensus: a voxel is tumour when at least two of three independent opinions say so.

The three opinions fail in different ways, so their majority is wrong only where two fail together:
    - the networks (proposer + refiner): follow the outline's shape and find where the tumour ends, but
      leak into tissue of the same density or lose tissue unlike their training data;
    - slice-to-slice registration (``registration.py``, Demons): follows how the tissue moves, learned from
      nothing, but drifts on low contrast and stops at a fixed reach;
    - the painted outline copied along z over ± 0.75 of its equivalent diameter (``REACH_FACTOR``), narrowing
      like an ellipsoid's cross-sections (``tapered_copy``): no image at all, so it cannot leak, but it only guesses
      how the outline changes.
The majority's outline is then snapped to the HU level of the painted edge where that edge is an intensity edge
(``outline_snap.py``).

After a review the corrected slices join the painted one as anchors, and the vote goes on (``take_vote``).

A painted slice that is not the largest cross-section (the protocol not followed, the panel's box unticked) may have
larger neighbours, so there the registration, which can follow a growing outline, reaches 3 diameters
(``options.NOT_LARGEST_REGISTRATION_REACH``), and the copy goes straight, untapered, over ``REACH_FACTOR``.
How each of these was chosen, with its figures: docs/decisions.md.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import ndimage

from gastric_propagate.data.annotation import slice_areas
from gastric_propagate.inference.masks import (bounding_box, equivalent_diameter_mm, in_plane_box, keep_connected,
                                              slices_within)
from gastric_propagate.inference.options import VOTE_REACH
from gastric_propagate.inference.outline_snap import SNAP_MARGIN_PX, snap_outline
from gastric_propagate.inference.registration import propagate_by_registration

# How far the tapered copy and the registration reach each way along z, in painted equivalent diameters (the
# copy's half-length): real tumours run about 1.1 (nodules) to 1.7 (sarcomas) painted diameters.
REACH_FACTOR = VOTE_REACH
# Above this, the registration's largest cross-section within half a painted diameter of the painted slice, relative
# to the painted area, says that the painted slice is probably not the tumour's largest (``larger_neighbour``).
LARGER_NEIGHBOUR_RATIO = 1.2
# The registration of the vote: Demons (deformable; also faster than the affine one on a 512x512 CT).
REGISTRATION = {"transform": "demons", "iterations": 10}


def register_anchors(image: np.ndarray, spacing_xyz: tuple[float, float, float], anchors: dict[int, np.ndarray], *,
                     extent_factor: float = REACH_FACTOR,
                     registration_reach: float | None = None, memo=None,
                     should_stop: Callable[[], bool] | None = None) -> dict[int, np.ndarray]:
    """Each anchor's registration (``propagate_by_registration``), up and down as far as its part of the vote needs:
    anchor -> its (z, y, x) mask. It needs only the CT and the anchors, so the pipeline starts it before the
    networks run; ``take_vote`` computes it itself when it is not given. Each anchor's walks stop where its part of
    the vote ends (at the next anchor, or the vote's window): what lies beyond is another anchor's part. ``memo``
    and ``should_stop``: ``propagate_by_registration``'s (walks of earlier runs on the same CT, served again; the
    walks ended early)."""
    slices = sorted(anchors)
    window_factor, first, last = _clipped_window(anchors, spacing_xyz, image.shape[0], extent_factor,
                                                 registration_reach)
    chains = {}
    for i, k in enumerate(slices):
        below = k - (first if i == 0 else slices[i - 1])
        above = (last if i == len(slices) - 1 else slices[i + 1]) - k
        span = max(below, above, 0)
        factor = window_factor if slices_within(anchors[k], spacing_xyz, window_factor) >= span else (
            (span + 0.25) * spacing_xyz[2] / equivalent_diameter_mm(anchors[k], spacing_xyz))
        needed = (first if i == 0 else slices[i - 1] + 1, last if i == len(slices) - 1 else slices[i + 1] - 1)
        chains[k] = propagate_by_registration(image, spacing_xyz, k, anchors[k], extent_factor=factor,
                                              limits=needed, memo=memo, should_stop=should_stop, **REGISTRATION)
    return chains


def take_vote(network_mask: np.ndarray, image: np.ndarray, spacing_xyz: tuple[float, float, float],
              anchors: dict[int, np.ndarray], limits: tuple[int, int], *, extent_factor: float = REACH_FACTOR,
              registration_reach: float | None = None, taper: bool = True, snap: bool = True,
              chains: dict[int, np.ndarray] | None = None) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """The result of the vote on the CT grid, and its three opinions (networks, registration, copy).

    The anchors are the painted slice and, after a review, the corrected ones; each is kept exactly. Beyond the
    outermost anchors the registration from that anchor and its tapered copy reach ``extent_factor`` of its
    equivalent diameters. Between two anchors the tumour goes on: the registration is what either anchor's
    registration holds, and the copy is the larger of the two outlines (a tumour narrows away from its largest
    cross-section, and the copy only breaks ties). One anchor: the protocol's single painted largest cross-section.
    ``gastric-propagate benchmark`` (its corrections part) measures this rule against the networks alone after 0-3
    corrections.

    Args:
        network_mask: (z, y, x) the networks' mask (from every anchor).
        image: CT (z, y, x) in HU.
        spacing_xyz: voxel spacing (x, y, z) in mm.
        anchors: slice -> its (y, x) painted cross-section, kept exactly.
        limits: lowest and highest slice (inclusive) the result may reach.
        extent_factor: how far the registration and the copy reach beyond the outermost anchors, in their
            equivalent diameters.
        registration_reach: how far the registration reaches instead, when further (None: ``extent_factor``); the
            vote's window reaches as far.
        taper, snap: shrink the copy towards its ends (``tapered_copy``) and snap the result's outline to the largest
            anchor's edge HU level (``outline_snap``); switched off only to measure what they add
            (scripts/choose_vote.py).
        chains: ``register_anchors``'s result for the same arguments, when it was computed beforehand.
    """
    slices = sorted(anchors)
    _, first, last = _clipped_window(anchors, spacing_xyz, image.shape[0], extent_factor, registration_reach)
    copy = tapered_copy if taper else copy_along_z
    if chains is None:
        chains = register_anchors(image, spacing_xyz, anchors, extent_factor=extent_factor,
                                  registration_reach=registration_reach)
    # The vote is worked out in the box that holds every opinion inside the window (outside it only the networks can
    # hold a voxel: no majority), widened by what the outline snap reads around a mask, then pasted onto the CT:
    # the same result as over the whole CT, without passes over a 512 x 512 x N volume.
    box = _vote_box(network_mask, chains, anchors, first, last)
    local = {k - first: painted[box[1:]] for k, painted in anchors.items()}
    shape = tuple(part.stop - part.start for part in box)
    in_plane = (slice(None),) + box[1:]  # a chain's slices, cut to the box
    registered, copied = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    low, high = slices[0], slices[-1]  # beyond the outermost anchors: their registration and tapered copy
    registered[:low - first] = chains[low][first:low][in_plane]
    registered[high + 1 - first:] = chains[high][high + 1:last + 1][in_plane]
    copied[:low - first] = copy(shape, low - first, local[low - first], spacing_xyz,
                                extent_factor=extent_factor)[:low - first]
    copied[high + 1 - first:] = copy(shape, high - first, local[high - first], spacing_xyz,
                                     extent_factor=extent_factor)[high + 1 - first:]
    for a, b in zip(slices[:-1], slices[1:]):  # between two anchors: both registrations, the larger outline
        registered[a + 1 - first:b - first] = chains[a][a + 1:b][in_plane] | chains[b][a + 1:b][in_plane]
        copied[a + 1 - first:b - first] = max(local[a - first], local[b - first], key=np.count_nonzero)
    for k, painted in local.items():
        registered[k], copied[k] = painted, painted
    voted = majority(network_mask[box], registered, copied)
    voted[:max(0, limits[0] - first)] = 0  # the registration and the copy know nothing of the slice limits
    voted[max(0, limits[1] + 1 - first):] = 0
    for k, painted in local.items():
        voted[k] = painted
    if snap:
        largest = max(local, key=lambda k: int(np.count_nonzero(local[k])))
        voted = snap_outline(keep_connected(voted, local), image[box], spacing_xyz, largest, local[largest],
                             fixed=list(local))
    return _on_ct(keep_connected(voted, local), box, image.shape), (
        network_mask, _on_ct(registered, box, image.shape), _on_ct(copied, box, image.shape))


def _on_ct(boxed: np.ndarray, box: tuple[slice, slice, slice], shape: tuple[int, int, int]) -> np.ndarray:
    """A uint8 array of the CT's shape holding ``boxed`` in ``box`` and 0 elsewhere."""
    full = np.zeros(shape, np.uint8)
    full[box] = boxed
    return full


def _vote_box(network_mask: np.ndarray, chains: dict[int, np.ndarray], anchors: dict[int, np.ndarray], first: int,
              last: int) -> tuple[slice, slice, slice]:
    """The window's slices, and in-plane the box that holds the anchors and, on those slices, every voxel the networks
    and the registrations hold, widened by ``SNAP_MARGIN_PX``."""
    window = slice(first, last + 1)
    return (window,) + in_plane_box([network_mask, *chains.values()], window, anchors.values(), margin=SNAP_MARGIN_PX)


def larger_neighbour(registered: np.ndarray, k: int, painted: np.ndarray,
                     spacing_xyz: tuple[float, float, float], *, reach: float = 0.5) -> tuple[int, float]:
    """The slice within ``reach`` painted diameters of slice ``k`` where the registration's cross-section is largest,
    and that area relative to the painted one."""
    steps = slices_within(painted, spacing_xyz, reach)
    first = max(0, k - steps)
    areas = slice_areas(registered[first:k + steps + 1])
    largest = int(np.argmax(areas))
    return first + largest, float(areas[largest]) / max(1, int(np.count_nonzero(painted)))


def _clipped_window(anchors: dict[int, np.ndarray], spacing_xyz: tuple[float, float, float], depth: int,
                    extent_factor: float, registration_reach: float | None) -> tuple[float, int, int]:
    """How far the vote's window reaches (in painted diameters: the registration's reach when it is further), and its
    first and last slice inside the volume."""
    window_factor = max(extent_factor, registration_reach or 0.0)
    first, last = vote_window(anchors, spacing_xyz, extent_factor=window_factor)
    return window_factor, max(0, first), min(depth - 1, last)


def vote_window(anchors: dict[int, np.ndarray], spacing_xyz: tuple[float, float, float], *,
                extent_factor: float = REACH_FACTOR) -> tuple[int, int]:
    """The lowest and highest slice the vote can reach (unclipped): beyond them two of the three opinions are
    empty, so no voxel can win the vote, and the networks need not go there."""
    slices = sorted(anchors)
    return (slices[0] - reach_slices(anchors[slices[0]], spacing_xyz, extent_factor=extent_factor),
            slices[-1] + reach_slices(anchors[slices[-1]], spacing_xyz, extent_factor=extent_factor))


def reach_slices(painted: np.ndarray, spacing_xyz: tuple[float, float, float], *,
                 extent_factor: float = REACH_FACTOR) -> int:
    """How many slices each way the copy and the registration reach from one anchor: ``extent_factor`` of its
    equivalent diameters."""
    return slices_within(painted, spacing_xyz, extent_factor)


def copy_along_z(shape_zyx: tuple[int, int, int], k: int, painted: np.ndarray,
                 spacing_xyz: tuple[float, float, float], *, extent_factor: float = REACH_FACTOR) -> np.ndarray:
    """The painted cross-section copied onto the slices within ``extent_factor`` diameters of slice ``k``."""
    reach = reach_slices(painted, spacing_xyz, extent_factor=extent_factor)
    mask = np.zeros(shape_zyx, dtype=np.uint8)
    mask[max(0, k - reach):min(shape_zyx[0], k + reach + 1)] = painted
    return mask


def tapered_copy(shape_zyx: tuple[int, int, int], k: int, painted: np.ndarray,
                 spacing_xyz: tuple[float, float, float], *, extent_factor: float = REACH_FACTOR) -> np.ndarray:
    """The painted cross-section copied along z and shrunk like an ellipsoid's: on a slice d mm from ``k`` it loses
    the rim r (1 - sqrt(1 - (d / h)^2)) deep, where r is its equivalent radius and h = ``extent_factor`` painted
    diameters its half-length; nothing is left h away. A tumour narrows towards its ends, and the painted slice is
    its largest. The depth is measured from each pixel's centre to the nearest pixel outside, so the outermost
    ring of pixels stays until the shrink passes a pixel: a little fuller than the exact ellipsoid, which did no
    better."""
    radius = equivalent_diameter_mm(painted, spacing_xyz) / 2.0
    half_length = extent_factor * 2.0 * radius
    mask = np.zeros(shape_zyx, dtype=np.uint8)
    if not painted.any():
        return mask
    box = bounding_box(painted, margin=1)  # the outline's box and a pixel around it: same depths, far faster
    depth = ndimage.distance_transform_edt(painted[box], sampling=(spacing_xyz[1], spacing_xyz[0]))
    reach = reach_slices(painted, spacing_xyz, extent_factor=extent_factor)
    for z in range(max(0, k - reach), min(shape_zyx[0], k + reach + 1)):
        distance = abs(z - k) * spacing_xyz[2]
        if distance < half_length:
            mask[z][box] = depth > radius * (1.0 - np.sqrt(1.0 - (distance / half_length) ** 2))
    return mask


def majority(*opinions: np.ndarray) -> np.ndarray:
    """uint8 mask of the voxels that more than half of the (same-shape, binary) ``opinions`` hold."""
    votes = np.zeros(opinions[0].shape, dtype=np.uint8)
    for opinion in opinions:
        votes += opinion > 0
    return (2 * votes > len(opinions)).astype(np.uint8)


def agreement(opinions: tuple[np.ndarray, ...], slices, reaches=None) -> dict[int, float]:
    """Per slice, the share of the voxels any opinion marks that every opinion marks (1: unanimous; 0: none in common,
    or nothing marked). Where the opinions part, the vote decided a close call: a slice worth a look.

    ``reaches``: per opinion, the (first, last) slice it can mark by design, or None for anywhere (default: all
    anywhere). Beyond its reach an opinion is not asked: its empty slice there is no disagreement (the copy, from a
    painted slice that is not the largest, stops at ``REACH_FACTOR`` while the registration and the networks go on)."""
    reaches = reaches or (None,) * len(opinions)
    shares = {}
    for k in slices:
        asked = [opinion for opinion, reach in zip(opinions, reaches)
                 if reach is None or reach[0] <= k <= reach[1]]
        union = np.zeros(opinions[0].shape[1:], dtype=bool)
        common = np.ones(opinions[0].shape[1:], dtype=bool)
        for opinion in asked:
            union |= opinion[k] > 0
            common &= opinion[k] > 0
        total = int(union.sum())
        shares[k] = float(common.sum()) / total if total else 0.0
    return shares
