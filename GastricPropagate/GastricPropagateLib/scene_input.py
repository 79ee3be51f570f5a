"""MRML -> arrays: the volume, the painted segment, the Segment Editor's masking, and the checks on them.

``prepareInput`` reads everything a run needs into a ``PreparedInput`` of private array copies, after checking the
inputs (each refusal says what to do). Nothing here writes to the scene: temporary nodes used for reading are
removed again (``temporaryNodes``), so the scene is left exactly as it was, whether a check passes or not.

Everything works in the volume's own IJK grid (array axes k, j, i), whatever its IJK-to-RAS direction: the engine's
"axial slice" is one K slice of the volume.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import vtk

import slicer
from gastric_propagate.data.annotation import describe_slices, painted_slices
from gastric_propagate.errors import InputError

from .i18n import _

if TYPE_CHECKING:  # the engine's pipeline imports torch: only load it where it is needed
    from gastric_propagate.inference.options import PropagationOptions

__all__ = [
    "Masking",
    "PreparedInput",
    "RESULT_TAG",
    "RESULT_TAG_VALUE",
    "checkRepresentation",
    "isLabelmapSource",
    "isResultSegment",
    "maskingFromSegmentEditorNode",
    "prepareCorrections",
    "prepareInput",
    "resultSegmentId",
    "resultSegmentName",
    "segmentArray",
    "setSourceRepresentationName",
    "sliceCenterRAS",
    "sourceRepresentationName",
    "temporaryNodes",
    "temporarySegmentationNode",
]

#: Segment tag that marks the segment this module wrote (the name alone could be typed by a user).
RESULT_TAG = "GastricPropagate.Role"
RESULT_TAG_VALUE = "propagated"

# Spacing / direction agreement between the painted segment's grid and the volume's (relative, and in voxels).
_GRID_RTOL = 1e-3
_ORIGIN_VOXEL_TOL = 0.01


def resultSegmentName() -> str:
    """Name of the segment the module writes (translated)."""
    return _("Tumour (propagated)")


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


def _axisName(direction: np.ndarray) -> str:
    """Anatomical name of the RAS axis closest to ``direction``."""
    names = (_("left-right"), _("anterior-posterior"), _("superior-inferior"))
    return names[int(np.argmax(np.abs(direction)))]


def _ijkToRasArray(volumeNode) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def nodeIds(scene) -> set[str]:
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


@contextlib.contextmanager
def temporaryNodes(scene):
    """Removes, on exit, every node added to ``scene`` inside the block (temporary labelmaps and the display,
    colour and storage nodes that exporting creates for them), whether the block succeeded or not."""
    before = nodeIds(scene)
    try:
        yield
    finally:
        added = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
        added = [node for node in added if node.GetID() not in before]
        # Data nodes first: removing them also removes their display/storage nodes.
        added.sort(key=lambda node: 0 if node.IsA("vtkMRMLVolumeNode") else 1)
        for node in added:
            if node.GetScene() is scene:
                scene.RemoveNode(node)


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

    image = np.array(slicer.util.arrayFromVolume(volumeNode), copy=True)
    annotation = (segmentArray(volumeNode, segmentationNode, segmentId) > 0).astype(np.uint8)
    segmentName = segmentationNode.GetSegmentation().GetSegment(segmentId).GetName()

    painted = painted_slices(annotation)
    if not painted:
        raise InputError(_(
            "The segment '{segment}' has no painted voxels inside the volume '{volume}'. Paint the tumour's "
            "largest cross-section on one axial slice of this volume (Segment Editor, Paint or Draw), then "
            "run again.").format(segment=segmentName, volume=volumeNode.GetName()))
    outside = _paintedVoxelsOutsideVolume(volumeNode, segmentationNode, segmentId, int(annotation.sum()))
    if outside > 0:
        raise InputError(_(
            "{count} painted voxels of the segment '{segment}' lie outside the volume '{volume}'. Paint inside "
            "the volume (or select the volume the segment was painted on), then run again.").format(
                count=outside, segment=segmentName, volume=volumeNode.GetName()))
    if len(painted) > 1 and not options.keyframes:
        kAxis = _ijkToRasArray(volumeNode)[:3, 2]
        hint = ""
        if abs(kAxis[2]) < 0.7 * np.linalg.norm(kAxis):
            hint = " " + _(
                "Note: this volume's slice axis (K) runs {axis}, so its K slices are not axial: paint in the "
                "slice view aligned with the volume's slices.").format(axis=_axisName(kAxis))
        raise InputError(_(
            "The segment '{segment}' has painted voxels on {count} slices of the volume's K axis (K = {slices}). "
            "Paint the largest cross-section on one slice only and erase the others, or switch on keyframes "
            "to use several painted slices as fixed anchors.").format(
                segment=segmentName, count=len(painted), slices=describe_slices(painted)) + hint)
    if masking.editable is not None and masking.editable.shape != image.shape:
        raise InputError(_(
            "The editable-area mask has shape {mask} but the volume has shape {image} (K, J, I). Build the "
            "mask on the volume's grid.").format(mask=masking.editable.shape, image=image.shape))

    spacing = tuple(float(s) for s in volumeNode.GetSpacing())
    return PreparedInput(
        volumeNode=volumeNode, segmentationNode=segmentationNode, paintedSegmentId=segmentId,
        image=image, spacingXYZ=spacing, annotation=annotation, paintedSlices=painted,
        options=options, masking=masking)


def prepareCorrections(volumeNode, segmentationNode, segmentId: str,
                       options: "PropagationOptions | None" = None, *, masking: Masking | None = None) -> PreparedInput:
    """Reads the inputs of a re-propagation: the painted slices plus the slices the reader corrected in the result.

    The result segment this module wrote (``resultSegmentId``) is compared with the record stored when it was
    written (``corrections.planCorrections``): every slice the reader edited or drew there since becomes an
    anchor, kept exactly, beside the painted segment's slices (a corrected painted slice: the correction wins);
    slices erased beyond every anchor become the lowest / highest slice limit. Keyframes are on. The painted
    segment is read, never changed; nothing in the scene changes.

    Raises:
        InputError: no result segment, no record of what was written, or nothing corrected since; plus every
            refusal of ``prepareInput``.
    """
    import dataclasses

    from gastric_propagate.inference.options import PropagationOptions

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

    prepared = prepareInput(volumeNode, segmentationNode, segmentId, dataclasses.replace(options, keyframes=True),
                            masking=masking)
    current = segmentArray(volumeNode, segmentationNode, resultId) > 0
    try:
        plan = corrections.planCorrections(prepared.paintedSlices, current, str(written),
                                           corrections.parseSliceList(str(previous)))
    except ValueError as error:
        raise InputError(_(
            "The segment '{name}' is not on the grid of the volume '{volume}' it was written for ({error}). "
            "Select that volume, or click Propagate to start again.").format(
                name=resultSegment.GetName(), volume=volumeNode.GetName(), error=error)) from error
    if not plan.changesAnything():
        raise InputError(_(
            "No slice of '{name}' was corrected since the module wrote it. Correct the slices that are wrong "
            "(Segment Editor: paint, erase, draw on '{name}'), then re-propagate.").format(
                name=resultSegment.GetName()))
    annotation = prepared.annotation.copy()
    for k in plan.anchors:
        annotation[k] = current[k]
    limits = {}
    if plan.minSlice is not None:
        limits["min_slice"] = max(plan.minSlice, options.min_slice if options.min_slice is not None else -1)
    if plan.maxSlice is not None:
        limits["max_slice"] = min(plan.maxSlice, options.max_slice if options.max_slice is not None
                                  else plan.maxSlice)
    if plan.ignoredErased:
        logging.getLogger(__name__).warning(
            "GastricPropagate: slices %s were erased between anchors; only erasing beyond the first or last "
            "anchor limits the propagation, so they may be filled again", describe_slices(plan.ignoredErased))
    return dataclasses.replace(
        prepared, annotation=annotation, paintedSlices=painted_slices(annotation),
        options=dataclasses.replace(prepared.options, **limits), correctedSlices=list(plan.anchors))


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
    volumeTransform = volumeNode.GetTransformNodeID()
    segmentationTransform = segmentationNode.GetTransformNodeID()
    if volumeTransform != segmentationTransform:
        raise InputError(_(
            "The volume '{volume}' and the segmentation '{seg}' are under different transforms. Harden the "
            "transforms (Data module, right-click > Harden transform) or put both under the same one.").format(
                volume=volumeNode.GetName(), seg=segmentationNode.GetName()))


def _binaryLabelmapName() -> str:
    return slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()


def sourceRepresentationName(segmentation) -> str:
    """The representation a segmentation stores its segments in (binary labelmap, closed surface, ...)."""
    getter = getattr(segmentation, "GetSourceRepresentationName", None) or segmentation.GetMasterRepresentationName
    return getter()


def setSourceRepresentationName(segmentation, name: str) -> None:
    setter = getattr(segmentation, "SetSourceRepresentationName", None) or segmentation.SetMasterRepresentationName
    setter(name)


def isLabelmapSource(segmentation) -> bool:
    """Whether the segmentation stores binary labelmaps (the Segment Editor's own representation)."""
    return sourceRepresentationName(segmentation) == _binaryLabelmapName()


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
    if source == _binaryLabelmapName():
        return
    labelmapSource = slicer.vtkSegmentation()
    setSourceRepresentationName(labelmapSource, _binaryLabelmapName())
    if not (_hasConversion(segmentation, _binaryLabelmapName()) and _hasConversion(labelmapSource, source)):
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
    differ (labelmaps are often cropped). Exporting a mismatched segment would resample it, and a painted axial
    slice would smear over several K slices or lose voxels, so the user is asked to fix the inputs instead.
    """
    segmentation = segmentationNode.GetSegmentation()
    if not isLabelmapSource(segmentation):
        return  # e.g. closed surfaces: segmentArray rasterises them onto the volume's own grid, nothing to compare
    labelmap = segmentation.GetSegment(segmentId).GetRepresentation(_binaryLabelmapName())
    if labelmap is None or labelmap.IsEmpty():
        return  # the empty-segment check reports this case
    matrix = vtk.vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(matrix)
    segmentGrid = slicer.util.arrayFromVTKMatrix(matrix)
    volumeGrid = _ijkToRasArray(volumeNode)
    segmentSpacing = np.linalg.norm(segmentGrid[:3, :3], axis=0)
    volumeSpacing = np.linalg.norm(volumeGrid[:3, :3], axis=0)
    problems = []
    if not np.allclose(segmentSpacing, volumeSpacing, rtol=_GRID_RTOL, atol=0):
        problems.append(_("its voxels are {seg} mm, the volume's are {vol} mm").format(
            seg=" x ".join(f"{s:.3g}" for s in segmentSpacing),
            vol=" x ".join(f"{s:.3g}" for s in volumeSpacing)))
    elif not np.allclose(segmentGrid[:3, :3] / segmentSpacing, volumeGrid[:3, :3] / volumeSpacing,
                         atol=_GRID_RTOL):
        problems.append(_("its axes are oriented differently from the volume's"))
    else:
        offset = np.linalg.solve(volumeGrid[:3, :3], segmentGrid[:3, 3] - volumeGrid[:3, 3])
        if np.max(np.abs(offset - np.round(offset))) > _ORIGIN_VOXEL_TOL:
            problems.append(_("its voxels are shifted by a fraction of a voxel from the volume's"))
    if problems:
        segmentName = segmentation.GetSegment(segmentId).GetName()
        raise InputError(_(
            "The segment '{segment}' was painted on a different image grid than the volume '{volume}': "
            "{problem}. Select the volume the segment was painted on (the Segment Editor's source volume), or "
            "repaint the segment on '{volume}'.").format(
                segment=segmentName, volume=volumeNode.GetName(), problem="; ".join(problems)))


def _paintedVoxelsOutsideVolume(volumeNode, segmentationNode, segmentId: str, insideCount: int) -> int:
    """How many voxels of the segment's own labelmap fall outside the volume (0 if it cannot be told).

    A segment stored as a closed surface (or another representation) is counted on its conversion onto the
    volume's lattice, which covers the whole surface, not only the part inside the volume.
    """
    with _labelmapOf(volumeNode, segmentationNode, segmentId) as (node, labelmapSegmentId):
        segment = node.GetSegmentation().GetSegment(labelmapSegmentId)
        labelmap = segment.GetRepresentation(_binaryLabelmapName())
        if labelmap is None or labelmap.IsEmpty() or labelmap.GetPointData().GetScalars() is None:
            return 0
        from vtkmodules.util.numpy_support import vtk_to_numpy

        values = vtk_to_numpy(labelmap.GetPointData().GetScalars())
        total = int(np.count_nonzero(values == segment.GetLabelValue()))
    return max(0, total - insideCount)


_TEMP_NAME = "__GastricPropagate_temp__"


@contextlib.contextmanager
def _labelmapOf(volumeNode, segmentationNode, segmentId: str):
    """Yields (segmentation node, segment ID) of the segment as a binary labelmap, without changing the scene.

    A labelmap segmentation yields itself. Any other source representation (a closed surface loaded from STL or
    OBJ, ...) is converted by Slicer's own rules, on a copy of the segment in a temporary segmentation node whose
    reference geometry is the volume's grid: the user's segmentation gets no derived labelmap, and a reference
    geometry of its own (often coarser, or none) cannot smear a painted slice over two slices. The temporary node
    is removed on exit.
    """
    segmentation = segmentationNode.GetSegmentation()
    if isLabelmapSource(segmentation):
        yield segmentationNode, segmentId
        return
    source = sourceRepresentationName(segmentation)
    representation = segmentation.GetSegment(segmentId).GetRepresentation(source)
    with temporaryNodes(volumeNode.GetScene()):
        node = temporarySegmentationNode(volumeNode, source)
        node.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        segment = slicer.vtkSegment()
        segment.SetName(_TEMP_NAME)
        segment.SetColor(0.5, 0.5, 0.5)  # a valid colour: exporting builds a colour table from it
        if representation is not None:
            copy = representation.NewInstance()
            copy.DeepCopy(representation)
            segment.AddRepresentation(source, copy)
        if not node.GetSegmentation().AddSegment(segment, _TEMP_NAME) or \
                not node.GetSegmentation().CreateRepresentation(_binaryLabelmapName()):
            raise RuntimeError(_("Could not convert the segment '{id}' ({representation}) to a binary labelmap."
                                 ).format(id=segmentId, representation=source))
        yield node, _TEMP_NAME


def temporarySegmentationNode(volumeNode, sourceName: str):
    """A new segmentation node in the volume's scene and frame storing ``sourceName``; call inside
    ``temporaryNodes`` (which removes it)."""
    node = volumeNode.GetScene().AddNewNodeByClass("vtkMRMLSegmentationNode", _TEMP_NAME)
    node.CreateDefaultDisplayNodes()
    node.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
    setSourceRepresentationName(node.GetSegmentation(), sourceName)
    return node


def segmentArray(volumeNode, segmentationNode, segmentId: str) -> np.ndarray:
    """The segment as a (k, j, i) array on the volume's grid (non-zero inside), whatever the segmentation's
    source representation (see ``_labelmapOf``). The scene is left unchanged."""
    scene = volumeNode.GetScene()
    with _labelmapOf(volumeNode, segmentationNode, segmentId) as (node, labelmapSegmentId), temporaryNodes(scene):
        segmentIds = vtk.vtkStringArray()
        segmentIds.InsertNextValue(labelmapSegmentId)
        labelmapNode = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", _TEMP_NAME)
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            node, segmentIds, labelmapNode, volumeNode)
        if not ok:
            raise RuntimeError(_("Could not read the segment '{id}' on the grid of '{volume}'.").format(
                id=segmentId, volume=volumeNode.GetName()))
        array = np.array(slicer.util.arrayFromVolume(labelmapNode), copy=True)
    if array.shape != tuple(reversed(volumeNode.GetImageData().GetDimensions())):
        raise RuntimeError(_("Exporting the segment gave an array of shape {got}, not the volume's {want}.").format(
            got=array.shape, want=tuple(reversed(volumeNode.GetImageData().GetDimensions()))))
    return array


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


def sliceCenterRAS(volumeNode, k: int) -> tuple[float, float, float]:
    """World (RAS) position of the centre of the volume's K slice ``k`` (for moving slice views there)."""
    dims = volumeNode.GetImageData().GetDimensions()
    ijk = np.array([(dims[0] - 1) / 2.0, (dims[1] - 1) / 2.0, float(k), 1.0])
    ras = _ijkToRasArray(volumeNode) @ ijk
    transformNode = volumeNode.GetParentTransformNode()
    point = [float(v) for v in ras[:3]]
    if transformNode is not None:
        toWorld = vtk.vtkGeneralTransform()
        transformNode.GetTransformToWorld(toWorld)
        point = list(toWorld.TransformPoint(point))
    return tuple(point)


def maskingFromSegmentEditorNode(editorNode, volumeNode, segmentationNode, paintedSegmentId: str) -> Masking:
    """Turns the Segment Editor's masking settings into a ``Masking`` on the volume's grid.

    Segment-based modes count every segment except the painted one and this module's result (the result
    continues the painted segment, so neither may block it). They apply only when the editor works on the
    same segmentation; the intensity range applies in any case.

    Raises:
        InputError: the masking names a single segment that no longer exists (never silently unmasked).
    """
    if editorNode is None:
        return Masking()
    node = slicer.vtkMRMLSegmentationNode
    editable = None
    parts = []
    if editorNode.GetSegmentationNode() is segmentationNode and segmentationNode is not None:
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
                    "existing segment for 'Editable area' (or 'Everywhere'), or untick 'Use Segment Editor "
                    "masking' here, then run again.").format(
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
