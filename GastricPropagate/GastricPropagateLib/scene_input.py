"""MRML -> arrays: the volume and the painted segment (for a re-propagation, with the reader's corrections).

``prepareInput`` reads everything a run needs into a ``PreparedInput`` of private array copies, after checking the
inputs (``input_checks``; each refusal says what to do). Nothing here writes to the scene: segments are read
through temporary nodes that are removed again (``segment_arrays``), so the scene is left exactly as it was,
whether a check passes or not.

Everything works in the volume's own IJK grid (array axes k, j, i), whatever its IJK-to-RAS direction: the engine's
"axial slice" is one K slice of the volume.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import vtk

import slicer
from gastric_propagate.data.annotation import describe_slices, painted_slices, side_view
from gastric_propagate.data.volumes import slice_orientation
from gastric_propagate.errors import InputError

from .corrections import (CORRECTED_SLICES_TAG, ERASED_LIMITS_TAG, WRITTEN_GEOMETRY_TAG, WRITTEN_SLICES_TAG,
                          changedBetween, parseLimits, parseSliceList, sliceDigests, writtenOnOtherGeometry)
from .i18n import _
from .input_checks import checkRepresentation, checkSegmentation, checkSegmentGrid, checkVolume
from .masking import Masking
from .result_segment import paintedSegmentOf, resultSegmentId, resultSegmentName
from .segment_arrays import (ijkToRasArray, ijkToWorldArray, paintedVoxelsOutsideVolume, segmentArray,
                             segmentVersion)

if TYPE_CHECKING:  # the engine's pipeline imports torch: only load it where it is needed
    from gastric_propagate.inference.options import PropagationOptions

__all__ = ["PreparedInput", "prepareCorrections", "prepareInput", "sliceCenterRAS", "volumeVersion",
           "volumeVoxels"]


@dataclass
class PreparedInput:
    """Everything ``compute`` needs, read from the scene by ``prepare``; arrays are private copies.

    Attributes:
        volumeNode, segmentationNode, paintedSegmentId: where the input came from (used by ``apply`` only).
        image: (k, j, i) copy of the volume's voxels.
        spacingXYZ: (i, j, k) voxel spacing in mm.
        annotation: uint8 (k, j, i), 1 on the painted voxels.
        paintedSlices: K indices holding painted voxels.
        options: the engine's PropagationOptions.
        masking: where the result may be written.
        correctedSlices: K slices taken from the reader's corrections of the result segment (a re-propagation,
            ``prepareCorrections``); anchors like the painted slices.
        imageKey: names this version of the volume's voxels and spacing (``volumeVersion``), so that the engine's
            worker is not sent the same CT twice.
        resultVersion: ``segment_arrays.segmentVersion`` of that segment as it was read: unchanged, it is not read
            again to be compared.
        resultDigests: the module's earlier result segment as it was read (``corrections.sliceDigests``), None when
            there was none: ``apply`` replaces it only if it is still so, never the reader's edits made during the
            run.
        paintedAnnotation: the painted segment alone, where ``annotation`` also holds the corrected slices (a
            re-propagation); None when the two are the same.
        sliceOrientation: which way the volume's K slices lie ("axial", "sagittal" or "coronal"): the engine reads
            the voxels alone, so the run's advice on a volume of other than axial slices comes from here.
        ijkToRas: the volume's IJK-to-RAS matrix (4 x 4) at the click: ``apply`` writes nothing on a volume moved or
            resampled since, where the result would land beside the tumour.
        erasedLimits: (low, high) K limits the reader set by erasing the result's ends, this round or earlier ones
            (None: none); stored with the result so that later rounds keep them.
        resultEdits: K slices of the earlier result segment that are the reader's: changed since it was written,
            or kept as corrections by the re-propagation that wrote it (what a Propagate that replaces it would
            discard; Re-propagate keeps them).
    """

    volumeNode: object
    segmentationNode: object
    paintedSegmentId: str
    image: np.ndarray
    spacingXYZ: tuple[float, float, float]
    annotation: np.ndarray
    paintedSlices: list[int]
    options: "PropagationOptions"
    masking: Masking = field(default_factory=Masking)
    correctedSlices: list[int] = field(default_factory=list)
    imageKey: tuple | None = None
    resultDigests: str | None = None
    resultVersion: tuple | None = None
    paintedAnnotation: np.ndarray | None = None
    sliceOrientation: str = "axial"
    ijkToRas: np.ndarray | None = None
    erasedLimits: tuple = (None, None)
    resultEdits: list[int] = field(default_factory=list)


#: A volume whose slices lie at least this far from the axial plane is painted on one of them only in a slice view
#: rotated to the volume plane.
MIN_TILT_DEGREES = 1.0


def sliceTiltDegrees(ijkToRas: np.ndarray) -> float:
    """The angle between the volume's slice plane (spanned by its I and J axes) and the RAS axial plane, in degrees."""
    normal = np.cross(ijkToRas[:3, 0], ijkToRas[:3, 1])
    normal = normal / np.linalg.norm(normal)
    return float(np.degrees(np.arccos(min(1.0, abs(float(normal[2]))))))


