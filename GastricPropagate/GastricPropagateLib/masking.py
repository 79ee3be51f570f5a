"""The Segment Editor's masking (editable area, intensity range) as arrays on the volume's grid: where the result
may be written."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import slicer
from gastric_propagate.errors import InputError

from .i18n import _
from .result_segment import resultSegmentId
from .segment_arrays import segmentArray

__all__ = ["Masking", "maskingFromSegmentEditorNode"]


@dataclass
class Masking:
    """Where the result may be written (the Segment Editor's masking, turned into arrays).

    The masking applies to the propagated slices only: the painted slices are kept exactly as drawn.

    Attributes:
        editable: bool (k, j, i) on the volume's grid, True where the result may set voxels; None = everywhere.
        intensityRange: (low, high) in the volume's units (HU); voxels outside it are never set; None = any value.
        description: human-readable summary for logs and the GUI.
    """

    editable: np.ndarray | None = None
    intensityRange: tuple[float, float] | None = None
    description: str = ""

    def isActive(self) -> bool:
        return self.editable is not None or self.intensityRange is not None

    def allowed(self, image: np.ndarray) -> np.ndarray | None:
        """bool array of the voxels the result may set, or None when nothing is masked."""
        if not self.isActive():
            return None
        allowed = np.ones(image.shape, dtype=bool)
        if self.editable is not None:
            allowed &= self.editable.astype(bool, copy=False)
        if self.intensityRange is not None:
            low, high = self.intensityRange
            allowed &= (image >= low) & (image <= high)
        return allowed


def maskingFromSegmentEditorNode(editorNode, volumeNode, segmentationNode, paintedSegmentId: str) -> Masking:
    """Turns the Segment Editor's masking settings into a ``Masking`` on the volume's grid.

    Segment-based modes count every segment except the painted one and this module's result (the result
    continues the painted segment, so neither may block it). Nothing applies unless the editor works on this
    volume and this segmentation: its settings, the HU range included, were made for what it edits.

    Raises:
        InputError: the masking names a single segment that no longer exists (never silently unmasked).
    """
    if editorNode is None or segmentationNode is None or editorNode.GetSegmentationNode() is not segmentationNode:
        return Masking()
    # "Source" is the current name; older Slicers call it "Master" (as for the intensity mask below).
    sourceVolume = getattr(editorNode, "GetSourceVolumeNode", None) or getattr(editorNode, "GetMasterVolumeNode")
    if sourceVolume() is not volumeNode:
        return Masking()
    node = slicer.vtkMRMLSegmentationNode
    editable = None
    parts = []
    mode = editorNode.GetMaskMode()
    segmentation = segmentationNode.GetSegmentation()
    excluded = {paintedSegmentId, resultSegmentId(segmentationNode)}
    others = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    others = [s for s in others if s not in excluded]
    displayNode = segmentationNode.GetDisplayNode()

    def visible(segmentId):
        return displayNode is None or displayNode.GetSegmentVisibility(segmentId)

    def union(segmentIds):
        mask = np.zeros(tuple(reversed(volumeNode.GetImageData().GetDimensions())), dtype=bool)
        for segmentId in segmentIds:
            mask |= segmentArray(volumeNode, segmentationNode, segmentId) > 0
        return mask

    if mode == node.EditAllowedInsideAllSegments:
        editable, parts = union(others), [_("inside all other segments")]
    elif mode == node.EditAllowedInsideVisibleSegments:
        editable, parts = union([s for s in others if visible(s)]), [_("inside visible segments")]
    elif mode == node.EditAllowedOutsideAllSegments:
        editable, parts = ~union(others), [_("outside all other segments")]
    elif mode == node.EditAllowedOutsideVisibleSegments:
        editable = ~union([s for s in others if visible(s)])
        parts = [_("outside visible segments")]
    elif mode == node.EditAllowedInsideSingleSegment:
        maskSegmentId = editorNode.GetMaskSegmentID()
        if not maskSegmentId or segmentation.GetSegment(maskSegmentId) is None:
            raise InputError(_(
                "The Segment Editor's masking allows edits only inside one segment, but that segment "
                "({id}) no longer exists in '{seg}'. In the Segment Editor's Masking section choose an "
                "existing segment for 'Editable area' (or 'Everywhere'), or untick 'Masking' (respect Segment "
                "Editor masking) in this module's Options, then run again.").format(
                    id=maskSegmentId or _("none selected"), seg=segmentationNode.GetName()))
        editable = union([maskSegmentId])
        parts = [_("inside segment '{name}'").format(name=segmentation.GetSegment(maskSegmentId).GetName())]
    intensityRange = None
    useIntensity = getattr(editorNode, "GetSourceVolumeIntensityMask", None) or \
        getattr(editorNode, "GetMasterVolumeIntensityMask")
    rangeGetter = getattr(editorNode, "GetSourceVolumeIntensityMaskRange", None) or \
        getattr(editorNode, "GetMasterVolumeIntensityMaskRange")
    if useIntensity():
        low, high = rangeGetter()
        intensityRange = (float(low), float(high))
        parts.append(_("intensity {low:g} to {high:g}").format(low=low, high=high))
    return Masking(editable=editable, intensityRange=intensityRange, description=", ".join(parts))
