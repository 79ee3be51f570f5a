"""A segment as an array on the volume's grid, whatever representation its segmentation stores.

Reading goes through temporary nodes (``temporaryNodes``) that are removed again, so the scene is left exactly as it
was. The representation helpers here are also what ``scene_output`` writes the result with.
"""

from __future__ import annotations

import contextlib

import numpy as np
import vtk

import slicer

from gastric_propagate.data.lattice import signed_permutation

from .i18n import _

__all__ = [
    "binaryLabelmapName",
    "ijkToRasArray",
    "ijkToWorldArray",
    "segmentVersion",
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


def ijkToWorldArray(volumeNode) -> np.ndarray:
    """The volume's IJK-to-world matrix (4 x 4): its IJK-to-RAS through its parent transforms. Hardening them moves
    the matrix into the node, not the voxels in the world. Under a non-linear transform: the IJK-to-RAS alone."""
    ijkToRas = ijkToRasArray(volumeNode)
    parent = volumeNode.GetParentTransformNode()
    toWorld = vtk.vtkMatrix4x4()
    if parent is None or not parent.GetMatrixTransformToWorld(toWorld):
        return ijkToRas
    return slicer.util.arrayFromVTKMatrix(toWorld) @ ijkToRas


def segmentVersion(segmentationNode, segmentId: str) -> tuple | None:
    """What names one version of a segment's voxels: its source representation's modification time (VTK's global
    counter: any change of its voxels or surface, or of another segment in its shared layer, moves it) and its label
    value in that layer; None when there is no such segment or representation."""
    segmentation = segmentationNode.GetSegmentation()
    segment = segmentation.GetSegment(segmentId)
    representation = segment.GetRepresentation(sourceRepresentationName(segmentation)) if segment else None
    return None if representation is None else (int(representation.GetMTime()), segment.GetLabelValue())


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


# Spacing / direction agreement between a segment's labelmap grid and the volume's (relative, and in voxels).
_GRID_RTOL = 1e-3
_ORIGIN_VOXEL_TOL = 0.01


def _grids(labelmap, volumeNode) -> tuple[np.ndarray, np.ndarray]:
    """The segment's labelmap IJK-to-world matrix and the volume's IJK-to-RAS matrix (4 x 4), each in its node's own
    frame."""
    matrix = vtk.vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix), ijkToRasArray(volumeNode)


def _spacings(segmentGrid: np.ndarray, volumeGrid: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool, bool]:
    """(the two grids' voxel spacings, whether they agree, whether the axis directions agree)."""
    segmentSpacing = np.linalg.norm(segmentGrid[:3, :3], axis=0)
    volumeSpacing = np.linalg.norm(volumeGrid[:3, :3], axis=0)
    sameSpacing = bool(np.allclose(segmentSpacing, volumeSpacing, rtol=_GRID_RTOL, atol=0))
    sameDirections = bool(np.allclose(segmentGrid[:3, :3] / segmentSpacing, volumeGrid[:3, :3] / volumeSpacing,
                                      atol=_GRID_RTOL))
    return segmentSpacing, volumeSpacing, sameSpacing, sameDirections


def latticeDifference(labelmap, volumeNode) -> tuple[str | None, np.ndarray | None]:
    """(what differs between a segment's labelmap grid and the volume's voxel grid, for a message, or None; the
    volume's (i, j, k) index of the labelmap's index (0, 0, 0) when nothing does). "Same grid": the volume's voxel
    spacing and axis directions, and an origin a whole number of voxels from the volume's; the extents may differ
    (labelmaps are often cropped). Both in their own node's frame: parent transforms are not looked at."""
    segmentGrid, volumeGrid = _grids(labelmap, volumeNode)
    segmentSpacing, volumeSpacing, sameSpacing, sameDirections = _spacings(segmentGrid, volumeGrid)
    if not sameSpacing:
        return _("its voxels are {seg} mm, the volume's are {vol} mm").format(
            seg=" x ".join(f"{s:.3g}" for s in segmentSpacing),
            vol=" x ".join(f"{s:.3g}" for s in volumeSpacing)), None
    if not sameDirections:
        return _("its axes are oriented differently from the volume's"), None
    offset = np.linalg.solve(volumeGrid[:3, :3], segmentGrid[:3, 3] - volumeGrid[:3, 3])
    if np.max(np.abs(offset - np.round(offset))) > _ORIGIN_VOXEL_TOL:
        return _("its voxels are shifted by a fraction of a voxel from the volume's"), None
    return None, np.round(offset).astype(int)