def _withinOneAxialSlab(annotation: np.ndarray, ijkToRas: np.ndarray) -> bool:
    """Whether every painted voxel lies within one RAS-axial slab a slice thick: one stroke in an axial view that is
    not rotated to the volume's slices (keyframes painted in a rotated view each fill a whole tilted slice)."""
    kji = np.argwhere(annotation > 0)
    heights = kji[:, ::-1] @ ijkToRas[2, :3]
    return float(heights.max() - heights.min()) <= 1.5 * float(np.linalg.norm(ijkToRas[:3, 2]))


def _viewName(view: str) -> str:
    """A view's or slice orientation's name ("axial", "sagittal", "coronal") in the reader's language."""
    return {"axial": _("axial"), "sagittal": _("sagittal"), "coronal": _("coronal")}[view]


def _axisName(direction: np.ndarray) -> str:
    """Anatomical name of the RAS axis closest to ``direction``."""
    names = (_("left-right"), _("anterior-posterior"), _("superior-inferior"))
    return names[int(np.argmax(np.abs(direction)))]


def prepareInput(volumeNode, segmentationNode, segmentId: str, options: "PropagationOptions | None" = None,
                 *, masking: Masking | None = None) -> PreparedInput:
    """Reads the volume and the painted segment into arrays and checks them (main thread).

    A segmentation stored as closed surfaces (or another representation Slicer converts to and from a binary
    labelmap) is read on the volume's grid through Slicer's converter (``segmentArray``).

    Raises:
        InputError: with what to do, for a missing/unsuitable volume, segmentation or segment, a segmentation
            whose representation cannot be converted to a labelmap and back, an empty segment, a segment
            painted on another image grid or outside the volume, or painted voxels on several K slices.
    """
    from gastric_propagate.inference.options import PropagationOptions

    options = options if options is not None else PropagationOptions()
    masking = masking if masking is not None else Masking()
    checkVolume(volumeNode)
    checkSegmentation(volumeNode, segmentationNode, segmentId)
    checkRepresentation(segmentationNode)
    checkSegmentGrid(volumeNode, segmentationNode, segmentId)

    voxels, spacing, imageKey = volumeVoxels(volumeNode)
    image = np.array(voxels, copy=True)  # the CT as it was at the click, whatever changes it during the run
    annotation = (segmentArray(volumeNode, segmentationNode, segmentId) > 0).astype(np.uint8)
    segmentName = segmentationNode.GetSegmentation().GetSegment(segmentId).GetName()

    painted = painted_slices(annotation)
    if not painted:
        raise InputError(_(
            "The segment '{segment}' has no painted voxels inside the volume '{volume}'. Paint the tumour's "
            "largest cross-section on one axial slice of this volume (Segment Editor, Paint or Draw), then "
            "run again.").format(segment=segmentName, volume=volumeNode.GetName()))
    outside = paintedVoxelsOutsideVolume(volumeNode, segmentationNode, segmentId, int(np.count_nonzero(annotation)))
    if outside > 0:
        raise InputError(_(
            "{count} painted voxels of the segment '{segment}' lie outside the volume '{volume}'. Paint inside "
            "the volume (or select the volume the segment was painted on), then run again.").format(
                count=outside, segment=segmentName, volume=volumeNode.GetName()))
    # A side view's plane is never a set of axial anchors: refused with keyframes on too.
    ijkToRas = ijkToRasArray(volumeNode)
    sideView = side_view(annotation, ijkToRas)  # the whole array: which K slices were painted counts
    orientation = slice_orientation(ijkToRas[:3, 2])
    if sideView is not None and orientation != "axial":  # a sagittal or coronal series: reoriented, not painted on
        raise InputError(_(
            "The segment '{segment}' is painted in the {view} view across {count} slices of the volume "
            "'{volume}' (K = {slices}), whose K slices are {orientation}, not axial; the networks learned axial "
            "slices. Reorient the volume to axial slices first (Orient Scalar Volume module, orientation Axial), "
            "paint the tumour's largest cross-section on one slice of the new volume, then run again.").format(
                segment=segmentName, view=_viewName(sideView), count=len(painted), volume=volumeNode.GetName(),
                slices=describe_slices(painted), orientation=_viewName(orientation)))
    if sideView in ("sagittal", "coronal"):  # ("axial" on an axial volume: a plane tilted about 45 degrees)
        raise InputError(_(
            "The segment '{segment}' is painted in one plane (or a brush's width of them) across {count} slices "
            "of the volume's K axis (K = {slices}), as in the {view} view. Paint the tumour's largest cross-section "
            "on one slice in the axial view (the view showing the volume's K slices), then run again.").format(
                segment=segmentName, count=len(painted), slices=describe_slices(painted), view=_viewName(sideView)))
    tilt = sliceTiltDegrees(ijkToRas)
    if (len(painted) > 1 and orientation == "axial" and tilt >= MIN_TILT_DEGREES
            and painted[-1] - painted[0] + 1 == len(painted)
            and (not options.keyframes or _withinOneAxialSlab(annotation, ijkToRas))):
        # The Segment Editor paints in the view's plane: an RAS-axial view cuts across tilted K slices, and each cut
        # piece taken as a keyframe (or one kept alone) is a chord of the tumour, not its cross-section.
        raise InputError(_(
            "The segment '{segment}' has painted voxels on {count} slices of the volume's K axis (K = {slices}): "
            "the volume's slices are tilted {tilt:.0f} degrees from the axial plane (an oblique or gantry-tilted "
            "series), and the slice view cuts across them. Rotate the slice view to the volume's slices (Reformat "
            "module: 'Rotate to volume plane'), erase the stroke, paint the largest cross-section again on one "
            "slice, then run again.").format(segment=segmentName, count=len(painted), slices=describe_slices(painted),
                                             tilt=tilt))
    if len(painted) > 1 and not options.keyframes:
        kAxis = ijkToRas[:3, 2]
        hint = ""
        if abs(kAxis[2]) < 0.7 * np.linalg.norm(kAxis):
            hint = " " + _(
                "Note: this volume's slice axis (K) runs {axis}, so its K slices are not axial, and the networks "
                "learned axial slices: reorient it first (Orient Scalar Volume module, orientation Axial), then "
                "paint one slice of the new volume.").format(axis=_axisName(kAxis))
        raise InputError(_(
            "The segment '{segment}' has painted voxels on {count} slices of the volume's K axis (K = {slices}). "
            "Paint the largest cross-section on one slice only and erase the others, or switch on keyframes "
            "to use several painted slices as fixed anchors.").format(
                segment=segmentName, count=len(painted), slices=describe_slices(painted)) + hint)
    if masking.editable is not None and masking.editable.shape != image.shape:
        raise InputError(_(
            "The editable-area mask has shape {mask} but the volume has shape {image} (K, J, I). Build the "
            "mask on the volume's grid.").format(mask=masking.editable.shape, image=image.shape))

    resultId = resultSegmentId(segmentationNode)
    digests = resultDigests(volumeNode, segmentationNode)
    return PreparedInput(
        volumeNode=volumeNode, segmentationNode=segmentationNode, paintedSegmentId=segmentId,
        image=image, spacingXYZ=spacing, annotation=annotation, paintedSlices=painted,
        options=options, masking=masking, imageKey=imageKey, resultDigests=digests,
        resultVersion=segmentVersion(segmentationNode, resultId) if resultId is not None else None,
        sliceOrientation=orientation, ijkToRas=ijkToRas,
        resultEdits=_editedSinceWritten(segmentationNode.GetSegmentation().GetSegment(resultId), digests, volumeNode)
        if digests is not None else [])


