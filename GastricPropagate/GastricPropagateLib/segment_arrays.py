"""A segment as an array on the volume's grid, whatever representation its segmentation stores.

Reading goes through temporary nodes (``temporaryNodes``) that are removed again, so the scene is left exactly as it
was. The representation helpers here are also what ``scene_output`` writes the result with.
"""

from __future__ import annotations

import contextlib

import numpy as np
import vtk

import slicer

from .i18n import _

__all__ = [
    "binaryLabelmapName",
    "ijkToRasArray",
    "isLabelmapSource",
    "paintedVoxelsOutsideVolume",
    "segmentArray",
    "setSourceRepresentationName",
    "sourceRepresentationName",
    "temporaryNodes",
    "temporarySegmentationNode",
]


def ijkToRasArray(volumeNode) -> np.ndarray:
    """The volume's IJK-to-RAS matrix (4 x 4)."""
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


def binaryLabelmapName() -> str:
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
    return sourceRepresentationName(segmentation) == binaryLabelmapName()


def paintedVoxelsOutsideVolume(volumeNode, segmentationNode, segmentId: str, insideCount: int) -> int:
    """How many voxels of the segment's own labelmap fall outside the volume (0 if it cannot be told).

    A segment stored as a closed surface (or another representation) is counted on its conversion onto the
    volume's lattice, which covers the whole surface, not only the part inside the volume.
    """
    with _labelmapOf(volumeNode, segmentationNode, segmentId) as (node, labelmapSegmentId):
        segment = node.GetSegmentation().GetSegment(labelmapSegmentId)
        labelmap = segment.GetRepresentation(binaryLabelmapName())
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
                not node.GetSegmentation().CreateRepresentation(binaryLabelmapName()):
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

