"""Bad input through the Logic, as a new user gives it: a refusal that says what to do, the scene left as it was.

Beside test_logic.py's bad inputs (empty segment, two slices, another grid, a label map or MR volume, missing
weights): a CT whose spacing is not in millimetres, and a segment painted in a sagittal or coronal view.
"""

from __future__ import annotations

import numpy as np
import pytest

from scene_helpers import (  # noqa: F401  (fixtures are used by name)
    addSegmentFromArray,
    addVolumeFromSitk,
    assertSnapshotsEqual,
    case,
    logic,
    runExpecting,
    slicer,
    tinyWeights,
)
from gastric_propagate.errors import InputError
from gastric_propagate.inference.advice import NOT_AXIAL
from gastric_propagate.inference.options import PropagationOptions

pytestmark = pytest.mark.slicer


@pytest.mark.parametrize("scale", [0.001, 0.1])
def test_a_volume_whose_spacing_is_not_in_millimetres_is_refused_saying_so(case, logic, scale):
    """Spacing in metres (or centimetres) made the engine call the painted cross-section "too small, not a dot"."""
    image = case._sitk.Image(case.imageSitk)
    image.SetSpacing([s * scale for s in image.GetSpacing()])
    volume = addVolumeFromSitk(case.scene, image, "CT in metres")
    segmentation = case.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "painted on it")
    segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    segmentId = addSegmentFromArray(segmentation, volume, case.annotation, "painted")
    extra = [(segmentation, segmentId)]
    before = case.snapshot(extra)
    with pytest.raises(InputError, match="The volume .CT in metres. has a voxel spacing .* millimetres") as refusal:
        logic.run(volume, segmentation, segmentId)
    assert "not a dot" not in str(refusal.value)
    assertSnapshotsEqual(before, case.snapshot(extra))


@pytest.mark.parametrize("axis, keyframes, thickness", [(2, False, 1), (1, False, 1), (2, True, 1), (2, False, 2)])
def test_a_segment_painted_in_a_side_view_is_told_to_paint_in_the_axial_view(case, logic, axis, keyframes,
                                                                             thickness):
    """One plane across several K slices: painted in the sagittal or coronal view, not "on two slices"; with
    keyframes on too, where the plane's lines would otherwise become anchors kept exactly; a sphere brush's stroke
    two planes thick too."""
    painted = np.zeros_like(case.annotation)
    k, j, i = np.argwhere(case.annotation > 0).mean(axis=0).round().astype(int)
    plane = [slice(k - 3, k + 4), slice(j - 8, j + 8), slice(i - 8, i + 8)]
    plane[axis] = slice(i, i + thickness) if axis == 2 else slice(j, j + thickness)
    painted[tuple(plane)] = 1
    segmentId = addSegmentFromArray(case.segmentation, case.volume, painted, "side view")
    runExpecting(InputError, "painted in one plane .*as in the (sagittal|coronal) view.* axial view", logic, case,
                 case.volume, case.segmentation, segmentId, PropagationOptions(keyframes=keyframes))


def test_a_stroke_across_a_tilted_volumes_slices_is_told_to_rotate_the_view_not_to_use_keyframes(case, logic):
    """Painted in an RAS-axial view, the brush's slab crosses the slices of a volume tilted from the axial plane
    (a gantry-tilted series): keyframes would take each cut piece as an anchor (Dice 0.30 in a probe) and one piece
    kept alone is a chord of the tumour; rotating the view to the volume plane is the fix."""
    from GastricPropagateLib.segment_arrays import ijkToRasArray

    tilt = np.radians(12.0)
    image = case._sitk.Image(case.imageSitk)
    image.SetDirection([1.0, 0.0, 0.0, 0.0, np.cos(tilt), -np.sin(tilt), 0.0, np.sin(tilt), np.cos(tilt)])
    volume = addVolumeFromSitk(case.scene, image, "tilted CT")
    segmentation = case.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "painted on it")
    segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    ijkToRas = ijkToRasArray(volume)
    kji = np.argwhere(case.truth > 0)
    ras = (ijkToRas @ np.c_[kji[:, ::-1], np.ones(len(kji))].T)[:3].T
    centre = ras[kji[:, 0] == case.paintedSlice].mean(axis=0)
    stroke = kji[np.abs(ras[:, 2] - centre[2]) <= volume.GetSpacing()[2] / 2]  # one RAS-axial slab
    painted = np.zeros_like(case.annotation)
    painted[tuple(stroke.T)] = 1
    slices = np.flatnonzero(painted.reshape(len(painted), -1).any(axis=1))
    assert len(slices) > 1 and slices[-1] - slices[0] + 1 == len(slices), "the slab crosses consecutive K slices"
    segmentId = addSegmentFromArray(segmentation, volume, painted, "painted in the RAS axial view")
    extra = [(segmentation, segmentId)]
    before = case.snapshot(extra)
    for keyframes in (False, True):  # with keyframes on, each cut piece would be an anchor (Dice 0.30)
        with pytest.raises(InputError, match=r"slices are tilted 12 degrees from the axial plane.*'Rotate to "
                                             r"volume plane'") as refusal:
            logic.run(volume, segmentation, segmentId, PropagationOptions(keyframes=keyframes))
        assert "keyframes" not in str(refusal.value)
        assertSnapshotsEqual(before, case.snapshot(extra))
    # Keyframes painted in a view rotated to the volume's slices: whole tilted slices, accepted.
    from GastricPropagateLib.scene_input import prepareInput

    keyframes = np.zeros_like(case.annotation)
    k = case.paintedSlice
    keyframes[k:k + 2] = case.truth[k:k + 2] > 0
    keyframesId = addSegmentFromArray(segmentation, volume, keyframes, "keyframes in a rotated view")
    prepared = prepareInput(volume, segmentation, keyframesId, PropagationOptions(keyframes=True))
    assert prepared.paintedSlices == [k, k + 1]


