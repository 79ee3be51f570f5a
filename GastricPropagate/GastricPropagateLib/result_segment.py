"""What identifies the segment this module wrote: its tag (and, for older scenes, its translated name)."""

from __future__ import annotations

import vtk

from .i18n import _

__all__ = ["RESULT_TAG", "RESULT_TAG_VALUE", "isResultSegment", "resultSegmentId", "resultSegmentName"]

#: Segment tag that marks the segment this module wrote (the name alone could be typed by a user).
RESULT_TAG = "GastricPropagate.Role"
RESULT_TAG_VALUE = "propagated"


def resultSegmentName() -> str:
    """Name of the segment the module writes (translated)."""
    return _("Tumour (propagated)")


def isResultSegment(segment) -> bool:
    value = vtk.reference("")
    return bool(segment.GetTag(RESULT_TAG, value)) and str(value) == RESULT_TAG_VALUE


def resultSegmentId(segmentationNode) -> str | None:
    """ID of the segment this module wrote into ``segmentationNode`` (tagged, or by name), or None."""
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