def otherSpacingOnly(labelmap, volumeNode) -> bool:
    """Whether a segment's labelmap grid has the volume's axis directions and another voxel size (a segmentation
    geometry specified with oversampling)."""
    _segmentSpacing, _volumeSpacing, sameSpacing, sameDirections = _spacings(*_grids(labelmap, volumeNode))
    return not sameSpacing and sameDirections


def latticeReordered(labelmap, volumeNode) -> bool:
    """Whether a segment's labelmap holds the volume's own voxels in another axis order or direction (a label map
    imported from a tool that stores it flipped, say): Slicer's export then places each voxel on its own, nothing
    resampled between voxels, so the segment is as good as one painted on the volume."""
    segmentGrid, volumeGrid = _grids(labelmap, volumeNode)
    steps = np.linalg.solve(volumeGrid[:3, :3], segmentGrid[:3, :3])  # a labelmap index step in volume index steps
    if signed_permutation(steps, _GRID_RTOL) is None:
        return False
    offset = np.linalg.solve(volumeGrid[:3, :3], segmentGrid[:3, 3] - volumeGrid[:3, 3])
    return bool(np.max(np.abs(offset - np.round(offset))) <= _ORIGIN_VOXEL_TOL)


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
    onLattice = _labelmapOnVolumeLattice(volumeNode, segmentationNode, segmentId)
    if onLattice is not None:
        return onLattice
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



def _labelmapOnVolumeLattice(volumeNode, segmentationNode, segmentId: str) -> np.ndarray | None:
    """The segment's own binary labelmap placed on the volume's grid (0 / 1), when it lies on the volume's voxels:
    a labelmap segmentation in the volume's frame (the same parent transform, or none) whose labelmap has the volume's
    spacing and axes, a whole number of voxels from it (``latticeDifference``), as a segment painted in the Segment
    Editor on this volume has. Its voxels are then the volume's own, and placing them is all Slicer's export
    (``ExportSegmentsToLabelmapNode``) would do, which costs about 90 ms on a 512 x 512 x 100 CT in a merged labelmap
    and temporary nodes. None for any other segment: the caller exports it, and Slicer resamples or rasterises."""
    segmentation = segmentationNode.GetSegmentation()
    if not isLabelmapSource(segmentation) or segmentationNode.GetTransformNodeID() != volumeNode.GetTransformNodeID():
        return None
    segment = segmentation.GetSegment(segmentId)
    labelmap = segment.GetRepresentation(binaryLabelmapName())  # a layer it may share: its voxels hold its label
    if labelmap is None:
        return None
    shape = tuple(reversed(volumeNode.GetImageData().GetDimensions()))
    if labelmap.IsEmpty() or labelmap.GetPointData().GetScalars() is None:
        return np.zeros(shape, dtype=np.uint8)
    problem, offset = latticeDifference(labelmap, volumeNode)
    if problem:
        return None
    placed = np.zeros(shape, dtype=np.uint8)
    from vtkmodules.util.numpy_support import vtk_to_numpy

    voxels = vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(tuple(reversed(labelmap.GetDimensions())))
    start = offset + np.array(labelmap.GetExtent()[::2])  # the volume's (i, j, k) of the labelmap's first voxel
    source, target = [], []
    for axis in (2, 1, 0):  # (k, j, i): the part of the labelmap inside the volume, and where it goes
        low, high = max(0, start[axis]), min(shape[2 - axis], start[axis] + voxels.shape[2 - axis])
        if low >= high:
            return placed
        source.append(slice(low - start[axis], high - start[axis]))
        target.append(slice(low, high))
    placed[tuple(target)] = voxels[tuple(source)] == segment.GetLabelValue()
    return placed