def resultDigests(volumeNode, segmentationNode) -> str | None:
    """The module's result segment in ``segmentationNode`` as it is now (``corrections.sliceDigests`` of it on the
    volume's grid), or None when there is none."""
    resultId = resultSegmentId(segmentationNode)
    if resultId is None:
        return None
    return sliceDigests(segmentArray(volumeNode, segmentationNode, resultId) > 0)


def _writtenOnOtherGrid(resultSegment, volumeNode) -> bool:
    """Whether the result segment's record of the grid it was written on (``corrections.WRITTEN_GEOMETRY_TAG``)
    matches neither the volume's IJK-to-RAS nor its IJK-to-world; False without a record."""
    recorded = vtk.reference("")
    return bool(resultSegment.GetTag(WRITTEN_GEOMETRY_TAG, recorded)) and writtenOnOtherGeometry(
        str(recorded), ijkToRasArray(volumeNode), ijkToWorldArray(volumeNode))


def _editedSinceWritten(resultSegment, digests: str, volumeNode) -> list[int]:
    """The K slices of the result segment (``digests``: its ``sliceDigests`` now, on the volume's grid) that are the
    reader's: edited, drawn or erased since the module wrote it, and those an earlier re-propagation kept as
    corrections; none when it holds no record of that, or was written on another grid (``_writtenOnOtherGrid``)."""
    written, corrected = vtk.reference(""), vtk.reference("")
    if not resultSegment.GetTag(WRITTEN_SLICES_TAG, written) or not str(written) or _writtenOnOtherGrid(
            resultSegment, volumeNode):
        return []
    try:
        edited, erased = changedBetween(str(written), digests)
    except ValueError:
        return []
    earlier = parseSliceList(str(corrected)) if resultSegment.GetTag(CORRECTED_SLICES_TAG, corrected) else []
    limits, depth = vtk.reference(""), int(digests.partition(",")[0])
    low, high = parseLimits(str(limits)) if resultSegment.GetTag(ERASED_LIMITS_TAG, limits) else (None, None)
    erasedEarlier = [k for k in (None if low is None else low - 1, None if high is None else high + 1)
                     if k is not None and 0 <= k < depth]  # the slice the reader erased to set the limit
    return sorted(set(edited) | set(erased) | set(earlier) | set(erasedEarlier))