def test_a_small_lesions_axial_keyframes_far_apart_are_not_a_side_view(case):
    """Keyframes of a lesion a few voxels wide, painted on slices far apart: no brush stroke across them."""
    from GastricPropagateLib.scene_input import prepareInput

    painted = np.zeros_like(case.annotation)
    k, j, i = np.argwhere(case.annotation > 0).mean(axis=0).round().astype(int)
    keyframes = [k - 6, k - 4, k - 2, k, k + 2, k + 4]  # 2 voxels wide on 6 slices: a stroke, were they consecutive
    painted[keyframes, j:j + 2, i:i + 3] = 1
    segmentId = addSegmentFromArray(case.segmentation, case.volume, painted, "keyframes")
    prepared = prepareInput(case.volume, case.segmentation, segmentId, PropagationOptions(keyframes=True))
    assert np.flatnonzero(prepared.annotation.reshape(len(painted), -1).any(axis=1)).tolist() == keyframes


@pytest.mark.parametrize("keyframes", [False, True])
def test_a_coronal_series_painted_in_the_axial_view_is_told_to_reorient_the_volume(case, logic, keyframes):
    """Painted in the anatomical axial view, one plane across many of the volume's coronal K slices: not "painted on
    N slices, switch on keyframes" (which would propagate along the coronal slices), but reorient the volume."""
    image = case._sitk.Image(case.imageSitk)
    image.SetDirection([1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0])  # K runs front to back, J head to foot
    volume = addVolumeFromSitk(case.scene, image, "CT of coronal slices")
    segmentation = case.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "painted on it")
    segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    painted = np.zeros_like(case.annotation)
    k, j, i = np.argwhere(case.annotation > 0).mean(axis=0).round().astype(int)
    painted[k - 3:k + 4, j, i - 8:i + 8] = 1  # one J plane: axial in the patient
    segmentId = addSegmentFromArray(segmentation, volume, painted, "painted")
    extra = [(segmentation, segmentId)]
    before = case.snapshot(extra)
    with pytest.raises(InputError, match="painted in the axial view .*K slices are coronal.*Orient Scalar Volume"):
        logic.run(volume, segmentation, segmentId, PropagationOptions(keyframes=keyframes))
    assertSnapshotsEqual(before, case.snapshot(extra))


def test_a_volume_of_coronal_slices_is_propagated_along_them_and_the_result_says_so(case, logic):
    """The engine reads the voxels alone: the Logic adds what the command line says of such a volume (the networks
    learned axial slices; reorient it). An axial volume's run says nothing of it."""
    _, axial = logic.run(case.volume, case.segmentation, case.paintedId)
    assert all(item["kind"] != NOT_AXIAL for item in axial.advice)
    image = case._sitk.Image(case.imageSitk)
    image.SetDirection([1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0])  # K runs front to back
    volume = addVolumeFromSitk(case.scene, image, "CT of coronal slices")
    segmentation = case.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "painted on it")
    segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    segmentId = addSegmentFromArray(segmentation, volume, case.annotation, "painted")
    _, coronal = logic.run(volume, segmentation, segmentId)
    [said] = [item for item in coronal.advice if item["kind"] == NOT_AXIAL]
    assert said["orientation"] == "coronal" and "Orient Scalar Volume" in said["sentence"]


def test_a_volume_and_segmentation_under_different_transforms_are_told_to_harden_them(case, logic):
    """Hardening is the one fix that works whichever node was moved (putting both under one transform fails when
    the segment was painted on the CT as it was shown, under its transform)."""
    transform = case.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
    case.volume.SetAndObserveTransformNodeID(transform.GetID())
    before = case.snapshot()
    with pytest.raises(InputError, match="under different transforms. Harden them .*then run again") as refusal:
        logic.run(case.volume, case.segmentation, case.paintedId)
    assert "same one" not in str(refusal.value)
    assertSnapshotsEqual(before, case.snapshot())
