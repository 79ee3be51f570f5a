"""The checks on the inputs before anything is read: the volume, the segmentation and its segment, the
segmentation's representation, and the segment's image grid. Each refusal is an InputError that says what to do."""

from __future__ import annotations

import slicer
from gastric_propagate.errors import InputError
from gastric_propagate.data.validation import CT_SPACING_RANGE_MM, spacing_in_ct_range

from .i18n import _
from .result_segment import isResultSegment, resultSegmentId
from .segment_arrays import (binaryLabelmapName, isLabelmapSource, latticeDifference, latticeReordered,
                             otherSpacingOnly, setSourceRepresentationName, sourceRepresentationName)

__all__ = ["checkRepresentation", "checkSegmentGrid", "checkSegmentation", "checkVolume"]


def checkVolume(volumeNode) -> None:
    if volumeNode is None:
        raise InputError(_("No CT volume is selected. Load the CT and select it as the input volume."))
    if volumeNode.IsA("vtkMRMLLabelMapVolumeNode") or not volumeNode.IsA("vtkMRMLScalarVolumeNode"):
        raise InputError(_(
            "'{volume}' is not a CT scalar volume (it is a {kind}). Select the CT volume as input.").format(
                volume=volumeNode.GetName(), kind=volumeNode.GetClassName()))
    imageData = volumeNode.GetImageData()
    if imageData is None or imageData.GetNumberOfPoints() == 0:
        raise InputError(_("The volume '{volume}' has no voxels. Load the CT again.").format(
            volume=volumeNode.GetName()))
    if imageData.GetNumberOfScalarComponents() != 1:
        raise InputError(_(
            "The volume '{volume}' has {n} components per voxel (a colour or vector image). Select a "
            "single-component CT volume.").format(volume=volumeNode.GetName(),
                                                  n=imageData.GetNumberOfScalarComponents()))
    if volumeNode.GetScene() is None:
        raise InputError(_("The volume '{volume}' is not in a scene.").format(volume=volumeNode.GetName()))
    spacing = tuple(round(float(s), 6) for s in volumeNode.GetSpacing())
    if not spacing_in_ct_range(spacing):  # a file in metres or centimetres: the engine would call the painting a dot
        raise InputError(_(
            "The volume '{volume}' has a voxel spacing of {spacing} mm, outside that of any CT ({low} to {high} "
            "mm): its file gives the spacing in another unit (metres or centimetres). Load the CT again with its "
            "spacing in millimetres (or set it in the Volumes module, Volume Information: Image Spacing), paint "
            "the tumour on it, then run again.").format(
                volume=volumeNode.GetName(), spacing=spacing, low=CT_SPACING_RANGE_MM[0],
                high=CT_SPACING_RANGE_MM[1]))


def checkSegmentation(volumeNode, segmentationNode, segmentId: str) -> None:
    if segmentationNode is None:
        raise InputError(_(
            "No segmentation is selected. Create one in the Segment Editor, paint the tumour's largest "
            "cross-section on one axial slice, and select it here."))
    if segmentationNode.GetScene() is not volumeNode.GetScene():
        raise InputError(_("The segmentation '{seg}' and the volume '{volume}' are not in the same scene.").format(
            seg=segmentationNode.GetName(), volume=volumeNode.GetName()))
    segmentation = segmentationNode.GetSegmentation()
    if not segmentId or segmentation.GetSegment(segmentId) is None:
        names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
        if not names:
            raise InputError(_(
                "The segmentation '{seg}' has no segments. Add a segment in the Segment Editor and paint the "
                "tumour on one axial slice.").format(seg=segmentationNode.GetName()))
        raise InputError(_(
            "Select the painted segment of '{seg}' (segments: {names}).").format(
                seg=segmentationNode.GetName(), names=", ".join(names)))
    segment = segmentation.GetSegment(segmentId)
    if isResultSegment(segment):
        raise InputError(_(
            "The segment '{name}' is this module's own result. Select the segment you painted instead.").format(
                name=segment.GetName()))
    if resultSegmentId(segmentationNode) == segmentId:  # untagged (an older version's result, or named by hand)
        raise InputError(_(
            "The segment '{name}' has the name this module gives its result, so a run would replace it. Select "
            "the segment you painted, or rename this one (Segment Editor: double-click its name), then run "
            "again.").format(name=segment.GetName()))
    volumeTransform = volumeNode.GetTransformNodeID()
    segmentationTransform = segmentationNode.GetTransformNodeID()
    if volumeTransform != segmentationTransform:
        raise InputError(_(
            "The volume '{volume}' and the segmentation '{seg}' are under different transforms. Harden them (Data "
            "module: right-click the transformed node > Harden transform), then run again.").format(
                volume=volumeNode.GetName(), seg=segmentationNode.GetName()))