def volumeVoxels(volumeNode) -> tuple[np.ndarray, tuple[float, float, float], tuple]:
    """The volume's voxels as the engine takes them, (k, j, i) (a view of the node's memory, not a copy), its spacing
    (i, j, k) in mm and the name of this version of them (``volumeVersion``)."""
    spacing = tuple(float(s) for s in volumeNode.GetSpacing())
    return slicer.util.arrayFromVolume(volumeNode), spacing, volumeVersion(volumeNode)


def volumeVersion(volumeNode) -> tuple:
    """What names one version of a volume's voxels and spacing: its node ID, its image data's modification time
    (VTK's global counter: it grows whenever the voxels are marked modified, as ``arrayFromVolumeModified`` and
    every Slicer module that changes them do), its spacing, shape and scalar type."""
    imageData = volumeNode.GetImageData()
    return (volumeNode.GetID(), int(imageData.GetMTime()), tuple(float(s) for s in volumeNode.GetSpacing()),
            tuple(imageData.GetDimensions()), imageData.GetScalarTypeAsString())


def prepareCorrections(volumeNode, segmentationNode, segmentId: str,
                       options: "PropagationOptions | None" = None, *, masking: Masking | None = None) -> PreparedInput:
    """Reads the inputs of a re-propagation: the painted slices plus the slices the reader corrected in the result.

    The result segment this module wrote (``resultSegmentId``) is compared with the record stored when it was
    written (``corrections.planCorrections``): every slice the reader edited or drew there since becomes an
    anchor, kept exactly, beside the painted segment's slices (a corrected painted slice: the correction wins);
    slices erased beyond every anchor, and the result's end slice edited with nothing drawn beyond it, become the
    lowest / highest slice limit. Keyframes are on. The painted segment is read, never changed; nothing in the
    scene changes.

    Raises:
        InputError: no result segment, no record of what was written, or nothing corrected since; plus every
            refusal of ``prepareInput``.
    """
    import dataclasses

    from gastric_propagate.inference.options import PropagationOptions, slices_within

    from . import corrections

    options = options if options is not None else PropagationOptions()
    resultId = resultSegmentId(segmentationNode)
    if resultId is None:
        raise InputError(_(
            "There is no propagated segment ('{name}') to re-propagate from. Click Propagate first, correct the "
            "result's slices in the Segment Editor, then re-propagate.").format(name=resultSegmentName()))
    resultSegment = segmentationNode.GetSegmentation().GetSegment(resultId)
    written, previous = vtk.reference(""), vtk.reference("")
    if not resultSegment.GetTag(corrections.WRITTEN_SLICES_TAG, written) or not str(written):
        raise InputError(_(
            "The segment '{name}' holds no record of what this module wrote (it was written by an older version, "
            "or made by hand), so its corrected slices cannot be told apart. Click Propagate to write it again, "
            "then correct and re-propagate.").format(name=resultSegment.GetName()))
    resultSegment.GetTag(corrections.CORRECTED_SLICES_TAG, previous)
    storedLimits = vtk.reference("")
    resultSegment.GetTag(corrections.ERASED_LIMITS_TAG, storedLimits)
    previousLimits = corrections.parseLimits(str(storedLimits))
    _checkPropagatedFrom(segmentationNode, resultSegment, segmentId)

    prepared = prepareInput(volumeNode, segmentationNode, segmentId, dataclasses.replace(options, keyframes=True),
                            masking=masking)
    if _writtenOnOtherGrid(resultSegment, volumeNode):
        raise InputError(_(
            "The segment '{name}' was written on another volume than '{volume}' (or on this one before it was "
            "moved or resampled), so its corrected slices cannot be told apart. Select the volume it "
            "was propagated on, or click Propagate to start again.").format(
                name=resultSegment.GetName(), volume=volumeNode.GetName()))
    current = segmentArray(volumeNode, segmentationNode, resultId) > 0
    try:
        plan = corrections.planCorrections(prepared.paintedSlices, current, str(written),
                                           corrections.parseSliceList(str(previous)), previousLimits)
    except ValueError as error:
        raise InputError(_(
            "The segment '{name}' is not on the grid of the volume '{volume}' it was written for ({error}). "
            "Select that volume, or click Propagate to start again.").format(
                name=resultSegment.GetName(), volume=volumeNode.GetName(), error=error)) from error
    erasedPainted = sorted(set(plan.erasedBetweenAnchors) & set(prepared.paintedSlices))
    if erasedPainted:
        painted = segmentationNode.GetSegmentation().GetSegment(segmentId)
        raise InputError(_(
            "Slice(s) {slices} of '{name}' were erased, but they are painted in '{painted}', whose outline the "
            "propagation keeps as drawn. To change a painted slice, edit '{painted}' itself and click Propagate; "
            "or undo the erasing and re-propagate.").format(
                slices=describe_slices(erasedPainted), name=resultSegment.GetName(), painted=painted.GetName()))
    if plan.erasedBetweenAnchors:  # "no tumour here" inside the tumour: the engine would fill it again
        kept = sorted(set(plan.anchors) | set(prepared.paintedSlices))
        raise InputError(_(
            "Slice(s) {slices} of '{name}' were erased, but lie between slices the propagation keeps (K = {kept}), "
            "where it would fill them again. Draw the tumour's outline on them (or undo the erasing); to end the "
            "tumour at a slice, erase that slice and every slice beyond it. Then re-propagate.").format(
                slices=describe_slices(plan.erasedBetweenAnchors), name=resultSegment.GetName(),
                kept=describe_slices(kept)))
    if not plan.changesAnything(previousLimits):
        raise InputError(_(
            "No slice of '{name}' was corrected since the module wrote it. Correct the slices that are wrong "
            "(Segment Editor: paint, erase, draw on '{name}'), then re-propagate.").format(
                name=resultSegment.GetName()))
    annotation = prepared.annotation.copy()
    for k in plan.anchors:
        annotation[k] = current[k]
    anchors = painted_slices(annotation)
    # The panel's slice limits, like its distance limit, give way to a slice the reader drew beyond them: it counts.
    lows = [k for k in (plan.minSlice, None if options.min_slice is None else min(options.min_slice, anchors[0]))
            if k is not None]
    highs = [k for k in (plan.maxSlice, None if options.max_slice is None else max(options.max_slice, anchors[-1]))
             if k is not None]
    if options.max_distance_mm is not None:  # measured from the painted slices, not from the corrected ones
        reach = slices_within(options.max_distance_mm, prepared.spacingXYZ[2])
        lows.append(min(min(prepared.paintedSlices) - reach, anchors[0]))  # a slice drawn further out: it counts
        highs.append(max(max(prepared.paintedSlices) + reach, anchors[-1]))
    limits = {}
    if lows:
        limits["min_slice"] = max(0, max(lows))
    if highs:
        limits["max_slice"] = min(highs)
    return dataclasses.replace(
        prepared, annotation=annotation, paintedSlices=anchors,
        options=dataclasses.replace(prepared.options, **limits), correctedSlices=list(plan.anchors),
        paintedAnnotation=prepared.annotation, erasedLimits=(plan.minSlice, plan.maxSlice))


