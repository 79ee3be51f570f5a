"""Segmentations that do not store binary labelmaps (a segmentation loaded from STL/OBJ holds closed surfaces only),
against real MRML (the slicer-core wheel), headless, with the real child process.

The painted segment is written to STL with Slicer's own export and loaded back the way Slicer's segmentation reader
loads an STL file: source representation closed surface, no labelmap, no reference geometry. The Logic must read it
on the volume's grid, write the result into it as a closed surface, and leave everything else as it was; a
representation it cannot convert back is refused before any work.
"""

from __future__ import annotations

import numpy as np
import pytest
from vtkmodules.util.numpy_support import vtk_to_numpy

from scene_helpers import (  # noqa: F401  (fixtures are used by name)
    addSegmentFromArray,
    addVolumeFromSitk,
    binaryLabelmapName,
    case,
    closedSurfaceName,
    dice,
    loadSegmentationFromStl,
    logic,
    saveSegmentAsStl,
    sceneSnapshot,
    slicer,
    tinyWeights,
)
from GastricPropagateLib import resultSegmentName
from GastricPropagateLib.results_table import tableRows
from gastric_propagate.errors import InputError

pytestmark = pytest.mark.slicer


def _points(segmentationNode, segmentId):
    surface = segmentationNode.GetSegmentation().GetSegment(segmentId).GetRepresentation(closedSurfaceName())
    return vtk_to_numpy(surface.GetPoints().GetData()).copy()


def _nodesAndSegments(scene) -> dict:
    snapshot = sceneSnapshot(scene, [])
    return {"nodes": snapshot["nodes"], "segments": snapshot["segments"]}


@pytest.fixture
def stlCase(case, tmp_path):
    """The case plus a segmentation loaded from the painted segment saved as STL."""
    path = saveSegmentAsStl(case.segmentation, case.paintedId, tmp_path)
    case.stlSegmentation, case.stlPaintedId = loadSegmentationFromStl(case.scene, path, "painted (STL)")
    segmentation = case.stlSegmentation.GetSegmentation()
    assert segmentation.GetSourceRepresentationName() == closedSurfaceName()
    assert not segmentation.ContainsRepresentation(binaryLabelmapName())
    return case


def test_closed_surface_segmentation_is_read_on_the_volume_grid_and_gets_a_surface_result(stlCase, logic):
    case = stlCase
    segmentationNode, paintedId = case.stlSegmentation, case.stlPaintedId
    segmentation = segmentationNode.GetSegmentation()
    paintedPoints = _points(segmentationNode, paintedId)
    before = _nodesAndSegments(case.scene)

    prepared = logic.prepare(case.volume, segmentationNode, paintedId)

    assert prepared.paintedSlices == [case.paintedSlice]
    assert dice(prepared.annotation, case.annotation) >= 0.85
    assert _nodesAndSegments(case.scene) == before
    assert not segmentation.ContainsRepresentation(binaryLabelmapName()), "reading added a labelmap to the input"

    result = logic.compute(prepared)
    resultId = logic.apply(prepared, result)

    assert segmentation.GetSourceRepresentationName() == closedSurfaceName()
    assert [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())] == \
        [paintedId, resultId]
    resultSegment = segmentation.GetSegment(resultId)
    assert resultSegment.GetName() == resultSegmentName()
    assert resultSegment.GetRepresentation(closedSurfaceName()).GetNumberOfPoints() > 0
    np.testing.assert_array_equal(_points(segmentationNode, paintedId), paintedPoints)  # the painted one: untouched
    written = logic.segmentArray(case.volume, segmentationNode, resultId) > 0
    assert dice(written, result.mask) >= 0.85
    k = case.paintedSlice
    assert dice(written[k], prepared.annotation[k]) >= 0.85
    after = _nodesAndSegments(case.scene)
    added = sorted(set(after["nodes"]) - set(before["nodes"]))
    assert len(added) == 1 and added[0].startswith("vtkMRMLTableNode")  # no temporary node is left behind
    rows = tableRows(logic.resultsTableNode(segmentationNode))
    assert [row["Role"] for row in rows] == ["painted", "propagated"]
    assert int(rows[1]["Voxels"]) == int(written.sum())  # what the segment holds, read back as it will be read

    # The record of what was written matches the surface read back: nothing counts as corrected.
    with pytest.raises(InputError, match="No slice of .* was corrected since"):
        logic.repropagate(case.volume, segmentationNode, paintedId)

    # Replacing keeps the segment's ID, place and colour.
    colour = resultSegment.GetColor()
    assert logic.apply(prepared, result, replaceExisting=True) == resultId
    assert [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())] == \
        [paintedId, resultId]
    assert segmentation.GetSegment(resultId).GetColor() == pytest.approx(colour)
    np.testing.assert_array_equal(logic.segmentArray(case.volume, segmentationNode, resultId) > 0, written)
    assert sorted(_nodesAndSegments(case.scene)["nodes"]) == sorted(after["nodes"])


