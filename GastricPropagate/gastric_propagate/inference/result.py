"""What one segmentation run produced (``SegmentationResult``) and which of its slices are worth a review."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gastric_propagate.data.annotation import painted_slices
from gastric_propagate.inference.advice import Advice

# Slices whose confidence is below this are flagged for review: the threshold that best finds the slices a
# radiologist would redraw (Dice < 0.7) without listing half the result (how it was chosen: docs/decisions.md).
REVIEW_CONFIDENCE = 0.3
#: Why a slice is flagged for review (``SegmentationResult.review_reasons``, the report's ``review_reasons``).
REVIEW_REASONS = ("low_confidence", "cut_back", "found_when_turned")


def slice_span(mask: np.ndarray | None) -> tuple[int, int] | None:
    """First and last axial index holding voxels of ``mask``; None for no mask or an empty one."""
    ks = painted_slices(mask) if mask is not None else []
    return (ks[0], ks[-1]) if ks else None


@dataclass
class SegmentationResult:
    """What one run produced, on the input image's voxel grid.

    Attributes:
        mask: uint8 (z, y, x), 1 = tumour; the anchor slices equal the annotation exactly.
        proposer_mask: uint8 (z, y, x), the proposer's coarse mask before refinement (cut, like ``mask``, to
            what connects to the painted voxels).
        network_mask: uint8 (z, y, x), the networks' mask (proposer, then refiner when used) before the consensus;
            equal to ``mask`` when no consensus was taken.
        consensus: whether ``mask`` is the consensus of the networks, registration and the copied outline.
        cut_back: the slices whose leak was cut back to the previous outline (their confidence is lowered).
        found_when_turned: the slices where the proposer found the tumour ended and its other orientations found a
            cross-section, so that its chain went on (``StopRule.confirm_end_views``): a bistable answer.
        advice: what the reader should know before trusting the result (e.g. that the painted slice looks like it is
            not the largest cross-section, or that it is the volume's first or last slice), one ``Advice`` each;
            empty when there is nothing to say.
        slice_confidence: axial index -> confidence in [0, 1] for every slice the propagation visited.
        anchor_slices: the painted slices, kept as drawn.
        stop_reasons: "up" / "down" -> why the propagation ended in that direction.
        seconds: wall time of the whole run (validation, both networks, paste-back).
        device: the device the networks ran on ("cpu", "cuda:0"; "cpu" under ONNX Runtime), with their precision
            when it is not float32 ("cpu (int8)"; ``pipeline.Segmenter.device_label``).
    """

    mask: np.ndarray
    proposer_mask: np.ndarray
    slice_confidence: dict[int, float]
    anchor_slices: list[int]
    stop_reasons: dict[str, str]
    seconds: float
    device: str
    timings: dict[str, float] = field(default_factory=dict)
    network_mask: np.ndarray | None = None
    consensus: bool = False
    cut_back: list[int] = field(default_factory=list)
    advice: list[Advice] = field(default_factory=list)
    found_when_turned: list[int] = field(default_factory=list)

    def slice_range(self) -> tuple[int, int] | None:
        """First and last axial index of the tumour in the result, or None when it is empty."""
        return slice_span(self.mask)

    def slices_to_review(self) -> list[int]:
        """The non-anchor slices whose confidence is below ``REVIEW_CONFIDENCE``, every slice cut back after a leak,
        and every slice only the proposer's other orientations found, in slice order."""
        return sorted({k for k, c in self.slice_confidence.items()
                       if c < REVIEW_CONFIDENCE and k not in self.anchor_slices} | set(self.cut_back)
                      | set(self.found_when_turned))

    def review_reasons(self) -> dict[int, list[str]]:
        """Each slice of ``slices_to_review`` -> why it is flagged: "low_confidence", "cut_back" and/or
        "found_when_turned" (``REVIEW_REASONS``)."""
        reasons: dict[int, list[str]] = {}
        for k in self.slices_to_review():
            flags = (k not in self.anchor_slices and self.slice_confidence.get(k, 1.0) < REVIEW_CONFIDENCE,
                     k in self.cut_back, k in self.found_when_turned)
            reasons[k] = [name for name, flagged in zip(REVIEW_REASONS, flags) if flagged]
        return reasons

    def least_confident_slices(self, count: int) -> list[int]:
        """The ``count`` visited non-anchor slices with the lowest confidence, least confident first."""
        candidates = [(c, k) for k, c in self.slice_confidence.items() if k not in self.anchor_slices]
        return [k for _, k in sorted(candidates)[:count]]