def _checkPropagatedFrom(segmentationNode, resultSegment, segmentId: str) -> None:
    """InputError when the result was propagated from another painted segment than ``segmentId``: re-propagating
    would replace that lesion's (corrected) result with this one's."""
    source = paintedSegmentOf(resultSegment)
    if source is None or source[0] == segmentId:
        return
    segmentation = segmentationNode.GetSegmentation()
    selected = segmentation.GetSegment(segmentId)
    selectedName = selected.GetName() if selected is not None else segmentId
    sourceSegment = segmentation.GetSegment(source[0])
    if sourceSegment is not None:
        raise InputError(_(
            "'{result}' was propagated from the segment '{source}', not from '{selected}'. To correct that result, "
            "select '{source}' as the painted segment and re-propagate. To propagate '{selected}', rename "
            "'{result}' to keep it, then click Propagate.").format(
                result=resultSegment.GetName(), source=sourceSegment.GetName(), selected=selectedName))
    # Deleted and painted again under its name: another segment all the same ('|' is stored as '/').
    if source[1] == selectedName.replace("|", "/"):
        raise InputError(_(
            "'{result}' was propagated from an earlier segment '{source}', which was deleted; the selected "
            "'{selected}' is a new segment of that name, so the corrections of '{result}' are not re-propagated "
            "from it. Click Propagate to propagate the new '{selected}' (rename '{result}' first to keep "
            "it).").format(result=resultSegment.GetName(), source=source[1], selected=selectedName))
    raise InputError(_(
        "'{result}' was propagated from a segment ('{source}') that is no longer in the segmentation, not from "
        "'{selected}'. Click Propagate to propagate '{selected}' (rename '{result}' first to keep it).").format(
            result=resultSegment.GetName(), source=source[1], selected=selectedName))


def sliceCenterRAS(volumeNode, k: int, mask=None) -> tuple[float, float, float]:
    """World (RAS) position on the volume's K slice ``k`` for moving slice views there: the centre of ``mask``'s
    voxels on it (a (j, i) array: the result's, so that the sagittal and coronal views cross the tumour), else of
    the slice."""
    dims = volumeNode.GetImageData().GetDimensions()
    ijk = np.array([(dims[0] - 1) / 2.0, (dims[1] - 1) / 2.0, float(k), 1.0])
    if mask is not None and np.any(mask):
        j, i = np.nonzero(mask)
        ijk[:2] = float(i.mean()), float(j.mean())
    ras = ijkToRasArray(volumeNode) @ ijk
    transformNode = volumeNode.GetParentTransformNode()
    point = [float(v) for v in ras[:3]]
    if transformNode is not None:
        toWorld = vtk.vtkGeneralTransform()
        transformNode.GetTransformToWorld(toWorld)
        point = list(toWorld.TransformPoint(point))
    return tuple(point)