def _hasConversion(segmentation, targetName: str) -> bool:
    paths = slicer.vtkSegmentationConversionPaths()
    segmentation.GetPossibleConversions(targetName, paths)
    return paths.GetNumberOfPaths() > 0


def checkRepresentation(segmentationNode) -> None:
    """Refuses, before any work, a segmentation the result could not be read from or written into.

    A segmentation whose source representation is not a binary labelmap (a closed surface loaded from STL/OBJ,
    for instance) is read by converting copies of its segments onto the volume's grid, and the result is written
    in that same representation, both with Slicer's own conversion rules. That needs a conversion path each way;
    a DICOM RT structure set's planar contours, for instance, can be read but nothing converts a labelmap back.
    """
    segmentation = segmentationNode.GetSegmentation()
    source = sourceRepresentationName(segmentation)
    if source == binaryLabelmapName():
        return
    labelmapSource = slicer.vtkSegmentation()
    setSourceRepresentationName(labelmapSource, binaryLabelmapName())
    if not (_hasConversion(segmentation, binaryLabelmapName()) and _hasConversion(labelmapSource, source)):
        raise InputError(_(
            "The segmentation '{seg}' stores its segments as '{representation}', which Slicer cannot convert to "
            "a binary labelmap and back, so the result could not be written into it. In the Segmentations "
            "module, Representations section: create 'Binary labelmap' and click 'Make source' (or paint the "
            "tumour in a new segmentation), then run again.").format(
                seg=segmentationNode.GetName(), representation=source))


def checkSegmentGrid(volumeNode, segmentationNode, segmentId: str) -> None:
    """Refuses a segment painted on another image grid than the volume's.

    "Same grid" at MRML level: the segment's binary labelmap (its source representation) has the volume's voxel
    spacing and axis directions, and its origin lies a whole number of voxels from the volume's. The extents may
    differ (labelmaps are often cropped). The volume's own voxels in another axis order or direction pass too
    (``latticeReordered``: Slicer's export places each voxel). Exporting any other segment would resample it, and a
    painted axial slice would smear over several K slices or lose voxels, so the user is asked to fix the inputs.
    """
    segmentation = segmentationNode.GetSegmentation()
    if not isLabelmapSource(segmentation):
        return  # e.g. closed surfaces: segmentArray rasterises them onto the volume's own grid, nothing to compare
    labelmap = segmentation.GetSegment(segmentId).GetRepresentation(binaryLabelmapName())
    if labelmap is None or labelmap.IsEmpty():
        return  # the empty-segment check reports this case
    problem, _offset = latticeDifference(labelmap, volumeNode)
    if problem and not latticeReordered(labelmap, volumeNode):
        segmentName = segmentation.GetSegment(segmentId).GetName()
        madeOn = segmentationNode.GetNodeReference(
            slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole())
        if madeOn is volumeNode:  # made on this volume: specified with another voxel size, or the volume moved since
            # The labelmap alone cannot tell these from a segment imported from another volume: both are named.
            cause = (_("the segmentation's geometry was specified with oversampling, or the segment was imported "
                       "from another volume") if otherSpacingOnly(labelmap, volumeNode)
                     else _("the volume was moved, rotated or resampled since the segmentation was made, or the "
                            "segment was imported from another volume"))
            raise InputError(_(
                "The segment '{segment}' is on the grid of the segmentation '{seg}', not on the voxels of the volume "
                "'{volume}': {problem} ({cause}). Repaint the segment in a new segmentation of '{volume}' (Segment "
                "Editor: add a segmentation, source volume '{volume}'), then run again.").format(
                    segment=segmentName, seg=segmentationNode.GetName(), volume=volumeNode.GetName(),
                    problem=problem, cause=cause))
        if madeOn is not None and madeOn.GetName():
            raise InputError(_(
                "The segment '{segment}' was painted on a different image grid than the volume '{volume}': "
                "{problem}. Its segmentation was made on the volume '{other}': select '{other}' as the volume, or "
                "repaint the segment on '{volume}' in a new segmentation, then run again.").format(
                    segment=segmentName, volume=volumeNode.GetName(), problem=problem, other=madeOn.GetName()))
        raise InputError(_(
            "The segment '{segment}' was painted on a different image grid than the volume '{volume}': "
            "{problem}. Select the volume the segment was painted on (the Segment Editor's source volume), or "
            "repaint the segment on '{volume}' in a new segmentation (a segmentation keeps the grid it was made "
            "with: one whose geometry was specified with oversampling, or on another volume, stays on it).").format(
                segment=segmentName, volume=volumeNode.GetName(), problem=problem))