def test_a_surface_segmentation_is_not_exported_as_seg_nrrd(stlCase, tmp_path):
    """Slicer's storage node would write a closed-surface segmentation as a VTK multiblock under the .seg.nrrd name."""
    from GastricPropagateLib.export import exportSegmentation

    target = tmp_path / "tumour.seg.nrrd"
    with pytest.raises(ValueError, match=r"as 'Closed surface'.*cannot hold.*Labelmap \(\.nii\.gz\)"):
        exportSegmentation(stlCase.stlSegmentation, target)
    assert not target.exists()


def test_surface_reaching_outside_the_volume_is_refused(case, logic, tmp_path):
    import SimpleITK as sitk

    # The same CT, shifted along I so that the tumour's centre lies on the volume's edge; painted there.
    centreI = case.paintedCentreI()
    nx = case.image.shape[2]
    shifted = sitk.Image(case.imageSitk)
    shifted.SetOrigin(case.imageSitk.TransformContinuousIndexToPhysicalPoint([float(nx - centreI), 0.0, 0.0]))
    shiftedNode = addVolumeFromSitk(case.scene, shifted, "shifted CT")
    paintedThere = case.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "painted on the shifted CT")
    paintedThere.CreateDefaultDisplayNodes()
    paintedThere.SetReferenceImageGeometryParameterFromVolumeNode(shiftedNode)
    segmentId = addSegmentFromArray(paintedThere, shiftedNode, case.annotation, "painted")
    path = saveSegmentAsStl(paintedThere, segmentId, tmp_path)
    stlNode, stlId = loadSegmentationFromStl(case.scene, path, "shifted (STL)")
    before = _nodesAndSegments(case.scene)

    with pytest.raises(InputError, match=r"painted voxels of the segment .* lie outside the volume 'CT'"):
        logic.run(case.volume, stlNode, stlId)

    assert _nodesAndSegments(case.scene) == before
    assert not stlNode.GetSegmentation().ContainsRepresentation(binaryLabelmapName())


def test_representation_that_cannot_be_converted_back_is_refused_before_any_work(case, logic, monkeypatch):
    # Planar contours (a DICOM RT structure set loaded by SlicerRT): no conversion rule turns a labelmap into them.
    segmentation = case.segmentation.GetSegmentation()
    segmentation.SetSourceRepresentationName("Planar contour")
    started = []
    monkeypatch.setattr(logic, "start", lambda *args, **kwargs: started.append(args))
    before = _nodesAndSegments(case.scene)

    with pytest.raises(InputError, match=r"stores its segments as 'Planar contour'.*'Make source'"):
        logic.run(case.volume, case.segmentation, case.paintedId)

    assert started == []
    assert _nodesAndSegments(case.scene) == before
    assert segmentation.GetSourceRepresentationName() == "Planar contour"


def test_labelmap_export_of_a_surface_segmentation_leaves_it_unchanged(stlCase, tmp_path):
    """Exporting reads the surface on temporary nodes: the user's segmentation gets no derived binary labelmap, and
    the file holds the segment on the volume's grid, in the volume's place."""
    import SimpleITK as sitk

    from GastricPropagateLib.export import exportLabelmap
    from GastricPropagateLib.segment_arrays import segmentArray

    case = stlCase
    segmentationNode, paintedId = case.stlSegmentation, case.stlPaintedId
    segmentation = segmentationNode.GetSegmentation()
    points = _points(segmentationNode, paintedId)
    before = _nodesAndSegments(case.scene)

    path = exportLabelmap(case.volume, segmentationNode, [paintedId], tmp_path / "tumour.nii.gz")

    assert not segmentation.ContainsRepresentation(binaryLabelmapName()), "export added a labelmap to the input"
    representations = []
    segmentation.GetSegment(paintedId).GetContainedRepresentationNames(representations)
    assert representations == [closedSurfaceName()]
    assert segmentation.GetSourceRepresentationName() == closedSurfaceName()
    np.testing.assert_array_equal(_points(segmentationNode, paintedId), points)
    assert _nodesAndSegments(case.scene) == before
    written = sitk.ReadImage(str(path))
    exported = sitk.GetArrayFromImage(written)
    np.testing.assert_array_equal(exported, segmentArray(case.volume, segmentationNode, paintedId) > 0)
    assert np.flatnonzero(exported.reshape(len(exported), -1).any(1)).tolist() == [case.paintedSlice]
    assert dice(exported, case.annotation) >= 0.85
    for got, want in ((written.GetOrigin(), case.imageSitk.GetOrigin()),
                      (written.GetSpacing(), case.imageSitk.GetSpacing())):
        np.testing.assert_allclose(got, want, atol=1e-3)
    np.testing.assert_allclose(written.GetDirection(), case.imageSitk.GetDirection(), atol=1e-5)
