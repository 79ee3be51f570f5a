"""GastricPropagateLogic: MRML -> arrays -> engine (a child process) -> arrays -> MRML.

``prepare`` reads the scene, ``start`` runs the engine's ``segment`` command on those arrays in a child process
(``runner.py``: poll it, cancel it), ``apply`` writes its result into the scene. ``compute`` is ``start`` plus a
blocking wait, and ``run`` chains prepare, compute and apply for batch use. All of it runs on the main thread; only
the child process computes.

A failure in any step leaves the scene as it was: temporary nodes are removed in ``finally`` blocks, and the
result segment and the results table are only written once everything before them has succeeded.

Everything works in the volume's own IJK grid (array axes k, j, i), whatever its IJK-to-RAS direction: the engine's
"axial slice" is one K slice of the volume.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np
import vtk

import slicer
from gastric_propagate.data.annotation import describe_slices, painted_slices
from gastric_propagate.errors import Cancelled, InputError, WeightsError

from .i18n import _
from .results_table import RESULTS_TABLE_NAME, SegmentStatistics, fillResultsTable, segmentStatistics
from .runner import InferenceJob, Progress, RunResult, startInference

if TYPE_CHECKING:  # the engine's pipeline imports torch: only load it where it is needed
    from gastric_propagate.inference.pipeline import PropagationOptions

__all__ = [
    "RESULTS_TABLE_NAME",
    "Cancelled",
    "GastricPropagateLogic",
    "InputError",
    "Masking",
    "PreparedInput",
    "Progress",
    "ResultSegmentExistsError",
    "RunResult",
    "WeightsError",
    "resultSegmentName",
]

logger = logging.getLogger(__name__)

#: Segment tag that marks the segment this module wrote (the name alone could be typed by a user).
RESULT_TAG = "GastricPropagate.Role"
RESULT_TAG_VALUE = "propagated"
#: Table node attribute holding the ID of the segmentation node the results table describes.
TABLE_SEGMENTATION_ATTRIBUTE = "GastricPropagate.SegmentationNodeID"

# Candidate colours for the result segment; the one farthest from every existing segment colour is used.
_RESULT_COLOURS = (
    (0.98, 0.78, 0.10),  # amber
    (0.10, 0.85, 0.95),  # cyan
    (0.95, 0.30, 0.85),  # magenta
    (0.35, 0.95, 0.35),  # green
    (0.30, 0.45, 1.00),  # blue
)

# Spacing / direction agreement between the painted segment's grid and the volume's (relative, and in voxels).
_GRID_RTOL = 1e-3
_ORIGIN_VOXEL_TOL = 0.01


def resultSegmentName() -> str:
    """Name of the segment the module writes (translated)."""
    return _("Tumour (propagated)")


class ResultSegmentExistsError(InputError):
    """The result segment already exists and the caller did not ask to replace it."""


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


def _nodeName(node) -> str:
    return node.GetName() if node is not None else ""


def _axisName(direction: np.ndarray) -> str:
    """Anatomical name of the RAS axis closest to ``direction``."""
    names = (_("left-right"), _("anterior-posterior"), _("superior-inferior"))
    return names[int(np.argmax(np.abs(direction)))]


def _ijkToRasArray(volumeNode) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def _nodeIds(scene) -> set[str]:
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


@contextlib.contextmanager
def _temporaryNodes(scene):
    """Removes, on exit, every node added to ``scene`` inside the block (temporary labelmaps and the display,
    colour and storage nodes that exporting creates for them), whether the block succeeded or not."""
    before = _nodeIds(scene)
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


class GastricPropagateLogic:
    """Propagates one painted axial slice of a gastric tumour into a 3D segment.

    Usable without the Widget (batch scripts, tests)::

        logic = GastricPropagateLogic()
        resultId, result = logic.run(volumeNode, segmentationNode, paintedSegmentId)

    Args:
        device: torch device for the engine ("auto", "cpu", "cuda", "cuda:1", ...).
        proposerPath, refinerPath: weights files; None = the weights bundled with the engine.
        launcher: starts the child process: ``runner.PopenLauncher()`` (the default, batch and tests) or
            ``runner.QProcessLauncher()`` (the Slicer application).
        python: the interpreter that runs the engine (default: PythonSlicer in Slicer, else this one).
    """

    def __init__(self, *, device: str = "auto", proposerPath=None, refinerPath=None, launcher=None,
                 python: str | None = None) -> None:
        self.device = device
        self.proposerPath = proposerPath
        self.refinerPath = refinerPath
        self.launcher = launcher
        self.python = python

    # ------------------------------------------------------------------ step 1: MRML -> arrays

    def prepare(self, volumeNode, segmentationNode, segmentId: str, options: "PropagationOptions | None" = None,
                *, masking: Masking | None = None) -> PreparedInput:
        """Reads the volume and the painted segment into arrays and checks them (main thread).

        Raises:
            InputError: with what to do, for a missing/unsuitable volume, segmentation or segment, an empty
                segment, a segment painted on another image grid, or painted voxels on several K slices.
        """
        from gastric_propagate.inference.pipeline import PropagationOptions

        options = options if options is not None else PropagationOptions()
        masking = masking if masking is not None else Masking()
        self._checkVolume(volumeNode)
        self._checkSegmentation(volumeNode, segmentationNode, segmentId)
        self._checkSegmentGrid(volumeNode, segmentationNode, segmentId)

        image = np.array(slicer.util.arrayFromVolume(volumeNode), copy=True)
        annotation = (self.segmentArray(volumeNode, segmentationNode, segmentId) > 0).astype(np.uint8)
        segmentName = segmentationNode.GetSegmentation().GetSegment(segmentId).GetName()

        painted = painted_slices(annotation)
        if not painted:
            raise InputError(_(
                "The segment '{segment}' has no painted voxels inside the volume '{volume}'. Paint the tumour's "
                "largest cross-section on one axial slice of this volume (Segment Editor, Paint or Draw), then "
                "run again.").format(segment=segmentName, volume=volumeNode.GetName()))
        outside = self._paintedVoxelsOutsideVolume(segmentationNode, segmentId, int(annotation.sum()))
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

    def _checkVolume(self, volumeNode) -> None:
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

    def _checkSegmentation(self, volumeNode, segmentationNode, segmentId: str) -> None:
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
        if self._isResultSegment(segment):
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

    @staticmethod
    def _binaryLabelmapName() -> str:
        return slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()

    @staticmethod
    def _sourceRepresentationName(segmentation) -> str:
        getter = getattr(segmentation, "GetSourceRepresentationName", None) or segmentation.GetMasterRepresentationName
        return getter()

    def _checkSegmentGrid(self, volumeNode, segmentationNode, segmentId: str) -> None:
        """Refuses a segment painted on another image grid than the volume's.

        "Same grid" at MRML level: the segment's binary labelmap (its source representation) has the volume's voxel
        spacing and axis directions, and its origin lies a whole number of voxels from the volume's. The extents may
        differ (labelmaps are often cropped). Exporting a mismatched segment would resample it, and a painted axial
        slice would smear over several K slices or lose voxels, so the user is asked to fix the inputs instead.
        """
        segmentation = segmentationNode.GetSegmentation()
        if self._sourceRepresentationName(segmentation) != self._binaryLabelmapName():
            return  # e.g. closed surfaces: exporting rasterises them onto the volume's grid, nothing to compare
        labelmap = segmentation.GetSegment(segmentId).GetRepresentation(self._binaryLabelmapName())
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

    def _paintedVoxelsOutsideVolume(self, segmentationNode, segmentId: str, insideCount: int) -> int:
        """How many voxels of the segment's own labelmap fall outside the volume (0 if it cannot be told)."""
        segmentation = segmentationNode.GetSegmentation()
        if self._sourceRepresentationName(segmentation) != self._binaryLabelmapName():
            return 0
        segment = segmentation.GetSegment(segmentId)
        labelmap = segment.GetRepresentation(self._binaryLabelmapName())
        if labelmap is None or labelmap.IsEmpty() or labelmap.GetPointData().GetScalars() is None:
            return 0
        from vtkmodules.util.numpy_support import vtk_to_numpy

        values = vtk_to_numpy(labelmap.GetPointData().GetScalars())
        total = int(np.count_nonzero(values == segment.GetLabelValue()))
        return max(0, total - insideCount)

    # ------------------------------------------------------------------ MRML helpers (main thread)

    def segmentArray(self, volumeNode, segmentationNode, segmentId: str) -> np.ndarray:
        """The segment as a (k, j, i) array on the volume's grid (non-zero inside). The scene is left unchanged."""
        scene = volumeNode.GetScene()
        segmentIds = vtk.vtkStringArray()
        segmentIds.InsertNextValue(segmentId)
        with _temporaryNodes(scene):
            labelmapNode = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__GastricPropagate_temp__")
            ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                segmentationNode, segmentIds, labelmapNode, volumeNode)
            if not ok:
                raise RuntimeError(_("Could not read the segment '{id}' on the grid of '{volume}'.").format(
                    id=segmentId, volume=volumeNode.GetName()))
            array = np.array(slicer.util.arrayFromVolume(labelmapNode), copy=True)
        if array.shape != tuple(reversed(volumeNode.GetImageData().GetDimensions())):
            raise RuntimeError(_("Exporting the segment gave an array of shape {got}, not the volume's {want}.").format(
                got=array.shape, want=tuple(reversed(volumeNode.GetImageData().GetDimensions()))))
        return array

    @staticmethod
    def _isResultSegment(segment) -> bool:
        value = vtk.reference("")
        return bool(segment.GetTag(RESULT_TAG, value)) and str(value) == RESULT_TAG_VALUE

    def resultSegmentId(self, segmentationNode) -> str | None:
        """ID of the segment this module wrote into ``segmentationNode`` (tagged, or by name), or None."""
        if segmentationNode is None:
            return None
        segmentation = segmentationNode.GetSegmentation()
        byName = None
        for index in range(segmentation.GetNumberOfSegments()):
            segment = segmentation.GetNthSegment(index)
            if self._isResultSegment(segment):
                return segmentation.GetNthSegmentID(index)
            if byName is None and segment.GetName() == resultSegmentName():
                byName = segmentation.GetNthSegmentID(index)
        return byName

    def sliceCenterRAS(self, volumeNode, k: int) -> tuple[float, float, float]:
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

    def maskingFromSegmentEditorNode(self, editorNode, volumeNode, segmentationNode, paintedSegmentId: str) -> Masking:
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
            excluded = {paintedSegmentId, self.resultSegmentId(segmentationNode)}
            others = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
            others = [s for s in others if s not in excluded]
            displayNode = segmentationNode.GetDisplayNode()

            def visible(segmentId):
                return displayNode is None or displayNode.GetSegmentVisibility(segmentId)

            def union(segmentIds):
                mask = np.zeros(tuple(reversed(volumeNode.GetImageData().GetDimensions())), dtype=bool)
                for segmentId in segmentIds:
                    mask |= self.segmentArray(volumeNode, segmentationNode, segmentId) > 0
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

    # ------------------------------------------------------------------ step 2: the engine, in a child process

    def start(self, prepared: PreparedInput, onProgress: Callable[[Progress], None] | None = None) -> InferenceJob:
        """Starts the engine on the prepared arrays in a child process and returns at once.

        Poll the job (``job.poll()``, from a timer), cancel it (``job.cancel()``), and once it has finished pass
        ``job.result()`` to ``apply``. Nothing in the scene changes until ``apply``.
        """
        return startInference(prepared.image, prepared.spacingXYZ, prepared.annotation, prepared.options,
                              device=self.device, proposerPath=self.proposerPath, refinerPath=self.refinerPath,
                              launcher=self.launcher, python=self.python, onProgress=onProgress)

    def compute(self, prepared: PreparedInput, progress: Callable[[Progress], None] | None = None,
                shouldStop: Callable[[], bool] | None = None, timeout: float | None = None) -> RunResult:
        """Runs the engine on the prepared arrays and waits for it (batch use). Touches no MRML node.

        ``shouldStop`` is polled while the child runs; when it returns True the child is ended and Cancelled
        raised.

        Raises:
            InputError, WeightsError, Cancelled: from the engine; RuntimeError when the process fails otherwise.
        """
        if shouldStop is not None and shouldStop():
            raise Cancelled(_("Cancelled before the propagation started."))
        job = self.start(prepared, onProgress=progress)
        try:
            if not job.wait(timeout, shouldStop=shouldStop):
                raise RuntimeError(_("The segmentation process did not finish within {seconds:g} s.").format(
                    seconds=timeout))
        except BaseException:
            job.cancel()
            raise
        return job.result()

    # ------------------------------------------------------------------ step 3: arrays -> MRML

    def apply(self, prepared: PreparedInput, result: RunResult, replaceExisting: bool = False) -> str:
        """Writes the result as a new segment beside the painted one and updates the results table (main thread).

        The painted segment and every other segment stay untouched; on the propagated slices voxels outside
        ``prepared.masking`` are never set, and the painted slices equal the painted voxels exactly. Returns the
        result segment's ID.

        Raises:
            ResultSegmentExistsError: the result segment exists and ``replaceExisting`` is False.
            InputError: the inputs left the scene, or the masking leaves nothing of the result.
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
        # The painted slices are the user's own drawing: they are kept exactly, whatever the masking says.
        painted = np.zeros(mask.shape, dtype=bool)
        painted[prepared.paintedSlices] = True
        allowed = prepared.masking.allowed(prepared.image)
        if allowed is not None:
            propagated = mask & ~painted
            mask = np.where(painted, prepared.annotation > 0, mask & allowed)
            if propagated.any() and not (mask & ~painted).any():
                raise InputError(_(
                    "The result is empty inside the editable area: beyond the painted slice nothing is left. Check "
                    "the Segment Editor's masking settings (or untick 'Use Segment Editor masking'), then run "
                    "again."))
        else:
            mask[painted] = prepared.annotation[painted] > 0
        if not mask.any():
            raise InputError(_("The result is empty. Check the painted slice."))

        existingId = self.resultSegmentId(segmentationNode)
        if existingId is not None and not replaceExisting:
            raise ResultSegmentExistsError(_(
                "The segmentation '{seg}' already has a segment '{name}'. Confirm replacing it (or rename that "
                "segment to keep it) and run again.").format(
                    seg=segmentationNode.GetName(), name=segmentation.GetSegment(existingId).GetName()))

        # Everything the table needs is computed before the first write, so a failure here changes nothing.
        spacing = prepared.spacingXYZ
        statistics: dict[str, SegmentStatistics] = {}
        for index in range(segmentation.GetNumberOfSegments()):
            segmentId = segmentation.GetNthSegmentID(index)
            if segmentId == existingId:
                continue
            array = (prepared.annotation if segmentId == prepared.paintedSegmentId
                     else self.segmentArray(volumeNode, segmentationNode, segmentId))
            statistics[segmentId] = segmentStatistics(array, spacing)
        resultStatistics = segmentStatistics(mask, spacing)

        resultId = self._writeResultSegment(prepared, mask, existingId)
        statistics[resultId] = resultStatistics
        self._updateResultsTable(prepared, result, resultId, statistics)
        return resultId

    def _resultColour(self, segmentation, skipId: str | None) -> tuple[float, float, float]:
        used = [np.array(segmentation.GetNthSegment(i).GetColor()) for i in range(segmentation.GetNumberOfSegments())
                if segmentation.GetNthSegmentID(i) != skipId]
        if not used:
            return _RESULT_COLOURS[0]
        return max(_RESULT_COLOURS, key=lambda c: min(np.linalg.norm(np.array(c) - u) for u in used))

    def _writeResultSegment(self, prepared: PreparedInput, mask: np.ndarray, existingId: str | None) -> str:
        volumeNode, segmentationNode = prepared.volumeNode, prepared.segmentationNode
        scene = volumeNode.GetScene()
        segmentation = segmentationNode.GetSegmentation()
        name = resultSegmentName()
        createdId = None
        with _temporaryNodes(scene):
            labelmapNode = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__GastricPropagate_temp__")
            labelmapNode.CopyOrientation(volumeNode)
            labelmapNode.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
            slicer.util.updateVolumeFromArray(labelmapNode, mask.astype(np.uint8))
            if existingId is None:
                colour = self._resultColour(segmentation, None)
                createdId = segmentation.AddEmptySegment("", name, colour)
                targetId = createdId
            else:
                targetId = existingId
            segmentIds = vtk.vtkStringArray()
            segmentIds.InsertNextValue(targetId)
            try:
                ok = slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
                    labelmapNode, segmentationNode, segmentIds)
                if not ok:
                    raise RuntimeError(_("Could not write the result into the segmentation '{seg}'.").format(
                        seg=segmentationNode.GetName()))
            except BaseException:
                if createdId is not None:
                    segmentation.RemoveSegment(createdId)
                raise
        segment = segmentation.GetSegment(targetId)
        segment.SetName(name)
        segment.SetTag(RESULT_TAG, RESULT_TAG_VALUE)
        painted = segmentation.GetSegment(prepared.paintedSegmentId)
        segment.SetTag("GastricPropagate.PaintedSegmentID", prepared.paintedSegmentId)
        segment.SetTag("GastricPropagate.PaintedSegmentName", painted.GetName())
        return targetId

    def resultsTableNode(self, segmentationNode, create: bool = False):
        """The results table of ``segmentationNode`` (found by attribute), created when ``create`` is True."""
        scene = segmentationNode.GetScene()
        for index in range(scene.GetNumberOfNodesByClass("vtkMRMLTableNode")):
            table = scene.GetNthNodeByClass(index, "vtkMRMLTableNode")
            if table.GetAttribute(TABLE_SEGMENTATION_ATTRIBUTE) == segmentationNode.GetID():
                return table
        if not create:
            return None
        table = scene.AddNewNodeByClass("vtkMRMLTableNode", RESULTS_TABLE_NAME)
        table.SetAttribute(TABLE_SEGMENTATION_ATTRIBUTE, segmentationNode.GetID())
        return table

    def _updateResultsTable(self, prepared: PreparedInput, result, resultId: str,
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
        table = self.resultsTableNode(segmentationNode, create=True)
        fillResultsTable(table, rows, resultId=resultId, seconds=float(result.seconds), device=str(result.device),
                         volumeName=prepared.volumeNode.GetName())

    # ------------------------------------------------------------------ all three

    def run(self, volumeNode, segmentationNode, segmentId: str, options: "PropagationOptions | None" = None, *,
            masking: Masking | None = None, replaceExisting: bool = False,
            progress: Callable[[Progress], None] | None = None,
            shouldStop: Callable[[], bool] | None = None) -> tuple[str, RunResult]:
        """prepare + compute + apply in the calling thread. Returns (result segment ID, engine result)."""
        prepared = self.prepare(volumeNode, segmentationNode, segmentId, options, masking=masking)
        existingId = self.resultSegmentId(segmentationNode)
        if existingId is not None and not replaceExisting:
            raise ResultSegmentExistsError(_(
                "The segmentation '{seg}' already has a segment '{name}'. Pass replaceExisting=True to replace it."
            ).format(seg=segmentationNode.GetName(), name=segmentationNode.GetSegmentation().GetSegment(
                existingId).GetName()))
        result = self.compute(prepared, progress=progress, shouldStop=shouldStop)
        resultId = self.apply(prepared, result, replaceExisting=replaceExisting)
        logger.info("GastricPropagate: segment %s written in %.1f s on %s", resultId, result.seconds, result.device)
        return resultId, result
