"""What the panel shows a radiologist after a run: one row per visited slice, the low ones flagged.

Pure Python on a ``RunResult`` (no MRML, no Qt): the Widget only copies these rows into its table, so what is
flagged, and why, is tested headless (``Testing/Python/slicer_layer/test_review.py``).
"""

from __future__ import annotations

import math

from dataclasses import dataclass

from gastric_propagate.data.annotation import describe_slices
from gastric_propagate.inference.advice import (CUT_AT_REACH, ENDED_WHILE_FOLLOWED, LARGER_NEIGHBOUR, NOT_AXIAL,
                                               RESULT_AT_VOLUME_EDGE)
from gastric_propagate.inference.result import REVIEW_CONFIDENCE

from .i18n import _

__all__ = ["LEAST_CONFIDENT_COLOUR", "REVIEW_COLOUR", "ReviewRow", "adviceSentences", "leastConfidentRow",
           "leastConfidentSlice", "reviewRows",
           "reviewSummary"]

#: Background (RGB) of the list rows flagged for review, and of the least confident slice's row.
REVIEW_COLOUR = (255, 220, 150)
LEAST_CONFIDENT_COLOUR = (255, 170, 120)


@dataclass(frozen=True)
class ReviewRow:
    """One slice of the result as the panel lists it.

    Attributes:
        k: the volume's K index.
        confidence: the engine's confidence in [0, 1] (1.0 for an anchor: drawn, not guessed).
        role: "painted" (the input's painted slice), "corrected" (a slice the reader corrected, an anchor of a
            re-propagation) or "propagated".
        toReview: the engine asks for a look (``RunResult.slices_to_review``: below the engine's review
            threshold, cut back after a leak, or found only by the proposer's other orientations), or its advice
            names the slice (``advised``).
        leastConfident: the slice "Jump to least confident slice" goes to.
        advised: why the engine's advice names this slice (the row's tooltip), or "" when it does not: the slice
            where the result stops at its reach or ends while the registration still follows the tumour, or one
            that looks larger than the painted slice. Such a row is flagged too, so that the reader finds it in the
            list and double-clicks to it.
        reasons: why the engine flags the slice (the report's ``review_reasons``: "low_confidence", "cut_back",
            "found_when_turned"), said in the row's tooltip.
    """

    k: int
    confidence: float
    role: str
    toReview: bool
    leastConfident: bool
    advised: str = ""
    reasons: tuple[str, ...] = ()

    def colour(self) -> tuple[int, int, int] | None:
        """The row's background in the panel's list (RGB), or None for the default."""
        if self.leastConfident:
            return LEAST_CONFIDENT_COLOUR
        return REVIEW_COLOUR if self.toReview else None

    def toolTip(self) -> str:
        """Why the row is flagged ("" when it is not)."""
        if not self.toReview:
            return ""
        sentences = [self.advised] if self.advised else []
        for reason in self.reasons:
            if reason == "low_confidence":
                shown = math.floor(self.confidence * 100) / 100  # 0.2951 is not "0.30, below 0.3"
                sentences.append(_("Confidence {confidence:.2f}, below {threshold:g}: far from the painted slice, an "
                                   "outline that changes from the slice before it, or the networks and the "
                                   "registration disagreeing here; check it.").format(confidence=shown,
                                                                                      threshold=REVIEW_CONFIDENCE))
            elif reason == "cut_back":
                sentences.append(_("The result was cut back here after it ran into the tissue beside the tumour: check "
                                   "the outline."))
            elif reason == "found_when_turned":
                sentences.append(_("Found only when the network saw the slice flipped or rotated: check that the "
                                   "tumour is there."))
        return " ".join(sentences) or _("Flagged for review: check this slice.")

    def label(self) -> str:
        """The slice column's text: the K index, with the role of an anchor."""
        if self.role == "painted":
            return _("{k} (painted)").format(k=self.k)
        if self.role == "corrected":
            return _("{k} (corrected)").format(k=self.k)
        return str(self.k)


def leastConfidentSlice(result, writtenSlices=None) -> int | None:
    """The least confident propagated slice of ``result`` that the written segment holds, or None.

    ``writtenSlices``: the K slices the result segment holds as written, where the Segment Editor's masking may
    have emptied some of the engine's (None: all of them); "Jump to least confident slice" never lands on an empty one.
    """
    ranked = result.least_confident_slices(len(result.slice_confidence))
    return next((k for k in ranked if writtenSlices is None or k in writtenSlices), None)


def reviewRows(result, correctedSlices=(), writtenSlices=None) -> list[ReviewRow]:
    """The visited slices of ``result`` (a ``run_output.RunResult``) in slice order, flagged for review.

    ``correctedSlices``: anchors that came from the reader's corrections (``PreparedInput.correctedSlices``); the
    other anchors are the painted slices. ``writtenSlices``: as for ``leastConfidentSlice``; the slices the masking
    emptied are not listed (the list describes the segment the reader sees).
    """
    corrected = {int(k) for k in correctedSlices}
    anchors = {int(k) for k in result.anchor_slices}
    toReview = {int(k) for k in result.slices_to_review}
    reasons = {int(k): tuple(v) for k, v in result.review_reasons.items()}
    least = {leastConfidentSlice(result, writtenSlices)}
    advised = _advisedSlices(result.advice)
    rows = []
    for k in sorted(set(result.slice_confidence) | anchors):
        if writtenSlices is not None and k not in writtenSlices:
            continue
        if k in corrected:
            role = "corrected"
        elif k in anchors:
            role = "painted"
        else:
            role = "propagated"
        confidence = float(result.slice_confidence.get(k, 1.0))
        note = advised.get(k, "") if k not in anchors else ""
        rows.append(ReviewRow(k=k, confidence=confidence, role=role,
                              toReview=(k in toReview or bool(note)) and k not in anchors,
                              leastConfident=k in least, advised=note, reasons=reasons.get(k, ())))
    return rows


