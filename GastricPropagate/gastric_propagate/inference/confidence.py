"""Per-slice confidence: how far a radiologist can trust each propagated slice, in [0, 1].

The networks' own probabilities are no guide: they do not track per-slice quality. Two things do, and both can be
read off the result:
    - distance: every step of a chain can add error, and the ends of a tumour are the hardest slices; the
      distance from the nearest painted slice is taken relative to the painted equivalent diameter, so a
      slice 1 cm away counts for more on a 1 cm nodule than on a 6 cm mass;
    - continuity: a cross-section that overlaps little with its neighbour toward the painted slice changed
      shape abruptly (a leak, a jump, or the tumour's end).
confidence = Dice(slice, its neighbour toward the painted slice) x exp(-distance / painted diameter).
With the vote (``consensus.py``), a third thing: whether its three opinions agree on the slice. The confidence is
then the geometric mean of the above and the opinions' agreement (the share of the voxels any of them marks that all
of them mark, among the opinions that can reach the slice: ``consensus.agreement``). It helps find the slices a
radiologist would redraw (how it was chosen: docs/decisions.md).
Painted slices are 1.
"""

from __future__ import annotations

import math

import numpy as np


def slice_confidence(mask: np.ndarray, anchor_slices: list[int], slices: range, spacing_xyz,
                     agreement: dict[int, float] | None = None) -> dict[int, float]:
    """Confidence of each CT slice in ``slices`` for a (z, y, x) result ``mask`` with the given painted slices;
    ``agreement`` (slice -> share in [0, 1]) is the vote's agreement, when the result is a vote."""
    pixel_area = float(spacing_xyz[0]) * float(spacing_xyz[1])
    largest_area = max(float((mask[k] > 0).sum()) for k in anchor_slices) * pixel_area
    diameter = max(2.0 * math.sqrt(largest_area / math.pi), 1e-6)
    confidence = {}
    for k in slices:
        nearest = min(anchor_slices, key=lambda a: abs(a - k))
        if k == nearest:
            confidence[k] = 1.0
            continue
        toward = k - 1 if k > nearest else k + 1
        here, there = mask[k] > 0, mask[toward] > 0
        total = int(here.sum()) + int(there.sum())
        continuity = 2.0 * float(np.logical_and(here, there).sum()) / total if total else 0.0
        distance = abs(k - nearest) * float(spacing_xyz[2])
        value = continuity * math.exp(-distance / diameter)
        if agreement is not None:
            value = math.sqrt(value * agreement.get(k, 0.0))
        confidence[k] = round(value, 4)
    return confidence
