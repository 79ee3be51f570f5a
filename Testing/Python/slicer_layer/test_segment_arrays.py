"""A segment read on the volume's grid: straight from its own labelmap where that lies on the volume's voxels, the same
voxels as Slicer's export (the oracle, ``exportSegment``) in every case, and Slicer's export where it does not."""

from __future__ import annotations

import numpy as np

from scene_helpers import addSegmentFromArray, case, exportSegment, slicer, vtk  # noqa: F401  (fixtures by name)
from GastricPropagateLib.segment_arrays import segmentArray


def exported(case, segmentId):
    array, _ = exportSegment(case.segmentation, segmentId, case.volume)
    return array > 0


def blob(case, k0, k1, j0, j1, i0, i1):
    array = np.zeros(case.annotation.shape, np.uint8)
    array[k0:k1, j0:j1, i0:i1] = 1
    return array


def nodesAddedWhile(scene, read):
    """(what ``read()`` returned, how many nodes were added to the scene meanwhile: Slicer's export adds a temporary
    labelmap node and its display and colour nodes)."""
    added = []
    tag = scene.AddObserver(slicer.vtkMRMLScene.NodeAddedEvent, lambda caller, event: added.append(event))
    try:
        return read(), len(added)
    finally:
        scene.RemoveObserver(tag)


def test_the_painted_segment_is_read_from_its_own_labelmap_as_slicer_exports_it(case):
    direct, added = nodesAddedWhile(case.scene, lambda: segmentArray(case.volume, case.segmentation, case.paintedId))
    assert added == 0 and direct.any(), "read straight from the segment's labelmap, no export"
    assert nodesAddedWhile(case.scene, lambda: exported(case, case.paintedId))[1] > 0, "the check above can fail"
    np.testing.assert_array_equal(direct > 0, exported(case, case.paintedId))
    np.testing.assert_array_equal(direct > 0, case.annotation > 0)


def test_segments_sharing_a_layer_and_reaching_outside_the_volume_read_as_slicer_exports_them(case):
    segmentation = case.segmentation.GetSegmentation()
    second = addSegmentFromArray(case.segmentation, case.volume, blob(case, 3, 6, 10, 30, 10, 30), "second")
    segmentation.CollapseBinaryLabelmaps(True)  # one shared layer, the segments told apart by their label values
    assert segmentation.GetNumberOfLayers() == 1 and segmentation.GetSegment(second).GetLabelValue() == 2
    # A segment whose own labelmap reaches past the volume on every side: only the voxels inside are read.
    labelmap = slicer.vtkOrientedImageData()
    matrix = vtk.vtkMatrix4x4()
    case.volume.GetIJKToRASMatrix(matrix)
    labelmap.SetGeometryFromImageToWorldMatrix(matrix)
    labelmap.SetExtent(-5, 170, -3, 10, 22, 32)  # the volume's i, j, k: 0..159, 0..159, 0..27
    labelmap.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    labelmap.GetPointData().GetScalars().Fill(1)
    outside = segmentation.AddEmptySegment("", "outside")
    slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        labelmap, case.segmentation, outside, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)
    for segmentId in (case.paintedId, second, outside):
        direct = segmentArray(case.volume, case.segmentation, segmentId)
        np.testing.assert_array_equal(direct > 0, exported(case, segmentId), err_msg=segmentId)
    assert segmentArray(case.volume, case.segmentation, outside)[22:, :11].all()


def test_a_segmentation_under_a_transform_is_exported_by_slicer_which_applies_it(case):
    transform = case.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 3.0 * case.volume.GetSpacing()[0])  # three voxels along the volume's first axis (RAS x)
    transform.SetMatrixTransformToParent(matrix)
    case.segmentation.SetAndObserveTransformNodeID(transform.GetID())
    read, added = nodesAddedWhile(case.scene, lambda: segmentArray(case.volume, case.segmentation, case.paintedId) > 0)
    assert added > 0, "exported by Slicer"
    np.testing.assert_array_equal(read, exported(case, case.paintedId))
    assert read.any() and not np.array_equal(read, case.annotation > 0), "the transform moved the segment"