def _advisedSlices(advice: list[dict]) -> dict[int, str]:
    """Slice -> the tooltip of its row, for the advice that names a slice to look at (each reason, when several
    name the same slice)."""
    reasons = {
        CUT_AT_REACH: _("The result stops here, as far as it may reach: check whether the tumour goes on beyond this "
                        "slice."),
        ENDED_WHILE_FOLLOWED: _("The result ends here, but the registration still follows the tumour: check whether "
                                "it goes on beyond this slice."),
        LARGER_NEIGHBOUR: _("This slice looks larger than the painted one: check which is the largest "
                            "cross-section."),
        RESULT_AT_VOLUME_EDGE: _("The scan ends here, with the result still wide: check that the CT covers the "
                                 "whole tumour."),
    }
    notes: dict[int, list[str]] = {}
    for item in advice:
        if item.get("kind") in reasons:
            notes.setdefault(int(item["slice"]), []).append(reasons[item["kind"]])
    return {k: " ".join(texts) for k, texts in notes.items()}


def leastConfidentRow(rows: list[ReviewRow]) -> int | None:
    """The list's row of the least confident slice, which the panel scrolls into view after a run (a long tumour's
    list holds more rows than the panel shows); None when no slice is marked."""
    return next((index for index, row in enumerate(rows) if row.leastConfident), None)

#: How many flagged slices the summary line names; the list shows them all.
SUMMARY_SLICES = 8


def reviewSummary(rows: list[ReviewRow]) -> str:
    """One line for the panel: how many slices to review, and which."""
    flagged = [row.k for row in rows if row.toReview]
    if not flagged:
        return _("No slice flagged for review (all propagated slices have confidence {threshold:g} or more).").format(
            threshold=REVIEW_CONFIDENCE)
    named = describe_slices(flagged[:SUMMARY_SLICES])
    if len(flagged) <= SUMMARY_SLICES:
        return _("{count} slice(s) to review: K = {slices}.").format(count=len(flagged), slices=named)
    return _("{count} slices to review: K = {slices} and {more} more (the list below).").format(
        count=len(flagged), slices=named, more=len(flagged) - SUMMARY_SLICES)


def adviceSentences(advice: list[dict]) -> list[str]:
    """The engine's advice (``RunResult.advice``) as the panel says it, in the reader's language where the kind is
    known (the engine words it in English, naming its command-line option); any other kind as the engine worded it."""
    sentences = []
    for item in advice:
        if item.get("kind") == LARGER_NEIGHBOUR:
            sentences.append(_(
                "Slice {slice} looks {ratio:.1f} times as large as the painted slice {painted}: the painted slice may "
                "not be the tumour's largest cross-section. If it is not, untick 'is the largest cross-section' and "
                "click Propagate again.").format(slice=item["slice"], ratio=float(item["ratio"]),
                                                 painted=item["painted_slice"]))
        elif item.get("kind") == CUT_AT_REACH:
            sentences.append(_cutAtReachSentence(item))
        elif item.get("kind") == NOT_AXIAL:
            sentences.append(_(
                "This volume's slices are {orientation}, not axial: the result was propagated along them, and the "
                "networks learned axial slices. Check it closely, or reorient the volume (Orient Scalar Volume "
                "module, orientation Axial), paint on the new volume and run again.").format(
                    orientation={"sagittal": _("sagittal"), "coronal": _("coronal")}.get(
                        item.get("orientation"), item.get("orientation"))))
        elif item.get("kind") == ENDED_WHILE_FOLLOWED:
            sentences.append(_(
                "The result ends at slice {slice}, but the registration still follows a cross-section of "
                "{followed:.0%} of the painted one there").format(
                    slice=item["slice"], followed=float(item["registration_share"])) + _mayGoOnBeyond(item["slice"],
                                                                                        item.get("direction", "up")))
        else:
            sentences.append(str(item.get("sentence", "")))
    return sentences


def _cutAtReachSentence(item: dict) -> str:
    """``advice.CUT_AT_REACH`` in the panel's words: why the tumour may go on (the result's own cross-section there, or
    the registration's), and what to do with the panel's own controls."""
    figures = dict(slice=item["slice"], reach=float(item["reach"]), painted=item["painted_slice"],
                   share=float(item["share"]))
    if item.get("registration_share") is None:
        why = _("The result stops at slice {slice}, as far as it may reach ({reach:g} painted diameters from the "
                "painted slice {painted}), and still covers {share:.0%} of the painted cross-section there").format(
                    **figures)
    else:
        why = _("The result stops at slice {slice}, as far as it may reach ({reach:g} painted diameters from the "
                "painted slice {painted}), where the registration still follows a cross-section of {followed:.0%} of "
                "the painted one (the result covers {share:.0%})").format(
                    followed=float(item["registration_share"]), **figures)
    return why + _mayGoOnBeyond(item["slice"], item.get("direction", "up"))


def _mayGoOnBeyond(k: int, direction: str) -> str:
    """The end of the panel's sentences on a result that may end short: what it means, and its controls for it; the
    side is named, since both ends can be one slice (slices thicker than the reach)."""
    return _(": the tumour may go on beyond it. Check the slices beyond slice {slice} (K {sign} {slice}); if it does, "
             "paint it on a slice further out in 'Tumour (propagated)' and click 'Re-propagate from corrected "
             "slices'.").format(slice=k, sign=">" if direction == "up" else "<")
