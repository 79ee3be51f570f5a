"""What identifies the segment this module wrote: its tags while it keeps the name it was given (and, for older
scenes, its translated name)."""

from __future__ import annotations

import vtk

from gastric_propagate.data.annotation import describe_slices

from .i18n import _

__all__ = ["PAINTED_SEGMENT_ID_TAG", "PAINTED_SEGMENT_NAME_TAG", "RESULT_TAG", "RESULT_TAG_VALUE", "WRITTEN_NAME_TAG",
           "isResultSegment", "paintedSegmentOf", "replaceQuestion", "resultSegmentId", "resultSegmentName"]

#: Segment tag that marks the segment this module wrote (the name alone could be typed by a user).
RESULT_TAG = "GastricPropagate.Role"
RESULT_TAG_VALUE = "propagated"
#: The name the module gave the segment when it wrote it. Renaming the segment is how a user keeps a result (the
#: panel and the README say so): a tagged segment whose name differs is the user's, never replaced. Comparing with
#: this tag, not with ``resultSegmentName()``, keeps the result found after Slicer's language is changed.
WRITTEN_NAME_TAG = "GastricPropagate.WrittenName"
#: The ID and name of the painted segment the result was propagated from (a re-propagation corrects that result only).
PAINTED_SEGMENT_ID_TAG = "GastricPropagate.PaintedSegmentID"
PAINTED_SEGMENT_NAME_TAG = "GastricPropagate.PaintedSegmentName"


def resultSegmentName() -> str:
    """Name of the segment the module writes (translated)."""
    return _("Tumour (propagated)")


def _tag(segment, name: str) -> str | None:
    value = vtk.reference("")
    return str(value) if segment.GetTag(name, value) else None


def writtenRecord(segment) -> str | None:
    """The record of the voxels this module wrote into ``segment`` (``corrections.WRITTEN_SLICES_TAG``), or None.
    A Segment Editor Undo of a run that replaced a result brings the earlier run's record back with its voxels."""
    from .corrections import WRITTEN_SLICES_TAG

    return _tag(segment, WRITTEN_SLICES_TAG)


def isResultSegment(segment) -> bool:
    """Whether ``segment`` is the one this module wrote: tagged, and still named as the module named it (a result
    of an older version, without the name tag: named ``resultSegmentName()``)."""
    if _tag(segment, RESULT_TAG) != RESULT_TAG_VALUE:
        return False
    written = _tag(segment, WRITTEN_NAME_TAG)
    if written is not None:
        return segment.GetName() == written
    # An older version's result: its name in this language, or the untranslated one it may have been written with.
    return segment.GetName() in (resultSegmentName(), "Tumour (propagated)")


def paintedSegmentOf(segment) -> tuple[str, str] | None:
    """(ID, name) of the painted segment ``segment`` was propagated from, as recorded when it was written; None for a
    segment without that record (made by hand, or by an older version)."""
    segmentId = _tag(segment, PAINTED_SEGMENT_ID_TAG)
    return None if segmentId is None else (segmentId, _tag(segment, PAINTED_SEGMENT_NAME_TAG) or segmentId)


def resultSegmentId(segmentationNode) -> str | None:
    """ID of the segment this module wrote into ``segmentationNode`` (``isResultSegment``, else the first segment
    named ``resultSegmentName()``: an older version's untagged result), or None."""
    if segmentationNode is None:
        return None
    segmentation = segmentationNode.GetSegmentation()
    byName = None
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        if isResultSegment(segment):
            return segmentation.GetNthSegmentID(index)
        if byName is None and segment.GetName() == resultSegmentName():
            byName = segmentation.GetNthSegmentID(index)
    return byName


def sourceSegmentName(segmentation, segment) -> str | None:
    """The current name of the painted segment ``segment`` (a result) was propagated from, in ``segmentation``;
    None when it has no record of one, or that segment was deleted (its recorded name may be stale: renamed)."""
    source = paintedSegmentOf(segment)
    painted = segmentation.GetSegment(source[0]) if source is not None else None
    return painted.GetName() if painted is not None else None


def replaceQuestion(segment, segmentation, editedSlices=(), paintedSegmentId: str | None = None) -> str:
    """What the panel asks before a new result replaces ``segment`` (the one ``resultSegmentId`` found): a result of
    an earlier run says which painted segment it came from; a segment that only has the result's name (made by hand,
    or by an older version) is called that, not "from an earlier run". ``editedSlices``: the K slices of it that are
    the reader's corrections, which the new result would discard; ``paintedSegmentId``: the selected painted segment
    (Re-propagate keeps corrections only of a result propagated from it); ``segmentation``: the one holding
    ``segment``, where the other painted segment's current name is found."""
    question = _replaceQuestion(segment)
    if editedSlices:
        source = paintedSegmentOf(segment)
        sourceName = sourceSegmentName(segmentation, segment)
        if source is None or source[0] == paintedSegmentId:
            keep = _("'Re-propagate from corrected slices' keeps them all as anchors")
        elif sourceName is None:  # the lesion it came from was deleted: it can no longer be re-propagated
            keep = _("rename '{name}' to keep it").format(name=segment.GetName())
        else:
            keep = _("rename '{name}' to keep it, or select '{source}' as the painted segment to re-propagate "
                     "it").format(name=segment.GetName(), source=sourceName)
        question += " " + _(
            "It holds your corrections on slice(s) K = {slices}, which the new result discards. To keep them, click "
            "Cancel ({keep}).").format(slices=describe_slices(editedSlices), keep=keep)
    return question


def _replaceQuestion(segment) -> str:
    name = segment.GetName()
    if not isResultSegment(segment):
        return _("The segmentation already has a segment '{name}' that this module did not mark as its result (made "
                 "by hand, or by an older version of the module). Replace it with the new result? (Rename it first "
                 "to keep it.)").format(name=name)
    source = paintedSegmentOf(segment)
    if source is not None:
        return _("The segmentation already has a segment '{name}' from an earlier run, propagated from '{painted}'. "
                 "Replace it with the new result? (Rename that segment first to keep it.)").format(
                     name=name, painted=source[1])
    return _("The segmentation already has a segment '{name}' from an earlier run. Replace it with the new result? "
             "(Rename that segment first to keep it.)").format(name=name)
