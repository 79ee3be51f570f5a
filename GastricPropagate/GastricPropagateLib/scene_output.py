"""Arrays -> MRML: the engine's result as a new segment beside the painted one, and the results table.

``applyResult`` checks everything before its first write, so a refusal (the result segment exists and may not be
replaced, the inputs left the scene, the masking leaves nothing) changes nothing. The painted segment and every
other segment are never touched; the painted slices of the result equal the painted voxels exactly.

A segmentation stored as closed surfaces (or another representation that is not a binary labelmap) gets the result
in that representation, converted by Slicer's own rules with the segmentation's conversion parameters; its voxels
are then those of the surface read back on the volume's grid, which is what the table and the record of what was
written hold (the painted slices are kept as closely as a surface can).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import vtk

import slicer
from gastric_propagate.data.annotation import occupied_box
from gastric_propagate.errors import InputError

from .corrections import (
    CORRECTED_SLICES_TAG,
    ERASED_LIMITS_TAG,
    WRITTEN_GEOMETRY_TAG,
    WRITTEN_SLICES_TAG,
    formatGeometry,
    formatLimits,
    formatSliceList,
    sliceDigests,
)
from .i18n import _
from .results_table import RESULTS_TABLE_NAME, SegmentStatistics, fillResultsTable, segmentStatistics, tableRows
from .result_segment import (
    PAINTED_SEGMENT_ID_TAG,
    PAINTED_SEGMENT_NAME_TAG,
    RESULT_TAG,
    RESULT_TAG_VALUE,
    WRITTEN_NAME_TAG,
    paintedSegmentOf,
    resultSegmentId,
    resultSegmentName,
)
from .run_output import RunResult
from .scene_input import PreparedInput, resultDigests
from .segment_arrays import (
    ijkToRasArray,
    ijkToWorldArray,
    isLabelmapSource,
    segmentArray,
    segmentVersion,
    setSourceRepresentationName,
    sourceRepresentationName,
    temporaryNodes,
    temporarySegmentationNode,
)

__all__ = ["ResultSegmentExistsError", "TABLE_SEGMENTATION_ATTRIBUTE", "TABLE_SEGMENTATION_REFERENCE",
           "applyResult", "resultsTableNode"]

#: Node reference role from the results table to the segmentation node it describes. A reference, not an ID in an
#: attribute: importing a scene renames colliding node IDs and updates references, never attributes.
TABLE_SEGMENTATION_REFERENCE = "GastricPropagate.Segmentation"
#: Table node attribute that held the segmentation node's ID before (read for scenes saved by older versions).
TABLE_SEGMENTATION_ATTRIBUTE = "GastricPropagate.SegmentationNodeID"
#: Node reference role from the results table to the volume its voxels and slices are counted on (the run's CT).
TABLE_VOLUME_REFERENCE = "GastricPropagate.Volume"

# Candidate colours for the result segment; the one farthest from every existing segment colour is used.
_RESULT_COLOURS = (
    (0.98, 0.78, 0.10),  # amber
    (0.10, 0.85, 0.95),  # cyan
    (0.95, 0.30, 0.85),  # magenta
    (0.35, 0.95, 0.35),  # green
    (0.30, 0.45, 1.00),  # blue
)


class ResultSegmentExistsError(InputError):
    """The result segment already exists and the caller did not ask to replace it."""



def applyResult(prepared: PreparedInput, result: RunResult, replaceExisting: bool = False,
                beforeWrite: Callable[[], None] | None = None, cache: dict | None = None) -> str:
    """Writes the result as a new segment beside the painted one and updates the results table (main thread).

    The painted segment and every other segment stay untouched; on the propagated slices voxels outside
    ``prepared.masking`` are never set, and the painted slices equal the painted voxels exactly. Returns the
    result segment's ID. ``beforeWrite`` is called once every check has passed, just before the first write (the
    Segment Editor's undo state: a refusal adds no empty Undo step). ``cache``: the statistics cache of
    ``refreshResultsTable`` (the other segments unchanged since it counted them are not read again; it gets the
    result's figures).

    Raises:
        ResultSegmentExistsError: the result segment exists and ``replaceExisting`` is False.
        InputError: the inputs left the scene, the masking leaves nothing of the result, or the result segment read
            by ``prepare`` was edited since (the reader's edits are never overwritten).
    """
    volumeNode, segmentationNode = prepared.volumeNode, prepared.segmentationNode
    scene = volumeNode.GetScene()
    segmentation = segmentationNode.GetSegmentation()
    if scene is None or segmentationNode.GetScene() is not scene:
        raise InputError(_("The volume or the segmentation was removed from the scene during the run."))
    if segmentation.GetSegment(prepared.paintedSegmentId) is None:
        raise InputError(_("The painted segment was deleted during the run; nothing was written."))
    mask = np.asarray(result.mask) > 0
    if mask.shape != prepared.image.shape:
        raise InputError(_("The result's grid {got} differs from the volume's {want}.").format(
            got=mask.shape, want=prepared.image.shape))
    imageData = volumeNode.GetImageData()
    moved = prepared.ijkToRas is not None and not np.allclose(ijkToRasArray(volumeNode), prepared.ijkToRas, atol=1e-6)
    if moved or imageData is None or tuple(imageData.GetDimensions())[::-1] != mask.shape:
        raise InputError(_(
            "The volume '{volume}' was moved or resampled during the run (its voxels, spacing, origin or orientation "
            "changed), so the result would not lie on the tumour; nothing was written. Run again on the volume as it "
            "is now.").format(volume=volumeNode.GetName()))
    if volumeNode.GetTransformNodeID() != segmentationNode.GetTransformNodeID():
        # The result is imported under the volume's transform; into a segmentation under another it would land beside
        # the tumour (``prepare`` refused this; a transform set during the run is caught here).
        raise InputError(_(
            "The volume '{volume}' and the segmentation '{seg}' were put under different transforms during the run, "
            "so the result would not lie on the tumour; nothing was written. Harden them (Data module, right-click > "
            "Harden transform), then run again.").format(volume=volumeNode.GetName(),
                                                         seg=segmentationNode.GetName()))
    # The painted slices are the user's own drawing: they are kept exactly, whatever the masking says.
    allowed = prepared.masking.allowed(prepared.image)
    if allowed is not None:
        painted = np.zeros(mask.shape, dtype=bool)
        painted[prepared.paintedSlices] = True
        propagated = mask & ~painted
        mask = np.where(painted, prepared.annotation > 0, mask & allowed)
        if propagated.any() and not (mask & ~painted).any():
            raise InputError(_(
                "The result is empty inside the editable area: beyond the painted slice nothing is left. Check "
                "the Segment Editor's masking settings (or untick 'Masking' in this module's Options), then run "
                "again."))
    else:
        for k in prepared.paintedSlices:
            mask[k] = prepared.annotation[k] > 0
    if not mask.any():
        raise InputError(_("The result is empty. Check the painted slice."))

    existingId = resultSegmentId(segmentationNode)
    if existingId is not None and not replaceExisting:
        raise ResultSegmentExistsError(_(
            "The segmentation '{seg}' already has a segment '{name}'. Confirm replacing it (or rename that "
            "segment to keep it) and run again.").format(
                seg=segmentationNode.GetName(), name=segmentation.GetSegment(existingId).GetName()))
    unchanged = (existingId is not None and prepared.resultVersion is not None
                 and segmentVersion(segmentationNode, existingId) == prepared.resultVersion)  # not even read again
    if (existingId is not None and prepared.resultDigests is not None and not unchanged
            and resultDigests(volumeNode, segmentationNode) != prepared.resultDigests):
        # Replacing was confirmed for the segment as it was at the click; the reader has edited it since.
        raise InputError(_(
            "The segment '{name}' was edited while the propagation ran. Nothing was written, so that those edits "
            "are kept: re-propagate (or propagate) again to use them.").format(
                name=segmentation.GetSegment(existingId).GetName()))

    # Everything the table needs is computed before the first write, so a failure here changes nothing.
    spacing = prepared.spacingXYZ
    statistics: dict[str, SegmentStatistics] = {}
    counted = {}  # key -> figures of the other segments, for the cache (keys taken before the write)
    for index in range(segmentation.GetNumberOfSegments()):
        segmentId = segmentation.GetNthSegmentID(index)
        if segmentId == existingId:
            continue
        if segmentId == prepared.paintedSegmentId:  # as read at the click, without the corrected slices
            array = prepared.annotation if prepared.paintedAnnotation is None else prepared.paintedAnnotation
            statistics[segmentId] = segmentStatistics(array, spacing)
            continue
        key = _statisticsKey(segmentationNode, segmentId, volumeNode)
        found = cache.get(key) if cache is not None else None
        statistics[segmentId] = counted[key] = found if found is not None else segmentStatistics(
            segmentArray(volumeNode, segmentationNode, segmentId), spacing)
    converted = None if isLabelmapSource(segmentation) else _convertToSource(prepared, mask)
    written = mask if converted is None else converted[1]
    if not written.any():
        raise InputError(_(
            "The result is too small to keep its shape as a '{representation}' (the segmentation's "
            "representation). Paint a larger cross-section, or make 'Binary labelmap' the segmentation's source "
            "representation (Segmentations module, Representations section), then run again.").format(
                representation=sourceRepresentationName(segmentation)))
    resultStatistics = segmentStatistics(written, spacing)

    if beforeWrite is not None:
        beforeWrite()
    resultId = _writeResultSegment(prepared, written, existingId,
                                   representation=None if converted is None else converted[0])
    statistics[resultId] = resultStatistics
    _updateResultsTable(prepared, result, resultId, statistics)
    if cache is not None:  # a segment the write changed (a shared layer) has another key now: counted again later
        cache.clear()
        cache.update(counted)
        cache[_statisticsKey(segmentationNode, resultId, volumeNode)] = resultStatistics
    return resultId



def _resultColour(segmentation, skipId: str | None) -> tuple[float, float, float]:
    used = [np.array(segmentation.GetNthSegment(i).GetColor()) for i in range(segmentation.GetNumberOfSegments())
            if segmentation.GetNthSegmentID(i) != skipId]
    if not used:
        return _RESULT_COLOURS[0]
    return max(_RESULT_COLOURS, key=lambda c: min(np.linalg.norm(np.array(c) - u) for u in used))



def _importMask(volumeNode, segmentationNode, segmentId: str, mask: np.ndarray) -> None:
    """Replaces the voxels of a segment of a binary-labelmap segmentation with ``mask`` (volume's grid). Only the
    box that holds its voxels is imported, on the volume's lattice: the whole CT's grid cost ten times the time, and
    the segment kept that extent, so that each later read of it went over the whole grid again."""
    scene = volumeNode.GetScene()
    box = occupied_box(mask)
    with temporaryNodes(scene):
        labelmapNode = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__GastricPropagate_temp__")
        labelmapNode.CopyOrientation(volumeNode)
        corner = ijkToRasArray(volumeNode) @ np.array([box[2].start, box[1].start, box[0].start, 1.0])
        labelmapNode.SetOrigin(*corner[:3])
        labelmapNode.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
        slicer.util.updateVolumeFromArray(labelmapNode, np.ascontiguousarray(mask[box], dtype=np.uint8))
        segmentIds = vtk.vtkStringArray()
        segmentIds.InsertNextValue(segmentId)
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
                labelmapNode, segmentationNode, segmentIds):
            raise RuntimeError(_("Could not write the result into the segmentation '{seg}'.").format(
                seg=segmentationNode.GetName()))



def _convertToSource(prepared: PreparedInput, mask: np.ndarray):
    """(the result in the segmentation's source representation, its voxels read back on the volume's grid).

    Slicer's converter turns the labelmap into the source representation (a closed surface, ...) in a temporary
    segmentation node that carries the segmentation's own conversion parameters (smoothing, decimation), so the
    result looks like the other segments; nothing in the scene changes.
    """
    volumeNode, segmentationNode = prepared.volumeNode, prepared.segmentationNode
    source = sourceRepresentationName(segmentationNode.GetSegmentation())
    with temporaryNodes(volumeNode.GetScene()):
        labelmapName = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
        node = temporarySegmentationNode(volumeNode, labelmapName)
        segmentation = node.GetSegmentation()
        segmentation.CopyConversionParameters(segmentationNode.GetSegmentation())
        segmentId = segmentation.AddEmptySegment("", resultSegmentName(), _RESULT_COLOURS[0])
        _importMask(volumeNode, node, segmentId, mask)
        converted = segmentation.CreateRepresentation(source) and \
            segmentation.GetSegment(segmentId).GetRepresentation(source)
        if not converted:
            raise RuntimeError(_("Could not convert the result to the representation '{representation}' of the "
                                 "segmentation '{seg}'.").format(representation=source,
                                                                 seg=segmentationNode.GetName()))
        representation = converted.NewInstance()
        representation.DeepCopy(converted)
        setSourceRepresentationName(segmentation, source)  # read back as the segmentation will be read
        written = segmentArray(volumeNode, node, segmentId) > 0
    return representation, written



def _writeResultSegment(prepared: PreparedInput, mask: np.ndarray, existingId: str | None, *,
                        representation=None) -> str:
    """Writes ``mask`` (or, for a segmentation that does not store labelmaps, ``representation``: the result in
    its source representation) as the result segment, new or replacing ``existingId`` in place. The node's events
    wait until it is whole: the Segment Editor and the views see one change, not an empty, untagged segment first
    and then eight more."""
    segmentationNode = prepared.segmentationNode
    wasModifying = segmentationNode.StartModify()
    try:
        return _writeResultSegmentNow(prepared, mask, existingId, representation)
    finally:
        segmentationNode.EndModify(wasModifying)


def _writeResultSegmentNow(prepared: PreparedInput, mask: np.ndarray, existingId: str | None, representation) -> str:
    segmentationNode = prepared.segmentationNode
    segmentation = segmentationNode.GetSegmentation()
    name = resultSegmentName()
    if representation is not None:
        targetId = _addInSourceRepresentation(segmentation, representation, existingId, name)
    elif existingId is None:
        targetId = segmentation.AddEmptySegment("", name, _resultColour(segmentation, None))
        try:
            _importMask(prepared.volumeNode, segmentationNode, targetId, mask)
        except BaseException:
            segmentation.RemoveSegment(targetId)
            raise
    else:
        targetId = existingId
        _importMask(prepared.volumeNode, segmentationNode, targetId, mask)
    segment = segmentation.GetSegment(targetId)
    segment.SetName(name)
    segment.SetTag(RESULT_TAG, RESULT_TAG_VALUE)
    segment.SetTag(WRITTEN_NAME_TAG, name)  # renamed since, it is the user's (result_segment.isResultSegment)
    painted = segmentation.GetSegment(prepared.paintedSegmentId)
    segment.SetTag(PAINTED_SEGMENT_ID_TAG, prepared.paintedSegmentId)
    # '|' separates the tags in a saved .seg.nrrd: a name holding one would come back cut there (the name is
    # only shown in messages; the ID finds the segment).
    segment.SetTag(PAINTED_SEGMENT_NAME_TAG, painted.GetName().replace("|", "/"))
    # What was written, so that a re-propagation can tell the reader's corrections from it (corrections.py).
    segment.SetTag(WRITTEN_SLICES_TAG, sliceDigests(mask))
    segment.SetTag(WRITTEN_GEOMETRY_TAG, formatGeometry(ijkToRasArray(prepared.volumeNode),
                                                        ijkToWorldArray(prepared.volumeNode)))
    segment.SetTag(CORRECTED_SLICES_TAG, formatSliceList(prepared.correctedSlices))
    segment.SetTag(ERASED_LIMITS_TAG, formatLimits(*prepared.erasedLimits))
    return targetId



def _addInSourceRepresentation(segmentation, representation, existingId: str | None, name: str) -> str:
    """Adds a segment holding ``representation`` (the segmentation's source representation); one that replaces
    ``existingId`` keeps its ID, place and metadata (colour, tags, terminology). Slicer derives the segmentation's
    other representations from it. A failure puts the replaced segment back."""
    segment = slicer.vtkSegment()
    if existingId is None:
        segment.SetName(name)
        segment.SetColor(*_resultColour(segmentation, None))
    else:
        segment.DeepCopyMetadata(segmentation.GetSegment(existingId))
    segment.AddRepresentation(sourceRepresentationName(segmentation), representation)
    if existingId is None:
        if not segmentation.AddSegment(segment):
            raise RuntimeError(_("Could not add the result segment to the segmentation."))
        return segmentation.GetSegmentIdBySegment(segment)
    old = segmentation.GetSegment(existingId)
    index = segmentation.GetSegmentIndex(existingId)
    following = (segmentation.GetNthSegmentID(index + 1) if index + 1 < segmentation.GetNumberOfSegments()
                 else "")
    segmentation.RemoveSegment(existingId)
    if not segmentation.AddSegment(segment, existingId, following):
        segmentation.AddSegment(old, existingId, following)
        raise RuntimeError(_("Could not replace the result segment in the segmentation."))
    return existingId



def resultsTableNode(segmentationNode, create: bool = False):
    """The results table of ``segmentationNode`` (found by node reference), created when ``create`` is True."""
    scene = segmentationNode.GetScene()
    segmentationId = segmentationNode.GetID()
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLTableNode")):
        table = scene.GetNthNodeByClass(index, "vtkMRMLTableNode")
        referenced = table.GetNodeReferenceID(TABLE_SEGMENTATION_REFERENCE)
        if referenced == segmentationId:
            return table
        # A table of an older version (an ID in an attribute): an import that renamed its segmentation's ID can
        # still mislead this fallback; it is linked by reference as soon as it is written again.
        if referenced is None and table.GetAttribute(TABLE_SEGMENTATION_ATTRIBUTE) == segmentationId:
            if create:  # about to be written: linked by reference from now on
                table.SetNodeReferenceID(TABLE_SEGMENTATION_REFERENCE, segmentationId)
                table.RemoveAttribute(TABLE_SEGMENTATION_ATTRIBUTE)
            return table
    if not create:
        return None
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", RESULTS_TABLE_NAME)
    table.SetNodeReferenceID(TABLE_SEGMENTATION_REFERENCE, segmentationId)
    return table



def _updateResultsTable(prepared: PreparedInput, result, resultId: str,
                        statistics: dict[str, SegmentStatistics]) -> None:
    segmentationNode = prepared.segmentationNode
    segmentation = segmentationNode.GetSegmentation()
    rows = []
    for index in range(segmentation.GetNumberOfSegments()):
        segmentId = segmentation.GetNthSegmentID(index)
        if segmentId not in statistics:
            continue
        if segmentId == resultId:
            role = _("propagated")
        elif segmentId == prepared.paintedSegmentId:
            role = _("painted")
        else:
            role = _("other")
        rows.append((segmentation.GetNthSegment(index).GetName(), segmentId, role, statistics[segmentId]))
    table = resultsTableNode(segmentationNode, create=True)
    table.SetNodeReferenceID(TABLE_VOLUME_REFERENCE, prepared.volumeNode.GetID())
    fillResultsTable(table, rows, resultId=resultId, seconds=float(result.seconds), device=str(result.device),
                     volumeName=prepared.volumeNode.GetName())


def refreshResultsTable(volumeNode, segmentationNode, cache: dict | None = None):
    """The results table of ``segmentationNode`` computed again from its segments as they are now: the reader
    corrects, renames and deletes segments after a run, and the table (and the CSV exported from it) must say what
    the scene holds. Counted on the volume the run was on (``volumeNode`` for a table that names none, or whose
    volume is gone). The last run's time and device stay on the result's row while the result is there.

    ``cache``: a dict kept by the caller between calls; a segment whose voxels, and a volume whose grid, did not
    change since are not read again. Returns the table; None when the segmentation has none (no run yet), which is
    then not created."""
    table = resultsTableNode(segmentationNode)
    volumeNode = (table.GetNodeReference(TABLE_VOLUME_REFERENCE) if table is not None else None) or volumeNode
    if table is None or volumeNode is None or volumeNode.GetImageData() is None:
        return table
    segmentation = segmentationNode.GetSegmentation()
    before = tableRows(table)
    resultId = resultSegmentId(segmentationNode)
    runRow = next((row for row in before if resultId is not None and row.get("Segment ID") == resultId), None)
    source = paintedSegmentOf(segmentation.GetSegment(resultId)) if resultId is not None else None
    paintedId = source[0] if source is not None else next(
        (row.get("Segment ID") for row in before if row.get("Role") == _("painted")), None)
    spacing = tuple(float(s) for s in volumeNode.GetSpacing())
    rows, used = [], {}
    for index in range(segmentation.GetNumberOfSegments()):
        segmentId = segmentation.GetNthSegmentID(index)
        role = _("propagated") if segmentId == resultId else _("painted") if segmentId == paintedId else _("other")
        key = _statisticsKey(segmentationNode, segmentId, volumeNode)
        statistics = cache.get(key) if cache is not None else None
        if statistics is None:
            statistics = segmentStatistics(segmentArray(volumeNode, segmentationNode, segmentId), spacing)
        used[key] = statistics
        rows.append((segmentation.GetNthSegment(index).GetName(), segmentId, role, statistics))
    if cache is not None:  # only what this table holds now: the cache does not grow with every edit
        cache.clear()
        cache.update(used)
    seconds = runRow.get("Run time [s]") if runRow is not None else ""
    fillResultsTable(table, rows, resultId=resultId or "", seconds=float(seconds) if seconds else None,
                     device=runRow.get("Device", "") if runRow is not None else "", volumeName=volumeNode.GetName())
    return table


def _statisticsKey(segmentationNode, segmentId: str, volumeNode) -> tuple:
    """What a segment's statistics depend on: its voxels' version (``segmentVersion``), the volume's grid, and the
    transforms above either node (moving the segmentation against the CT changes what lies on which slice)."""
    imageData = volumeNode.GetImageData()
    return (segmentId, segmentVersion(segmentationNode, segmentId), volumeNode.GetID(),
            tuple(imageData.GetDimensions()), tuple(ijkToRasArray(volumeNode).ravel()),
            _transformChain(segmentationNode), _transformChain(volumeNode))


def _transformChain(node) -> tuple:
    """The transform nodes above ``node``, each with its modification time."""
    chain = []
    transformNode = node.GetParentTransformNode()
    while transformNode is not None:
        chain.append((transformNode.GetID(), transformNode.GetMTime(), transformNode.GetTransformToParent().GetMTime()
                      if transformNode.GetTransformToParent() is not None else None))
        transformNode = transformNode.GetParentTransformNode()
    return tuple(chain)
