"""Which slices of the result the reader corrected, and how they become anchors of a new propagation.

When the module writes its result segment it records, in a segment tag, a digest of every non-empty K slice it
wrote (``sliceDigests``). The tag is saved with the scene, so corrections are found after a reload too. Later,
``planCorrections`` compares the segment's current voxels with that record:

- a slice that now holds other voxels (edited, or newly drawn) is a **corrected slice**: an anchor of the next
  run, kept exactly as the reader left it; slices corrected before (recorded in another tag) stay anchors;
- a slice the reader **erased** beyond every anchor says "the tumour ends before this slice": it becomes the
  next run's lowest or highest slice limit. An erased slice between anchors cannot be expressed to the engine
  (it would fill it again): the re-propagation is refused, saying so, never run with it silently dropped;
- the written result's first or last slice, **edited** with nothing drawn beyond it, says "the tumour ends here":
  it becomes the limit on that side.

Pure numpy: the MRML side (reading the segment, the tags) is ``scene_input.prepareCorrections``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from gastric_propagate.data.annotation import painted_slices

__all__ = [
    "CORRECTED_SLICES_TAG",
    "CorrectionPlan",
    "ERASED_LIMITS_TAG",
    "WRITTEN_GEOMETRY_TAG",
    "WRITTEN_SLICES_TAG",
    "changedBetween",
    "changedSlices",
    "formatGeometry",
    "formatLimits",
    "formatSliceList",
    "parseLimits",
    "parseSliceList",
    "planCorrections",
    "sliceDigests",
    "writtenOnOtherGeometry",
]

#: Segment tag: the shape and a digest of each non-empty K slice the module wrote into its result segment.
WRITTEN_SLICES_TAG = "GastricPropagate.WrittenSlices"
#: Segment tag: the first three rows of the IJK-to-RAS matrix of the volume the segment was written on, then those of
#: its IJK-to-world matrix (through the parent transforms). On another volume of the same size (another series of the
#: patient, the CT resampled) every slice would read as corrected. One of the two still matches after the reader
#: moves a transform both are under (the local one) or hardens it (the world one); a resample matches neither.
WRITTEN_GEOMETRY_TAG = "GastricPropagate.WrittenGeometry"
#: Segment tag: the K slices that were the reader's corrections (anchors) in the run that wrote the segment.
CORRECTED_SLICES_TAG = "GastricPropagate.CorrectedSlices"
#: Segment tag: "low,high", the slice limits the reader's erasing set in earlier rounds (either may be empty): they
#: hold in later rounds too, until the reader draws beyond them.
ERASED_LIMITS_TAG = "GastricPropagate.ErasedLimits"


def formatGeometry(*matrices) -> str:
    """``WRITTEN_GEOMETRY_TAG``'s text: each matrix's first three rows, space-separated, one after the other."""
    return " ".join(f"{float(value):.9g}" for matrix in matrices
                    for value in np.asarray(matrix, dtype=float)[:3].ravel())


def writtenOnOtherGeometry(text: str, *matrices) -> bool:
    """Whether the recorded geometry ``text`` (``formatGeometry`` of the same kinds of matrix, in order) differs from
    every one of ``matrices`` by more than 0.001 (mm, or per voxel step); False for a missing or unreadable record (a
    result written before it was kept: the grid's size is checked)."""
    try:
        written = np.array([float(value) for value in text.split()], dtype=float)
    except ValueError:
        return False
    if written.size == 0 or written.size % 12:
        return False
    return not any(np.allclose(block.reshape(3, 4), np.asarray(matrix, dtype=float)[:3], rtol=0.0, atol=1e-3)
                   for block, matrix in zip(written.reshape(-1, 12), matrices))


def _digest(sliceMask: np.ndarray) -> str:
    return format(zlib.crc32(np.packbits(np.asarray(sliceMask, dtype=bool), axis=None).tobytes()), "08x")


def sliceDigests(mask: np.ndarray) -> str:
    """``"K,J,I;k:digest,k:digest,..."`` for the non-empty K slices of a (k, j, i) mask."""
    mask = np.asarray(mask)
    parts = [f"{k}:{_digest(mask[k] > 0)}" for k in painted_slices(mask) if (mask[k] > 0).any()]
    return ",".join(str(n) for n in mask.shape) + ";" + ",".join(parts)


def _parseDigests(text: str) -> tuple[tuple[int, ...], dict[int, str]]:
    shapeText, _, sliceText = text.partition(";")
    shape = tuple(int(n) for n in shapeText.split(","))
    digests = {}
    for item in filter(None, sliceText.split(",")):
        k, _, digest = item.partition(":")
        digests[int(k)] = digest
    return shape, digests


def _asMask(array) -> np.ndarray:
    """``array > 0``; a boolean array as it is (a whole CT's grid is not copied again)."""
    array = np.asarray(array)
    return array if array.dtype == bool else array > 0


def changedSlices(written: str, current: np.ndarray) -> tuple[list[int], list[int]]:
    """(slices now holding other voxels than written, slices written non-empty and now empty), in slice order.

    Raises:
        ValueError: ``current`` is not on the grid the record was written for.
    """
    return changedBetween(written, sliceDigests(_asMask(current)))


def changedBetween(written: str, now: str) -> tuple[list[int], list[int]]:
    """``changedSlices`` from the segment's ``sliceDigests`` as it is ``now`` (digested once already)."""
    shape, digests = _parseDigests(written)
    nowShape, nowDigests = _parseDigests(now)
    if nowShape != shape:
        raise ValueError(f"the segment is on a {nowShape} grid, the record on {shape}")
    edited = sorted(k for k, digest in nowDigests.items() if digests.get(k) != digest)
    erased = sorted(k for k in digests if k not in nowDigests)
    return edited, erased


def formatSliceList(slices) -> str:
    return ",".join(str(int(k)) for k in sorted(set(slices)))


def parseSliceList(text: str) -> list[int]:
    return sorted({int(k) for k in text.split(",") if k.strip()})


def formatLimits(low: int | None, high: int | None) -> str:
    return ",".join("" if k is None else str(int(k)) for k in (low, high))


def parseLimits(text: str) -> tuple[int | None, int | None]:
    """``formatLimits``'s text back; (None, None) for an empty or unreadable tag."""
    parts = text.split(",")
    try:
        low, high = (int(part) if part.strip() else None for part in parts) if len(parts) == 2 else (None, None)
    except ValueError:
        return None, None
    return low, high


@dataclass
class CorrectionPlan:
    """What a re-propagation starts from.

    Attributes:
        anchors: K slices of the result segment to keep exactly (corrected now or in an earlier round).
        newlyCorrected: the slices corrected since the segment was written (a subset of ``anchors``).
        minSlice, maxSlice: limits set by slices erased beyond every anchor, or by the result's end slice edited
            with nothing drawn beyond it (None: no limit).
        erasedBetweenAnchors: erased slices between anchors (the engine cannot be told "nothing here" between them).
    """

    anchors: list[int]
    newlyCorrected: list[int]
    minSlice: int | None = None
    maxSlice: int | None = None
    erasedBetweenAnchors: list[int] = field(default_factory=list)

    def changesAnything(self, previousLimits: tuple[int | None, int | None] = (None, None)) -> bool:
        """Something was corrected, or erased, since the segment was written (limits kept from earlier rounds are
        not a change)."""
        return bool(self.newlyCorrected) or (self.minSlice, self.maxSlice) != tuple(previousLimits)


def planCorrections(paintedSlices, current: np.ndarray, written: str, previouslyCorrected=(),
                    previousLimits: tuple[int | None, int | None] = (None, None)) -> CorrectionPlan:
    """The anchors and limits of a re-propagation from the result segment's current voxels.

    Args:
        paintedSlices: K slices of the painted segment (anchors in any case).
        current: (k, j, i) result segment as it is now.
        written: the ``WRITTEN_SLICES_TAG`` value the module stored when it wrote the segment.
        previouslyCorrected: the ``CORRECTED_SLICES_TAG`` slices (still anchors while they hold voxels).
        previousLimits: the ``ERASED_LIMITS_TAG`` limits of earlier rounds: they still hold, the tighter of them and
            this round's, except on a side where an anchor now lies beyond them (the reader drew there).
    """
    current = _asMask(current)
    edited, erased = changedSlices(written, current)
    nonEmpty = set(int(k) for k in np.flatnonzero(current.reshape(len(current), -1).any(axis=1)))
    anchors = sorted((set(edited) | {int(k) for k in previouslyCorrected}) & nonEmpty)
    allAnchors = set(anchors) | {int(k) for k in paintedSlices}
    plan = CorrectionPlan(anchors=anchors, newlyCorrected=edited)
    if allAnchors:
        low, high = min(allAnchors), max(allAnchors)
        below = [k for k in erased if k < low]
        above = [k for k in erased if k > high]
        lows = [max(below) + 1] if below else []
        highs = [min(above) - 1] if above else []
        if previousLimits[0] is not None and previousLimits[0] <= low:
            lows.append(int(previousLimits[0]))
        if previousLimits[1] is not None and previousLimits[1] >= high:
            highs.append(int(previousLimits[1]))
        # The written result's first or last slice, edited, with nothing drawn beyond it: the tumour ends there as
        # the reader drew it (propagated again, the result went on one or two slices past 6 of 12 such ends on real
        # lesions, never rightly: docs/method.md). A slice drawn beyond lets it go on from there.
        _shape, written_digests = _parseDigests(written)
        ends = {min(written_digests), max(written_digests)} if written_digests else set()
        lows += [low] if low in ends and low in edited else []
        highs += [high] if high in ends and high in edited else []
        plan.minSlice = max(lows) if lows else None
        plan.maxSlice = min(highs) if highs else None
        plan.erasedBetweenAnchors = [k for k in erased if low <= k <= high]
    else:
        plan.erasedBetweenAnchors = list(erased)
    return plan
