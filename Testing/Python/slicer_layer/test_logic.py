"""GastricPropagateLogic against real MRML (the slicer-core wheel), headless.

A phantom CT (non-identity direction, non-zero origin) is loaded into a scene as a volume node, the truth's
largest cross-section is painted into a segment, and the Logic is driven through prepare / start or compute /
apply. Every run is the real child process (``python -m gastric_propagate.cli segment``, started with
``subprocess.Popen``). Plumbing tests give it tiny untrained networks saved as checkpoints, so a run takes a few
seconds; the accuracy test uses the bundled weights.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import vtk

from scene_helpers import (  # noqa: F401  (fixtures are used by name)
    REPO,
    Case,
    addSegmentFromArray,
    addVolumeFromSitk,
    assertSnapshotsEqual,
    bundledWeightsOrSkip,
    case,
    dice,
    exportSegment,
    rasCentroid,
    runExpecting,
    setSegmentArray,
    slicer,
    tinyWeights,
    logic,
    trainedLogic,
)
from GastricPropagateLib import GastricPropagateLogic, Masking, ResultSegmentExistsError, resultSegmentName
from GastricPropagateLib.export import exportLabelmap, exportResultsCsv, exportSegmentation
from GastricPropagateLib.results_table import COLUMN_NAMES, tableRows
from gastric_propagate.data.annotation import annotation_from_label
from gastric_propagate.errors import Cancelled, InputError, WeightsError
from gastric_propagate.inference.pipeline import PropagationOptions

pytestmark = pytest.mark.slicer


# ---------------------------------------------------------------------------------------------- the main path


def test_lib_imports_without_gui_or_torch():
    """The Lib loads headless and cheaply: no qt/ctk/ScriptedLoadableModule, and torch only when a run starts."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "import GastricPropagateLib, GastricPropagateLib.export, GastricPropagateLib.runner, "
            "GastricPropagateLib.dependencies, GastricPropagateLib.controller, GastricPropagateLib.testdata; "
            "bad = [m for m in ('qt', 'ctk', 'slicer.ScriptedLoadableModule', 'torch') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    completed = subprocess.run([sys.executable, "-c", code, str(REPO / "GastricPropagate")], capture_output=True,
                               text=True, timeout=120)
    assert completed.returncode == 0, completed.stdout + completed.stderr


@pytest.mark.parametrize("device", ["cpu", "cpu-int8"])  # cpu-int8: the panel's choice of the int8 networks
def test_run_with_bundled_weights_segments_the_tumour_beside_the_painted_segment(device):
    bundledWeightsOrSkip()
    case = Case(size_xy=192, oblique=True)
    direction = np.array(case.imageSitk.GetDirection()).reshape(3, 3)
    assert not np.allclose(direction, np.eye(3)), "the test needs a non-identity direction"
    assert np.linalg.norm(case.imageSitk.GetOrigin()) > 1.0, "the test needs a non-zero origin"
    paintedBefore = exportSegment(case.segmentation, case.paintedId, case.volume)[0]

    logic = GastricPropagateLogic(device=device)
    resultId, result = logic.run(case.volume, case.segmentation, case.paintedId)

    segmentation = case.segmentation.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 2
    assert resultId != case.paintedId
    assert segmentation.GetSegment(resultId).GetName() == resultSegmentName()
    np.testing.assert_array_equal(exportSegment(case.segmentation, case.paintedId, case.volume)[0], paintedBefore)
    resultArray = exportSegment(case.segmentation, resultId, case.volume)[0]
    score = dice(resultArray, case.truth)
    print(f"Dice of the Logic's result vs the phantom truth: {score:.3f} ({result.seconds:.1f} s on {result.device})")
    assert score >= 0.8  # 0.858 (int8 0.857) with the shipped weights; a Logic that mixed up the geometry: near 0
    # The run says it ran the int8 copies (their masks differ slightly): the panel shows "... s on cpu (int8)".
    assert result.device == {"cpu": "cpu", "cpu-int8": "cpu (int8)"}[device]
    # On the right voxels in RAS: the result read on its own grid vs the truth placed by SimpleITK's geometry.
    ownArray, ownIjkToRas = exportSegment(case.segmentation, resultId)
    spacing = np.array(case.phantom.spacing)
    assert np.linalg.norm(rasCentroid(ownArray, ownIjkToRas) - case.truthRasCentroid()) < 2.0 * spacing.max()
    # The painted slice is kept exactly.
    k = case.paintedSlice
    np.testing.assert_array_equal(resultArray[k] > 0, case.annotation[k] > 0)


def test_run_with_tiny_networks_adds_result_segment_and_table(case, logic):
    before = case.snapshot()
    resultId, result = logic.run(case.volume, case.segmentation, case.paintedId)

    segmentation = case.segmentation.GetSegmentation()
    assert [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())] == \
        [case.paintedId, resultId]
    painted = segmentation.GetSegment(case.paintedId)
    resultSegment = segmentation.GetSegment(resultId)
    assert resultSegment.GetName() == resultSegmentName()
    assert np.linalg.norm(np.array(resultSegment.GetColor()) - np.array(painted.GetColor())) > 0.5
    np.testing.assert_array_equal(exportSegment(case.segmentation, case.paintedId)[0],
                                  before["voxels"][f"{case.segmentation.GetID()}/{case.paintedId}"])
    resultArray = exportSegment(case.segmentation, resultId, case.volume)[0]
    np.testing.assert_array_equal(resultArray > 0, result.mask > 0)
    assert logic.resultSegmentId(case.segmentation) == resultId

    # Exactly one new node: the results table.
    after = case.snapshot()
    added = sorted(set(after["nodes"]) - set(before["nodes"]))
    assert len(added) == 1 and added[0].startswith("vtkMRMLTableNode")
    table = logic.resultsTableNode(case.segmentation)
    assert table.GetName() == "GastricPropagate results"
    rows = tableRows(table)
    assert [row["Role"] for row in rows] == ["painted", "propagated"]
    spacing = case.volume.GetSpacing()
    resultRow = rows[1]
    assert int(resultRow["Voxels"]) == int((result.mask > 0).sum())
    assert float(resultRow["Volume [mL]"]) == pytest.approx((result.mask > 0).sum() * np.prod(spacing) / 1000,
                                                            rel=1e-4)
    first, last = result.slice_range()
    assert (int(resultRow["First slice (K)"]), int(resultRow["Last slice (K)"])) == (first, last)
    assert resultRow["Device"] == "cpu" and float(resultRow["Run time [s]"]) >= 0
    assert int(rows[0]["Voxels"]) == int(case.annotation.sum())
    assert rows[0]["First slice (K)"] == rows[0]["Last slice (K)"] == str(case.paintedSlice)
    assert rows[0]["Device"] == ""


def test_prepare_reads_the_painted_slice_on_the_volume_ijk_grid(case, logic):
    before = case.snapshot()
    prepared = logic.prepare(case.volume, case.segmentation, case.paintedId)
    np.testing.assert_array_equal(prepared.annotation, case.annotation)
    np.testing.assert_array_equal(prepared.image, case.image)
    assert prepared.paintedSlices == [case.paintedSlice]
    assert prepared.spacingXYZ == pytest.approx(case.phantom.spacing)
    assertSnapshotsEqual(before, case.snapshot())


def test_slice_centre_ras_follows_the_volume_direction(case, logic):
    k = case.paintedSlice
    ras = np.array(logic.sliceCenterRAS(case.volume, k))
    ny, nx = case.image.shape[1:]
    x, y, z = case.imageSitk.TransformContinuousIndexToPhysicalPoint([(nx - 1) / 2, (ny - 1) / 2, float(k)])
    np.testing.assert_allclose(ras, [-x, -y, z], atol=1e-4)


def test_slice_centre_ras_given_the_result_on_the_slice_is_the_results_centre(case, logic):
    """Jumping to a flagged slice centres the views on the tumour there, so that the sagittal and coronal views
    cross it (the image's centre can lie beside a tumour far off the midline)."""
    k = case.paintedSlice
    mask = case.truth[k] > 0
    ras = np.array(logic.sliceCenterRAS(case.volume, k, mask))
    j, i = np.nonzero(mask)
    x, y, z = case.imageSitk.TransformContinuousIndexToPhysicalPoint([float(i.mean()), float(j.mean()), float(k)])
    np.testing.assert_allclose(ras, [-x, -y, z], atol=1e-4)
    assert logic.sliceCenterRAS(case.volume, k, np.zeros_like(mask)) == logic.sliceCenterRAS(case.volume, k)


def test_keyframes_accept_several_painted_slices(case, logic):
    k = case.paintedSlice
    other = k - 2
    segmentId = addSegmentFromArray(case.segmentation, case.volume,
                                    np.where(np.arange(len(case.truth))[:, None, None] == other, case.truth, 0)
                                    + case.annotation, "keyframes")
    prepared = logic.prepare(case.volume, case.segmentation, segmentId, PropagationOptions(keyframes=True))
    assert prepared.paintedSlices == sorted([other, k])
    result = logic.compute(prepared)
    np.testing.assert_array_equal(result.mask[other] > 0, case.truth[other] > 0)


# ---------------------------------------------------------------------------------------------- bad inputs




def test_empty_segment_is_refused(case, logic):
    emptyId = case.segmentation.GetSegmentation().AddEmptySegment("", "empty")
    runExpecting(InputError, "has no painted voxels", logic, case, case.volume, case.segmentation, emptyId)


def test_segment_painted_on_two_slices_is_refused_naming_them(case, logic):
    k = case.paintedSlice
    twoSlices = case.annotation.copy()
    twoSlices[k + 3] = case.truth[k + 3]
    segmentId = addSegmentFromArray(case.segmentation, case.volume, twoSlices, "two slices")
    runExpecting(InputError, rf"2 slices .*K = {k}, {k + 3}", logic, case, case.volume, case.segmentation,
                  segmentId)


def test_the_result_segment_is_refused_as_the_painted_one_even_untagged(case, logic):
    """A run replaces the module's result: selected as the painted segment, it would overwrite the input itself."""
    resultId, _result = logic.run(case.volume, case.segmentation, case.paintedId)
    runExpecting(InputError, "is this module's own result", logic, case, case.volume, case.segmentation, resultId)
    # An untagged segment of the result's name (an older version's result, or named so by hand) is found by its name.
    case.segmentation.GetSegmentation().RemoveSegment(resultId)
    untagged = addSegmentFromArray(case.segmentation, case.volume, case.annotation, resultSegmentName())
    assert logic.resultSegmentId(case.segmentation) == untagged
    runExpecting(InputError, "has the name this module gives its result", logic, case, case.volume,
                 case.segmentation, untagged)


def test_missing_volume_segmentation_or_segment_is_refused(case, logic):
    runExpecting(InputError, "No CT volume is selected", logic, case, None, case.segmentation, case.paintedId)
    runExpecting(InputError, "No segmentation is selected", logic, case, case.volume, None, case.paintedId)
    runExpecting(InputError, "Select the painted segment", logic, case, case.volume, case.segmentation, "")
    runExpecting(InputError, "Select the painted segment", logic, case, case.volume, case.segmentation, "nonexist")


def test_segment_painted_on_another_grid_is_refused(case, logic):
    import SimpleITK as sitk

    # Another volume of the same patient with twice the voxel size: the segment is painted on its grid.
    coarse = sitk.Shrink(case.imageSitk, [2, 2, 1])
    coarseNode = addVolumeFromSitk(case.scene, coarse, "coarse CT")
    otherSegmentation = case.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "painted on coarse")
    otherSegmentation.CreateDefaultDisplayNodes()
    otherSegmentation.SetReferenceImageGeometryParameterFromVolumeNode(coarseNode)
    coarseTruth = sitk.GetArrayFromImage(sitk.Resample(case.truthSitk, coarse, sitk.Transform(),
                                                       sitk.sitkNearestNeighbor))
    coarseAnnotation = annotation_from_label(coarseTruth)
    segmentId = addSegmentFromArray(otherSegmentation, coarseNode, coarseAnnotation, "painted")
    extra = [(otherSegmentation, segmentId)]
    before = case.snapshot(extra)
    with pytest.raises(InputError, match="different image grid.*voxels are.*made on the volume 'coarse CT': select "
                                         "'coarse CT' as the volume"):
        logic.run(case.volume, otherSegmentation, segmentId)
    assertSnapshotsEqual(before, case.snapshot(extra))
    # A segmentation made on this CT whose geometry has another voxel size (Specify geometry, oversampling): it is
    # not "select the volume it was painted on" (that is this one), but a new segmentation.
    resampled = case.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "oversampled")
    resampled.CreateDefaultDisplayNodes()
    resampled.SetReferenceImageGeometryParameterFromVolumeNode(case.volume)
    segmentId = addSegmentFromArray(resampled, coarseNode, coarseAnnotation, "painted")
    with pytest.raises(InputError, match="on the grid of the segmentation 'oversampled', not on the voxels of the "
                                         "volume 'CT'.*specified with oversampling.*new segmentation of 'CT'"):
        logic.run(case.volume, resampled, segmentId)


def test_a_segment_holding_the_volume_s_voxels_in_another_axis_order_is_read_voxel_for_voxel(case, logic):
    """A label map imported from a tool that stores it flipped and with its axes swapped: the volume's own voxels, so
    the painted slice is read exactly (not refused as painted on another grid)."""
    import SimpleITK as sitk

    reordered = sitk.Flip(sitk.PermuteAxes(case.imageSitk, [1, 0, 2]), [True, False, True])  # same voxels, same places
    reorderedNode = addVolumeFromSitk(case.scene, reordered, "the CT, stored otherwise")
    otherSegmentation = case.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "imported")
    otherSegmentation.CreateDefaultDisplayNodes()
    otherSegmentation.SetReferenceImageGeometryParameterFromVolumeNode(reorderedNode)
    annotationImage = sitk.GetImageFromArray(case.annotation)
    annotationImage.CopyInformation(case.imageSitk)
    stored = sitk.GetArrayFromImage(sitk.Flip(sitk.PermuteAxes(annotationImage, [1, 0, 2]), [True, False, True]))
    segmentId = addSegmentFromArray(otherSegmentation, reorderedNode, stored, "painted")
    prepared = logic.prepare(case.volume, otherSegmentation, segmentId)
    np.testing.assert_array_equal(prepared.annotation, case.annotation > 0)
    assert prepared.paintedSlices == [case.paintedSlice]
    resultId, result = logic.run(case.volume, otherSegmentation, segmentId)  # written into that segmentation too
    np.testing.assert_array_equal(exportSegment(otherSegmentation, resultId, case.volume)[0] > 0, result.mask > 0)


def test_label_map_or_non_ct_volume_is_refused(case, logic):
    import SimpleITK as sitk

    labelNode = addVolumeFromSitk(case.scene, case.truthSitk, "label", "vtkMRMLLabelMapVolumeNode")
    runExpecting(InputError, "not a CT scalar volume", logic, case, labelNode, case.segmentation, case.paintedId)
    # An MR-like volume on the same grid (0..1000, no air below -300): the engine refuses it.
    mr = sitk.Cast(sitk.RescaleIntensity(case.imageSitk, 0, 1000), sitk.sitkInt16)
    mrNode = addVolumeFromSitk(case.scene, mr, "MR")
    runExpecting(InputError, "does not look like a CT", logic, case, mrNode, case.segmentation, case.paintedId)


def test_missing_weights_are_refused_and_scene_unchanged(case, tmp_path):
    logic = GastricPropagateLogic(device="cpu", proposerPath=tmp_path / "missing_proposer.pt")
    runExpecting(WeightsError, "missing_proposer", logic, case, case.volume, case.segmentation, case.paintedId)


@pytest.mark.parametrize("given", ["proposer", "refiner"])
def test_one_network_given_alone_is_said_to_run_with_the_other_bundled_one(tmp_path, caplog, given):
    """A fine-tuned pair given by half (the likelier slip) runs beside a network of another training: said."""
    with caplog.at_level("WARNING", logger="GastricPropagateLib.logic"):
        GastricPropagateLogic(device="cpu", proposerPath=tmp_path / "p.pt", refinerPath=tmp_path / "r.pt")
    assert "a mix of two trainings" not in caplog.text
    with caplog.at_level("WARNING", logger="GastricPropagateLib.logic"):
        GastricPropagateLogic(device="cpu", **{f"{given}Path": tmp_path / f"{given}.pt"})
    other = {"proposer": "refiner", "refiner": "proposer"}[given]
    assert f"runs with the bundled {other} (no {other}Path given): a mix of two trainings" in caplog.text


def test_relative_weight_paths_are_the_callers_not_the_engines_folders(case, tinyWeights, monkeypatch):
    """The engine's process starts in the engine's folder: a batch script's relative paths were read from there (its
    own files 'did not exist'; a path that exists there ran other weights silently)."""
    from GastricPropagateLib.launchers import PopenLauncher

    monkeypatch.chdir(tinyWeights["proposer"].parent.parent)
    relative = {stage: f"{path.parent.name}/{path.name}" for stage, path in tinyWeights.items()}
    logic = GastricPropagateLogic(device="cpu", proposerPath=relative["proposer"], refinerPath=relative["refiner"],
                                  launcher=PopenLauncher(), python=sys.executable)
    try:
        _resultId, result = logic.run(case.volume, case.segmentation, case.paintedId)
    finally:
        logic.close()
    assert result.report.weights == {stage: str(path) for stage, path in tinyWeights.items()}


def test_cancel_raises_cancelled_and_leaves_scene_unchanged(case, logic):
    _cancelAfter = {"calls": 0}

    def shouldStop():
        _cancelAfter["calls"] += 1
        return _cancelAfter["calls"] > 1  # stop once the run has started

    before = case.snapshot()
    with pytest.raises(Cancelled):
        logic.run(case.volume, case.segmentation, case.paintedId, shouldStop=shouldStop)
    assertSnapshotsEqual(before, case.snapshot())


@pytest.mark.parametrize("change", ["spacing", "origin", "voxels"])
def test_a_volume_moved_or_resampled_during_the_run_gets_no_result(case, logic, change):
    """The mask was computed on the grid of the click: written on another, it would lie beside the tumour."""
    prepared = logic.prepare(case.volume, case.segmentation, case.paintedId)
    result = logic.compute(prepared)
    if change == "spacing":
        case.volume.SetSpacing(*[s * 1.5 for s in case.volume.GetSpacing()])
    elif change == "origin":
        case.volume.SetOrigin(*[o + 10.0 for o in case.volume.GetOrigin()])
    else:  # resampled in place: other dimensions, the same node
        slicer.util.updateVolumeFromArray(case.volume, case.image[::2].copy())
    before = case.snapshot()
    with pytest.raises(InputError, match="moved or resampled during the run .*nothing was written"):
        logic.apply(prepared, result)
    assertSnapshotsEqual(before, case.snapshot())


def test_a_transform_set_on_the_volume_during_the_run_gets_no_result(case, logic):
    """Imported under the volume's new transform into a segmentation without it, the result would land beside the
    tumour (Slicer's import moved it by twice the shift); the next run's own check comes too late for this one."""
    prepared = logic.prepare(case.volume, case.segmentation, case.paintedId)
    result = logic.compute(prepared)
    transformNode = case.volume.GetScene().AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(0, 3, 40.0)
    transformNode.SetMatrixTransformToParent(shift)
    case.volume.SetAndObserveTransformNodeID(transformNode.GetID())
    before = case.snapshot()
    with pytest.raises(InputError, match="different transforms during the run.*nothing was written"):
        logic.apply(prepared, result)
    assertSnapshotsEqual(before, case.snapshot())
    # Moved together, the volume and the segmentation keep the result on the tumour: it is written.
    case.segmentation.SetAndObserveTransformNodeID(transformNode.GetID())
    resultId = logic.apply(prepared, result)
    assert case.segmentation.GetSegmentation().GetSegment(resultId) is not None


# ---------------------------------------------------------------------------------------------- re-run


def test_rerun_needs_replace_and_replaces_only_the_result(case, trainedLogic):
    otherId = addSegmentFromArray(case.segmentation, case.volume, np.roll(case.truth, 20, axis=2), "stomach wall",
                                  (0.2, 0.4, 0.9))
    resultId, _ = trainedLogic.run(case.volume, case.segmentation, case.paintedId)
    resultBefore = exportSegment(case.segmentation, resultId, case.volume)[0]

    pairs = [(case.segmentation, otherId), (case.segmentation, resultId)]
    before = case.snapshot(pairs)
    with pytest.raises(ResultSegmentExistsError, match="already has a segment"):
        trainedLogic.run(case.volume, case.segmentation, case.paintedId)
    assertSnapshotsEqual(before, case.snapshot(pairs))

    # With replace: same ID, new content (masked to half the volume so it must differ), nothing else touched.
    half = np.zeros(case.image.shape, dtype=bool)
    half[..., : case.paintedCentreI() + 1] = True
    prepared = trainedLogic.prepare(case.volume, case.segmentation, case.paintedId, masking=Masking(editable=half))
    result = trainedLogic.compute(prepared)
    replacedId = trainedLogic.apply(prepared, result, replaceExisting=True)
    assert replacedId == resultId
    after = case.snapshot([(case.segmentation, otherId)])
    assert after["nodes"] == before["nodes"]
    assert after["segments"] == before["segments"]
    for key in (f"{case.segmentation.GetID()}/{case.paintedId}", f"{case.segmentation.GetID()}/{otherId}"):
        np.testing.assert_array_equal(after["voxels"][key], before["voxels"][key])
    resultAfter = exportSegment(case.segmentation, resultId, case.volume)[0]
    expected = (result.mask > 0) & half
    expected[case.paintedSlice] = case.annotation[case.paintedSlice] > 0  # painted slice kept whatever the masking
    np.testing.assert_array_equal(resultAfter > 0, expected)
    assert not np.array_equal(resultAfter > 0, resultBefore > 0)
    rows = tableRows(trainedLogic.resultsTableNode(case.segmentation))
    assert [row["Role"] for row in rows] == ["painted", "other", "propagated"]


def test_a_renamed_result_is_the_users_own_never_replaced_nor_repropagated(case, logic):
    """The panel's question and the README: rename the result to keep it. Renamed, it is an ordinary segment: the next
    Propagate adds a new result beside it without asking, Re-propagate does not read it, masking counts it."""
    from GastricPropagateLib.result_segment import isResultSegment

    keptId, _first = logic.run(case.volume, case.segmentation, case.paintedId)
    segmentation = case.segmentation.GetSegmentation()
    segmentation.GetSegment(keptId).SetName("Tumour v1 (kept)")
    assert logic.resultSegmentId(case.segmentation) is None
    assert not isResultSegment(segmentation.GetSegment(keptId))
    runRepropagateExpecting(InputError, "no propagated segment .* Click Propagate first", logic, case)

    pairs = [(case.segmentation, keptId)]
    before = case.snapshot(pairs)
    keptVoxels = exportSegment(case.segmentation, keptId, case.volume)[0] > 0
    newId, _second = logic.run(case.volume, case.segmentation, case.paintedId)  # no replaceExisting needed

    assert newId != keptId and logic.resultSegmentId(case.segmentation) == newId
    assert [(segmentation.GetNthSegmentID(i), segmentation.GetNthSegment(i).GetName())
            for i in range(segmentation.GetNumberOfSegments())] == \
        [(case.paintedId, "painted"), (keptId, "Tumour v1 (kept)"), (newId, resultSegmentName())]
    after = case.snapshot(pairs)
    for key in before["voxels"]:
        np.testing.assert_array_equal(after["voxels"][key], before["voxels"][key], err_msg=key)
    # The Segment Editor's "outside all segments" leaves out the painted segment and the result, not the kept one.
    editor = case.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    editor.SetAndObserveSegmentationNode(case.segmentation)
    editor.SetAndObserveSourceVolumeNode(case.volume)
    editor.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedOutsideAllSegments)
    masking = logic.maskingFromSegmentEditorNode(editor, case.volume, case.segmentation, case.paintedId)
    np.testing.assert_array_equal(masking.editable, ~keptVoxels)


def test_the_result_is_known_by_the_name_it_was_written_with_whatever_the_language(case, logic, monkeypatch):
    """The result's name is translated: a change of Slicer's language must neither lose the result nor make a renamed
    one the result again. A result of an older version (no record of its name) is the result while it is named so."""
    from gastric_propagate.protocol import Report
    from GastricPropagateLib import result_segment, scene_output
    from GastricPropagateLib.run_output import RunResult

    k = case.paintedSlice
    mask = np.zeros(case.image.shape, np.uint8)
    mask[k - 1: k + 2] = case.annotation[k]
    result = RunResult(mask=mask, report=Report(slice_confidence={}, painted_slices=[k], stop_reasons={},
                                                seconds=0.0, device="cpu"))
    resultId = logic.apply(logic.prepare(case.volume, case.segmentation, case.paintedId), result)
    segment = case.segmentation.GetSegmentation().GetSegment(resultId)

    def german():
        return "Tumor (propagiert)"

    monkeypatch.setattr(result_segment, "resultSegmentName", german)
    assert logic.resultSegmentId(case.segmentation) == resultId
    monkeypatch.setattr(scene_output, "resultSegmentName", german)
    prepared = logic.prepare(case.volume, case.segmentation, case.paintedId)
    assert logic.apply(prepared, result, replaceExisting=True) == resultId
    assert segment.GetName() == german()
    monkeypatch.undo()
    assert logic.resultSegmentId(case.segmentation) == resultId

    segment.RemoveTag(result_segment.WRITTEN_NAME_TAG)  # as an older version wrote it
    segment.SetName(resultSegmentName())
    assert logic.resultSegmentId(case.segmentation) == resultId
    monkeypatch.setattr(result_segment, "resultSegmentName", german)  # Slicer's language changed since
    assert logic.resultSegmentId(case.segmentation) == resultId
    monkeypatch.undo()
    segment.SetName("kept")
    assert logic.resultSegmentId(case.segmentation) is None


# ---------------------------------------------------------------------------------------------- re-propagation


def test_repropagation_keeps_the_corrected_slices_as_anchors_and_the_painted_segment_untouched(case, logic):
    from GastricPropagateLib.corrections import CORRECTED_SLICES_TAG

    resultId, _first = logic.run(case.volume, case.segmentation, case.paintedId)
    assert logic.prepare(case.volume, case.segmentation, case.paintedId).resultEdits == []  # as written
    k = case.paintedSlice
    corrected = k + 2
    edited = exportSegment(case.segmentation, resultId, case.volume)[0] > 0
    edited[corrected] = case.truth[corrected] > 0  # the reader outlines slice k + 2 of the result by hand
    setSegmentArray(case.segmentation, case.volume, resultId, edited)
    before = case.snapshot()
    # A Propagate instead would discard the correction: what it reads says which slice (the panel asks with it).
    assert logic.prepare(case.volume, case.segmentation, case.paintedId).resultEdits == [corrected]

    resultId2, result, prepared = logic.repropagate(case.volume, case.segmentation, case.paintedId)

    assert resultId2 == resultId
    assert prepared.correctedSlices == [corrected]
    assert prepared.paintedSlices == [k, corrected] and prepared.options.keyframes
    assert result.anchor_slices == [k, corrected]
    written = exportSegment(case.segmentation, resultId, case.volume)[0] > 0
    np.testing.assert_array_equal(written[corrected], case.truth[corrected] > 0)  # kept exactly as corrected
    np.testing.assert_array_equal(written[k], case.annotation[k] > 0)
    np.testing.assert_array_equal(written, result.mask > 0)
    after = case.snapshot()
    assert after["nodes"] == before["nodes"] and after["segments"] == before["segments"]
    key = f"{case.segmentation.GetID()}/{case.paintedId}"
    np.testing.assert_array_equal(after["voxels"][key], before["voxels"][key])  # the painted segment: untouched
    tag = vtk.reference("")
    assert case.segmentation.GetSegmentation().GetSegment(resultId).GetTag(CORRECTED_SLICES_TAG, tag)
    assert str(tag) == str(corrected)
    # A Propagate now would discard that round's correction too, though nothing changed since this write.
    assert logic.prepare(case.volume, case.segmentation, case.paintedId).resultEdits == [corrected]
    # The table's painted row is the painted segment, not the painted slice plus the corrected one.
    painted = next(row for row in tableRows(logic.resultsTableNode(case.segmentation)) if row["Role"] == "painted")
    assert int(painted["Voxels"]) == int(case.annotation.sum())

    # Nothing corrected since: refused, saying what to do, and the scene stays as it is.
    runRepropagateExpecting(InputError, "No slice of .* was corrected since", logic, case)


@pytest.mark.parametrize("how", ["re-propagation", "propagation replacing the result"])
def test_a_result_edited_while_the_run_went_on_is_never_overwritten(case, logic, how):
    """The reader may go on editing the result segment in the Segment Editor while a run computes: its result is then
    not written (the replace was confirmed for the segment as it was at the click), and the edits stay."""
    resultId, _first = logic.run(case.volume, case.segmentation, case.paintedId)
    k = case.paintedSlice
    edited = exportSegment(case.segmentation, resultId, case.volume)[0] > 0
    edited[k + 2] = case.truth[k + 2] > 0
    setSegmentArray(case.segmentation, case.volume, resultId, edited)
    prepare = logic.prepareCorrections if how == "re-propagation" else logic.prepare
    prepared = prepare(case.volume, case.segmentation, case.paintedId)
    result = logic.compute(prepared)

    duringTheRun = edited.copy()
    duringTheRun[k - 2] = False  # the reader erases another slice of the result while the run computes
    setSegmentArray(case.segmentation, case.volume, resultId, duringTheRun)
    before = case.snapshot()
    with pytest.raises(InputError, match="was edited while the propagation ran. Nothing was written"):
        logic.apply(prepared, result, replaceExisting=True)
    assertSnapshotsEqual(before, case.snapshot())
    np.testing.assert_array_equal(exportSegment(case.segmentation, resultId, case.volume)[0] > 0, duringTheRun)

    # Unchanged since the click, it is replaced as confirmed.
    again = prepare(case.volume, case.segmentation, case.paintedId)
    assert logic.apply(again, logic.compute(again), replaceExisting=True) == resultId


def test_slices_erased_beyond_the_anchors_become_slice_limits(case, logic):
    from gastric_propagate.inference.options import PropagationOptions
    from gastric_propagate.protocol import Report
    from GastricPropagateLib.run_output import RunResult

    k = case.paintedSlice
    prepared = logic.prepare(case.volume, case.segmentation, case.paintedId)
    mask = np.zeros(case.image.shape, np.uint8)
    mask[k - 3: k + 5] = case.annotation[k]  # a result on slices k - 3 .. k + 4, written by the module
    resultId = logic.apply(prepared, RunResult(mask=mask, report=Report(slice_confidence={}, painted_slices=[k],
                                                                        stop_reasons={}, seconds=0.0, device="cpu")))
    edited = mask.copy()
    edited[k + 3:] = 0  # "the tumour ends at k + 2"
    edited[: k - 2] = 0  # "and starts at k - 2"
    setSegmentArray(case.segmentation, case.volume, resultId, edited)

    again = logic.prepareCorrections(case.volume, case.segmentation, case.paintedId,
                                     PropagationOptions(max_slice=k + 1))
    assert (again.options.min_slice, again.options.max_slice) == (k - 2, k + 1)  # the tighter limit wins
    assert again.correctedSlices == [] and again.paintedSlices == [k]
    np.testing.assert_array_equal(again.annotation, prepared.annotation)


def test_the_undo_state_is_saved_after_the_checks_just_before_the_first_write(case, logic):
    """Applying calls ``beforeWrite`` once its checks pass and before it writes (the result segment is not there
    yet); a refused apply never calls it, so the Segment Editor gets no empty Undo step."""
    prepared = logic.prepare(case.volume, case.segmentation, case.paintedId)
    result = logic.compute(prepared)
    seen = []
    resultId = logic.apply(prepared, result, beforeWrite=lambda: seen.append(logic.resultSegmentId(case.segmentation)))
    assert seen == [None] and resultId is not None
    again = logic.prepare(case.volume, case.segmentation, case.paintedId)
    with pytest.raises(InputError, match="already has a segment"):  # not confirmed: refused before any write
        logic.apply(again, logic.compute(again), beforeWrite=lambda: seen.append("refused run saved a state"))
    assert seen == [None]


def test_a_slice_erased_inside_the_tumour_is_refused_not_filled_again(case, logic):
    """An erased slice between the anchors would be filled again by the engine: refused, saying what to do, with or
    without other corrections; the painted slice erased in the result is the painted segment's to change."""
    resultId, _first = logic.run(case.volume, case.segmentation, case.paintedId)
    k = case.paintedSlice
    edited = exportSegment(case.segmentation, resultId, case.volume)[0] > 0
    edited[k + 3] = case.truth[k + 3] > 0  # a correction: an anchor at k + 3
    edited[k + 1] = False  # "no tumour here", between the painted slice and that anchor
    setSegmentArray(case.segmentation, case.volume, resultId, edited)
    runRepropagateExpecting(InputError, rf"Slice\(s\) {k + 1} of .* were erased, but lie between slices the "
                            rf"propagation keeps \(K = {k}, {k + 3}\)", logic, case)
    edited[k + 3] = exportSegment(case.segmentation, resultId, case.volume)[0][k + 3] > 0
    setSegmentArray(case.segmentation, case.volume, resultId, edited)  # the erasure alone: not "nothing corrected"
    runRepropagateExpecting(InputError, "were erased, but lie between", logic, case)

    edited[k + 1] = case.truth[k + 1] > 0
    edited[k] = False  # the painted slice, erased in the result
    setSegmentArray(case.segmentation, case.volume, resultId, edited)
    runRepropagateExpecting(InputError, rf"Slice\(s\) {k} of .* are painted in .* edit .* itself", logic, case)


def test_a_result_is_re_propagated_only_from_the_segment_it_came_from(case, logic):
    """A second lesion's painted segment selected: re-propagating would replace the first lesion's corrected result
    with the second's. Refused, naming both; the same once the first painted segment is gone."""
    resultId, _first = logic.run(case.volume, case.segmentation, case.paintedId)
    k = case.paintedSlice
    edited = exportSegment(case.segmentation, resultId, case.volume)[0] > 0
    edited[k + 2] = case.truth[k + 2] > 0
    setSegmentArray(case.segmentation, case.volume, resultId, edited)
    other = np.zeros(case.image.shape, np.uint8)
    other[k - 4, 2:6, 2:6] = 1
    otherId = addSegmentFromArray(case.segmentation, case.volume, other, "lesion B")
    painted = case.segmentation.GetSegmentation().GetSegment(case.paintedId).GetName()
    before = case.snapshot()
    with pytest.raises(InputError, match=f"propagated from the segment '{painted}', not from 'lesion B'. To correct "
                                         f"that result, select '{painted}'"):
        logic.repropagate(case.volume, case.segmentation, otherId)
    assertSnapshotsEqual(before, case.snapshot())
    case.segmentation.GetSegmentation().RemoveSegment(case.paintedId)
    with pytest.raises(InputError, match=f"from a segment \\('{painted}'\\) that is no longer in the segmentation"):
        logic.repropagate(case.volume, case.segmentation, otherId)
    np.testing.assert_array_equal(exportSegment(case.segmentation, resultId, case.volume)[0] > 0, edited)
    # Painted again under its old name (a new segment): said so, not "from 'X' ..., not from 'X'".
    againId = addSegmentFromArray(case.segmentation, case.volume, case.annotation, painted)
    with pytest.raises(InputError, match=f"from an earlier segment '{painted}', which was deleted; the selected "
                                         f"'{painted}' is a new segment of that name"):
        logic.repropagate(case.volume, case.segmentation, againId)
    np.testing.assert_array_equal(exportSegment(case.segmentation, resultId, case.volume)[0] > 0, edited)


def test_an_end_set_by_erasing_holds_in_later_rounds_until_the_reader_draws_beyond_it(case, logic):
    k = case.paintedSlice
    resultId, _first = logic.run(case.volume, case.segmentation, case.paintedId)
    edited = exportSegment(case.segmentation, resultId, case.volume)[0] > 0
    assert edited[k + 3:].any(), "the first result reaches beyond k + 2"
    edited[k + 3:] = False  # "the tumour ends at k + 2"
    edited[k - 1] = case.truth[k - 1] > 0  # and a correction
    setSegmentArray(case.segmentation, case.volume, resultId, edited)
    _id, first, prepared = logic.repropagate(case.volume, case.segmentation, case.paintedId)
    assert prepared.options.max_slice == k + 2 and not first.mask[k + 3:].any()

    edited = exportSegment(case.segmentation, resultId, case.volume)[0] > 0
    edited[k - 2] = case.truth[k - 2] > 0  # the next round corrects another slice only
    setSegmentArray(case.segmentation, case.volume, resultId, edited)
    _id, second, prepared = logic.repropagate(case.volume, case.segmentation, case.paintedId)
    assert prepared.options.max_slice == k + 2 and not second.mask[k + 3:].any(), "the erased end came back"
    assert k + 3 in logic.prepare(case.volume, case.segmentation, case.paintedId).resultEdits  # a Propagate: lost

    edited = exportSegment(case.segmentation, resultId, case.volume)[0] > 0
    edited[k + 4] = case.truth[k + 4] > 0  # the reader draws beyond the end: the drawing wins
    setSegmentArray(case.segmentation, case.volume, resultId, edited)
    _id, third, prepared = logic.repropagate(case.volume, case.segmentation, case.paintedId)
    assert prepared.options.max_slice is None and third.mask[k + 4].any()


def test_the_results_end_slice_corrected_stays_its_end_until_the_reader_draws_beyond_it(case, logic):
    """Re-propagated, the result went on past an end slice the reader had just redrawn (6 of 12 such ends in a probe
    on real lesions, never rightly): the reader's last slice is the end, unless a slice is drawn beyond it."""
    resultId, _first = logic.run(case.volume, case.segmentation, case.paintedId)
    edited = exportSegment(case.segmentation, resultId, case.volume)[0] > 0
    top = int(np.flatnonzero(edited.reshape(len(edited), -1).any(axis=1))[-1])
    assert top < len(edited) - 2 and top > case.paintedSlice
    j, i = np.argwhere(edited[top])[0]
    edited[top, j, i] = False  # the last slice's outline, redrawn a voxel tighter
    assert np.count_nonzero(edited[top]) >= 8
    setSegmentArray(case.segmentation, case.volume, resultId, edited)
    _id, again, prepared = logic.repropagate(case.volume, case.segmentation, case.paintedId)
    assert prepared.options.max_slice == top and again.mask[top].any() and not again.mask[top + 1:].any()
    edited = exportSegment(case.segmentation, resultId, case.volume)[0] > 0
    edited[top + 1] = edited[top]  # the reader draws one slice further out
    setSegmentArray(case.segmentation, case.volume, resultId, edited)
    _id, beyond, prepared = logic.repropagate(case.volume, case.segmentation, case.paintedId)
    assert prepared.options.max_slice is None and beyond.mask[top + 1].any()


def test_a_re_propagation_keeps_the_max_distance_from_the_painted_slice(case, logic):
    """The engine measures it from the outermost anchor; a corrected slice near the limit must not carry the result
    beyond what the reader set, measured from the painted slice as the panel says."""
    from gastric_propagate.inference.options import PropagationOptions

    k, sliceMm = case.paintedSlice, case.volume.GetSpacing()[2]
    options = PropagationOptions(max_distance_mm=2 * sliceMm)
    resultId, first = logic.run(case.volume, case.segmentation, case.paintedId, options)
    assert not first.mask[k + 3:].any() and not first.mask[: k - 2].any()
    edited = exportSegment(case.segmentation, resultId, case.volume)[0] > 0
    edited[k + 2] = case.truth[k + 2] > 0  # a correction at the limit
    setSegmentArray(case.segmentation, case.volume, resultId, edited)
    _id, again, prepared = logic.repropagate(case.volume, case.segmentation, case.paintedId, options)
    assert (prepared.options.min_slice, prepared.options.max_slice) == (k - 2, k + 2)
    assert not again.mask[k + 3:].any() and not again.mask[: k - 2].any()


def test_a_slice_drawn_beyond_the_panel_s_slice_limits_widens_them_as_it_does_the_distance_limit(case, logic):
    """Drawn past 'Highest slice', it was refused only after the engine had started, as 'painted slice(s) outside the
    slice limits' (only one slice was painted)."""
    from gastric_propagate.inference.options import PropagationOptions

    k = case.paintedSlice
    options = PropagationOptions(min_slice=k - 2, max_slice=k + 2)
    resultId, first = logic.run(case.volume, case.segmentation, case.paintedId, options)
    assert not first.mask[k + 3:].any()
    edited = exportSegment(case.segmentation, resultId, case.volume)[0] > 0
    edited[k + 3] = edited[k + 4] = case.truth[k + 3] > 0  # the reader draws two slices beyond the limit
    setSegmentArray(case.segmentation, case.volume, resultId, edited)
    _id, again, prepared = logic.repropagate(case.volume, case.segmentation, case.paintedId, options)
    assert (prepared.options.min_slice, prepared.options.max_slice) == (k - 2, k + 4)
    assert again.mask[k + 4].any() and not again.mask[k + 5:].any() and not again.mask[: k - 2].any()


def test_repropagation_without_a_result_segment_is_refused(case, logic):
    runRepropagateExpecting(InputError, "no propagated segment .* Click Propagate first", logic, case)


def test_repropagation_from_a_result_without_a_record_is_refused(case, logic):
    handMade = addSegmentFromArray(case.segmentation, case.volume, case.truth, resultSegmentName())
    assert logic.resultSegmentId(case.segmentation) == handMade
    runRepropagateExpecting(InputError, "holds no record of what this module wrote", logic, case)


def test_repropagation_on_another_volume_of_the_same_size_is_refused_not_read_as_corrections(case, logic):
    """Another series of the patient (its origin three slices further along K): on its grid every written slice
    reads as edited, and the result would be re-propagated from 'corrections' the reader never made."""
    import SimpleITK as sitk

    logic.run(case.volume, case.segmentation, case.paintedId)
    other = sitk.Image(case.imageSitk)
    direction = np.array(other.GetDirection()).reshape(3, 3)
    other.SetOrigin((np.array(other.GetOrigin()) + direction[:, 2] * 3 * other.GetSpacing()[2]).tolist())
    venous = addVolumeFromSitk(case.scene, other, "CT venous")
    before = case.snapshot()
    with pytest.raises(InputError, match="'Tumour \\(propagated\\)' was written on another volume than 'CT venous'"):
        logic.repropagate(venous, case.segmentation, case.paintedId)
    assertSnapshotsEqual(before, case.snapshot())


@pytest.mark.parametrize("change", ["hardened", "moved"])
def test_a_transform_the_run_was_under_hardened_or_moved_keeps_the_corrections_readable(case, logic, change):
    """The refusals say 'harden them': hardening changes the volume's IJK-to-RAS, not where its voxels are; moving a
    transform both are under moves them together. Either way the segment stays on its voxels, and the record of the
    grid it was written on must still match."""
    transformNode = case.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(0, 3, 40.0)
    transformNode.SetMatrixTransformToParent(shift)
    for node in (case.volume, case.segmentation):
        node.SetAndObserveTransformNodeID(transformNode.GetID())
    resultId, _first = logic.run(case.volume, case.segmentation, case.paintedId)
    k = case.paintedSlice
    edited = exportSegment(case.segmentation, resultId, case.volume)[0] > 0
    edited[k + 2] = case.truth[k + 2] > 0
    setSegmentArray(case.segmentation, case.volume, resultId, edited)
    if change == "hardened":
        hardening = slicer.vtkSlicerTransformLogic()
        assert all(hardening.hardenTransform(node) for node in (case.volume, case.segmentation))
    else:
        shift.SetElement(0, 3, 45.0)
        shift.SetElement(1, 3, -3.0)
        transformNode.SetMatrixTransformToParent(shift)
    assert logic.prepare(case.volume, case.segmentation, case.paintedId).resultEdits == [k + 2]
    _id, _again, prepared = logic.repropagate(case.volume, case.segmentation, case.paintedId)
    assert prepared.correctedSlices == [k + 2]


def runRepropagateExpecting(error, match, logic, case):
    before = case.snapshot()
    with pytest.raises(error, match=match):
        logic.repropagate(case.volume, case.segmentation, case.paintedId)
    assertSnapshotsEqual(before, case.snapshot())


# ---------------------------------------------------------------------------------------------- masking


def test_masking_keeps_result_inside_editable_area_and_intensity_range(case, trainedLogic):
    otherId = addSegmentFromArray(case.segmentation, case.volume, case.truth, "reference", (0.1, 0.9, 0.1))
    editable = np.zeros(case.image.shape, dtype=bool)
    editable[:, :, : case.paintedCentreI() + 1] = True
    masking = Masking(editable=editable, intensityRange=(-100.0, 400.0))
    pairs = [(case.segmentation, otherId)]
    before = case.snapshot(pairs)

    resultId, result = trainedLogic.run(case.volume, case.segmentation, case.paintedId, masking=masking)

    written = exportSegment(case.segmentation, resultId, case.volume)[0] > 0
    allowed = editable & (case.image >= -100) & (case.image <= 400)
    k = case.paintedSlice
    painted = np.zeros(case.image.shape, dtype=bool)
    painted[k] = True
    assert (written & ~painted).any()
    assert not (written & ~allowed & ~painted).any(), "the result set voxels outside the editable area"
    np.testing.assert_array_equal(written & ~painted, (result.mask > 0) & allowed & ~painted)
    # The painted slice is kept exactly although half of it lies outside the editable area.
    assert (case.annotation[k] > 0)[~allowed[k]].any(), "the test needs painted voxels outside the editable area"
    np.testing.assert_array_equal(written[k], case.annotation[k] > 0)
    after = case.snapshot(pairs)
    for key in before["voxels"]:
        np.testing.assert_array_equal(after["voxels"][key], before["voxels"][key])


def test_masking_that_leaves_nothing_is_refused_without_writing(case, trainedLogic):
    masking = Masking(editable=np.zeros(case.image.shape, dtype=bool))
    before = case.snapshot()
    with pytest.raises(InputError, match="empty inside the editable area: beyond the painted slice nothing is left"):
        trainedLogic.run(case.volume, case.segmentation, case.paintedId, masking=masking)
    assertSnapshotsEqual(before, case.snapshot())


def _editorMaskedInsideTheTruth(case):
    """A Segment Editor node whose editable area is inside a new segment holding the truth; and that segment's ID."""
    insideId = addSegmentFromArray(case.segmentation, case.volume, case.truth, "allowed", (0.1, 0.9, 0.1))
    editor = case.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    editor.SetAndObserveSegmentationNode(case.segmentation)
    editor.SetAndObserveSourceVolumeNode(case.volume)
    editor.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedInsideSingleSegment)
    editor.SetMaskSegmentID(insideId)
    return editor, insideId


def test_segment_editor_masking_is_turned_into_arrays(case, logic):
    editor, insideId = _editorMaskedInsideTheTruth(case)
    editor.SetSourceVolumeIntensityMask(True)
    editor.SetSourceVolumeIntensityMaskRange(-50.0, 300.0)
    before = case.snapshot()

    masking = logic.maskingFromSegmentEditorNode(editor, case.volume, case.segmentation, case.paintedId)

    np.testing.assert_array_equal(masking.editable, case.truth > 0)
    assert masking.intensityRange == (-50.0, 300.0)
    assertSnapshotsEqual(before, case.snapshot())

    # "Outside all segments" ignores the painted segment (the result continues it) but honours the others.
    editor.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedOutsideAllSegments)
    editor.SetSourceVolumeIntensityMask(False)
    masking = logic.maskingFromSegmentEditorNode(editor, case.volume, case.segmentation, case.paintedId)
    np.testing.assert_array_equal(masking.editable, case.truth == 0)
    assert masking.intensityRange is None

    editor.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedEverywhere)
    assert not logic.maskingFromSegmentEditorNode(editor, case.volume, case.segmentation, case.paintedId).isActive()


def test_segment_editor_masking_made_for_another_volume_is_not_applied(case, logic):
    """The editor's settings (its HU range, its editable area) belong to the volume it edits: not to this run's."""
    editor, insideId = _editorMaskedInsideTheTruth(case)
    editor.SetSourceVolumeIntensityMask(True)
    editor.SetSourceVolumeIntensityMaskRange(-50.0, 300.0)
    other = case.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "MR")
    editor.SetAndObserveSourceVolumeNode(other)
    assert not logic.maskingFromSegmentEditorNode(editor, case.volume, case.segmentation, case.paintedId).isActive()
    editor.SetAndObserveSourceVolumeNode(case.volume)
    masking = logic.maskingFromSegmentEditorNode(editor, case.volume, case.segmentation, case.paintedId)
    assert masking.intensityRange == (-50.0, 300.0) and masking.editable is not None
    assert masking.description == "inside segment 'allowed', intensity -50 to 300"


def test_masking_segment_that_no_longer_exists_is_an_error_saying_what_to_do(case, logic):
    editor, insideId = _editorMaskedInsideTheTruth(case)
    case.segmentation.GetSegmentation().RemoveSegment(insideId)
    editor.SetMaskSegmentID(insideId)  # the editor may have dropped it; a saved scene can still name it
    with pytest.raises(InputError, match=r"no longer exists.*Masking section.*untick 'Masking' \(respect Segment"):
        logic.maskingFromSegmentEditorNode(editor, case.volume, case.segmentation, case.paintedId)
    editor.SetMaskSegmentID("")
    with pytest.raises(InputError, match="none selected"):
        logic.maskingFromSegmentEditorNode(editor, case.volume, case.segmentation, case.paintedId)


# ---------------------------------------------------------------------------------------------- results table


def test_the_results_table_stays_with_its_segmentation_when_a_scene_is_imported(case, logic, tmp_path):
    """Importing a scene renames the node IDs that collide with the open scene's: the table must follow its own
    segmentation, not take over the open scene's segmentation (whose table the next run would overwrite)."""
    logic.run(case.volume, case.segmentation, case.paintedId)
    tableA = logic.resultsTableNode(case.segmentation)
    case.scene.SetRootDirectory(str(tmp_path))
    case.scene.SetURL(str(tmp_path / "patient A.mrml"))
    assert case.scene.Commit()

    scene = slicer.vtkMRMLScene()
    patientB = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Patient B")
    tableB = logic.resultsTableNode(patientB, create=True)
    assert (patientB.GetID(), tableB.GetID()) == (case.segmentation.GetID(), tableA.GetID())  # the IDs collide
    scene.SetURL(str(tmp_path / "patient A.mrml"))
    assert scene.Import()

    (importedA,) = [scene.GetNthNodeByClass(i, "vtkMRMLSegmentationNode")
                    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"))
                    if scene.GetNthNodeByClass(i, "vtkMRMLSegmentationNode").GetName() == "Segmentation"]
    assert importedA.GetID() != patientB.GetID()
    assert logic.resultsTableNode(patientB).GetID() == tableB.GetID()
    importedTable = logic.resultsTableNode(importedA)
    assert importedTable is not None and importedTable.GetID() not in (tableB.GetID(), None)
    assert importedTable.GetName() == tableA.GetName()


def test_a_results_table_linked_by_an_older_version_is_found_and_linked_anew_when_written(case):
    from GastricPropagateLib.scene_output import (TABLE_SEGMENTATION_ATTRIBUTE, TABLE_SEGMENTATION_REFERENCE,
                                                  resultsTableNode)

    table = case.scene.AddNewNodeByClass("vtkMRMLTableNode", "GastricPropagate results")
    table.SetAttribute(TABLE_SEGMENTATION_ATTRIBUTE, case.segmentation.GetID())
    assert resultsTableNode(case.segmentation) is table
    assert table.GetNodeReferenceID(TABLE_SEGMENTATION_REFERENCE) is None  # reading changes nothing
    assert resultsTableNode(case.segmentation, create=True) is table
    assert table.GetNodeReferenceID(TABLE_SEGMENTATION_REFERENCE) == case.segmentation.GetID()
    assert table.GetAttribute(TABLE_SEGMENTATION_ATTRIBUTE) is None
    assert case.scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 1


# ---------------------------------------------------------------------------------------------- export


def test_the_painted_segment_s_name_comes_back_whole_from_a_saved_segmentation(case, logic, tmp_path):
    """'|' separates a .seg.nrrd's segment tags: a painted segment named 'Lesion A | cardia' came back 'Lesion A '."""
    from GastricPropagateLib.result_segment import paintedSegmentOf

    case.segmentation.GetSegmentation().GetSegment(case.paintedId).SetName("Lesion A | cardia")
    logic.run(case.volume, case.segmentation, case.paintedId)
    path = exportSegmentation(case.segmentation, tmp_path / "saved.seg.nrrd")
    reloaded = case.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "reloaded")
    storage = reloaded.CreateDefaultStorageNode()
    storage.SetFileName(str(path))
    assert storage.ReadData(reloaded)
    result = reloaded.GetSegmentation().GetSegment(logic.resultSegmentId(reloaded))
    assert paintedSegmentOf(result) == (case.paintedId, "Lesion A / cardia")


def test_exports_write_files_and_leave_the_scene_unchanged(case, logic, tmp_path):
    import SimpleITK as sitk

    resultId, result = logic.run(case.volume, case.segmentation, case.paintedId)
    before = case.snapshot()

    segPath = exportSegmentation(case.segmentation, tmp_path / "tumour.seg.nrrd")
    niftiPath = exportLabelmap(case.volume, case.segmentation, [resultId], tmp_path / "tumour.nii.gz")
    csvPath = exportResultsCsv(logic.resultsTableNode(case.segmentation), tmp_path / "results.csv")

    assertSnapshotsEqual(before, case.snapshot())
    assert Path(segPath).stat().st_size > 0
    written = sitk.ReadImage(str(niftiPath))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written) > 0, result.mask > 0)
    np.testing.assert_allclose(written.GetOrigin(), case.imageSitk.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(written.GetDirection(), case.imageSitk.GetDirection(), atol=1e-5)
    with open(csvPath, newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert tuple(rows[0].keys()) == COLUMN_NAMES
    assert [row["Role"] for row in rows] == ["painted", "propagated"]
    with pytest.raises(ValueError, match="should end with"):
        exportResultsCsv(logic.resultsTableNode(case.segmentation), tmp_path / "results.txt")
    # Label n is the n-th segment given, the later one where they overlap.
    both = sitk.GetArrayFromImage(sitk.ReadImage(exportLabelmap(case.volume, case.segmentation,
                                                                 [resultId, case.paintedId], tmp_path / "both.nrrd")))
    expected = np.where(case.annotation > 0, 2, np.where(result.mask > 0, 1, 0))
    np.testing.assert_array_equal(both, expected)


def test_the_results_table_is_computed_again_from_the_segments_as_they_are_now(case, logic, tmp_path):
    """The reader corrects, renames and deletes after a run: the refreshed table (and its CSV) says what the scene
    holds, voxels and mL counted here independently; the run's time stays on the result's row while it is there."""
    from GastricPropagateLib.results_table import tableRows

    resultId, _result = logic.run(case.volume, case.segmentation, case.paintedId)
    seconds = next(row for row in tableRows(logic.resultsTableNode(case.segmentation)) if row["Segment ID"] == resultId)
    edited = exportSegment(case.segmentation, resultId, case.volume)[0] > 0
    kept = np.flatnonzero(edited.reshape(len(edited), -1).any(axis=1))
    edited[kept[-3]:] = False  # the reader erases the top slices of the result
    setSegmentArray(case.segmentation, case.volume, resultId, edited)
    voxelMl = float(np.prod(case.volume.GetSpacing())) / 1000.0
    stale = next(row for row in tableRows(logic.resultsTableNode(case.segmentation)) if row["Segment ID"] == resultId)
    assert int(stale["Voxels"]) > int(edited.sum()), "the table, as the run wrote it, counts the erased slices"

    table = logic.refreshResultsTable(case.volume, case.segmentation)
    rows = {row["Segment ID"]: row for row in tableRows(table)}
    assert int(rows[resultId]["Voxels"]) == int(edited.sum())
    assert float(rows[resultId]["Volume [mL]"]) == pytest.approx(edited.sum() * voxelMl, rel=1e-3)
    assert int(rows[resultId]["Last slice (K)"]) == int(kept[-3]) - 1
    assert rows[resultId]["Role"] == "propagated" and rows[case.paintedId]["Role"] == "painted"
    assert rows[resultId]["Run time [s]"] == seconds["Run time [s]"] and rows[resultId]["Device"] == "cpu"
    edited[kept[-4]] = False  # and one more, after the refresh (whose figures are kept for unchanged segments)
    setSegmentArray(case.segmentation, case.volume, resultId, edited)
    table = logic.refreshResultsTable(case.volume, case.segmentation)
    rows = {row["Segment ID"]: row for row in tableRows(table)}
    assert int(rows[resultId]["Voxels"]) == int(edited.sum()) and int(rows[resultId]["Last slice (K)"]) == kept[-4] - 1
    other = addVolumeFromSitk(case.volume.GetScene(), case.imageSitk, "another CT")
    other.SetSpacing(*[2 * s for s in case.volume.GetSpacing()])  # selected now: the table stays on the run's CT
    assert tableRows(logic.refreshResultsTable(other, case.segmentation)) == tableRows(table)
    csvPath = exportResultsCsv(table, tmp_path / "results.csv")
    with open(csvPath, newline="", encoding="utf-8") as stream:
        assert int(next(row for row in csv.DictReader(stream) if row["Segment ID"] == resultId)["Voxels"]) == \
            int(edited.sum())

    case.segmentation.GetSegmentation().GetSegment(resultId).SetName("Tumour final")  # kept: the reader's own
    rows = {row["Segment ID"]: row for row in tableRows(logic.refreshResultsTable(case.volume, case.segmentation))}
    assert rows[resultId]["Segment"] == "Tumour final" and rows[resultId]["Role"] == "other"
    assert rows[resultId]["Run time [s]"] == "" and rows[case.paintedId]["Role"] == "painted"
    case.segmentation.GetSegmentation().RemoveSegment(resultId)
    rows = tableRows(logic.refreshResultsTable(case.volume, case.segmentation))
    assert [row["Segment ID"] for row in rows] == [case.paintedId]


def test_the_table_reads_again_only_the_segments_that_changed(case, logic, monkeypatch):
    from GastricPropagateLib import scene_output

    resultId, _result = logic.run(case.volume, case.segmentation, case.paintedId)
    read = []
    real = scene_output.segmentArray
    monkeypatch.setattr(scene_output, "segmentArray",
                        lambda volume, segmentation, segmentId: read.append(segmentId) or real(volume, segmentation,
                                                                                               segmentId))
    logic.refreshResultsTable(case.volume, case.segmentation)
    assert read == [case.paintedId], "the result's figures come from its write (the painted one's from the click)"
    read.clear()
    logic.refreshResultsTable(case.volume, case.segmentation)
    assert read == [], "nothing changed: nothing read again"
    edited = exportSegment(case.segmentation, resultId, case.volume)[0] > 0
    edited[case.paintedSlice + 1] = False
    setSegmentArray(case.segmentation, case.volume, resultId, edited)
    logic.refreshResultsTable(case.volume, case.segmentation)
    assert resultId in read


def test_refreshing_an_unchanged_table_leaves_a_saved_scene_unmodified(case, logic, tmp_path):
    """Opening the module refreshes the table: a scene saved just before must not then ask to be saved again."""
    resultId, _result = logic.run(case.volume, case.segmentation, case.paintedId)
    table = logic.resultsTableNode(case.segmentation)
    storage = table.CreateDefaultStorageNode()
    case.scene.AddNode(storage)
    table.SetAndObserveStorageNodeID(storage.GetID())
    storage.SetFileName(str(tmp_path / "results.tsv"))
    assert storage.WriteData(table) == 1 and not table.GetModifiedSinceRead()
    logic.refreshResultsTable(case.volume, case.segmentation)
    assert not table.GetModifiedSinceRead()
    edited = exportSegment(case.segmentation, resultId, case.volume)[0] > 0
    edited[case.paintedSlice + 1] = False
    setSegmentArray(case.segmentation, case.volume, resultId, edited)
    logic.refreshResultsTable(case.volume, case.segmentation)
    assert table.GetModifiedSinceRead(), "a changed segment is a changed table"

def test_the_table_counts_again_when_a_transform_moves_the_segmentation(case, logic):
    """The cache's key holds the transforms above both nodes: a segmentation moved (or moved again) against the CT
    is counted where it lies now, as an uncached count says."""
    import vtk

    from GastricPropagateLib.results_table import tableRows

    logic.run(case.volume, case.segmentation, case.paintedId)
    logic.refreshResultsTable(case.volume, case.segmentation)
    transform = case.volume.GetScene().AddNewNodeByClass("vtkMRMLLinearTransformNode")
    case.segmentation.SetAndObserveTransformNodeID(transform.GetID())
    ijkToRas = vtk.vtkMatrix4x4()
    case.volume.GetIJKToRASMatrix(ijkToRas)
    for slices in (5, 2):
        shift = vtk.vtkMatrix4x4()
        for row in range(3):
            shift.SetElement(row, 3, slices * ijkToRas.GetElement(row, 2))
        transform.SetMatrixTransformToParent(shift)
        cached = tableRows(logic.refreshResultsTable(case.volume, case.segmentation))
        logic._statisticsCache.clear()
        assert cached == tableRows(logic.refreshResultsTable(case.volume, case.segmentation)), slices


def test_a_file_name_whose_extension_slicer_writes_in_lower_case_only_is_refused(case, logic, tmp_path):
    resultId, _result = logic.run(case.volume, case.segmentation, case.paintedId)
    before = sorted(tmp_path.iterdir())
    with pytest.raises(ValueError, match="ends in '.NII.GZ': Slicer writes this format by its lower-case extension "
                                         "only. Name it '.*UP.nii.gz'"):
        exportLabelmap(case.volume, case.segmentation, [resultId], tmp_path / "UP.NII.GZ")
    assert sorted(tmp_path.iterdir()) == before, "nothing written, no temporary folder left"
    assert Path(exportLabelmap(case.volume, case.segmentation, [resultId], tmp_path / "UP.NRRD")).is_file()
    assert Path(exportSegmentation(case.segmentation, tmp_path / "UP.SEG.NRRD")).is_file()
    assert Path(exportResultsCsv(logic.resultsTableNode(case.segmentation), tmp_path / "R.CSV")).is_file()
    with pytest.raises(ValueError, match="no results table to export yet"):
        exportResultsCsv(None, tmp_path / "none.csv")


@pytest.mark.parametrize("typed, default, saved", [
    ("/data/tumour", "CT_tumour.nii.gz", "/data/tumour.nii.gz"),
    ("/data/case 7", "Tumour.seg.nrrd", "/data/case 7.seg.nrrd"),
    ("/data/v1.2/results", "GastricPropagate_results.csv", "/data/v1.2/results.csv"),
    ("/data/tumour.nrrd", "CT_tumour.nii.gz", "/data/tumour.nrrd"),  # a suffix of its own: kept (and checked)
    ("", "CT_tumour.nii.gz", ""),  # the dialog cancelled
])
def test_a_name_typed_without_a_suffix_gets_the_default_one(typed, default, saved):
    from GastricPropagateLib.export import withDefaultSuffix

    assert withDefaultSuffix(typed, default) == saved


def test_a_suffix_added_after_the_dialog_onto_an_existing_file_is_asked_about(tmp_path):
    """Qt's own dialog asked about 'tumour' (no such file); 'tumour.nii.gz' exists and would be replaced unasked."""
    from GastricPropagateLib.export import replacesUnasked, withDefaultSuffix

    (tmp_path / "tumour.nii.gz").write_bytes(b"an earlier export")
    typed = str(tmp_path / "tumour")
    assert replacesUnasked(typed, withDefaultSuffix(typed, "CT_tumour.nii.gz"))
    assert not replacesUnasked(typed + ".nii.gz", typed + ".nii.gz"), "typed in full: the dialog asked already"
    assert not replacesUnasked(str(tmp_path / "new"), withDefaultSuffix(str(tmp_path / "new"), "CT_tumour.nii.gz"))
    assert not replacesUnasked("", "")


def test_the_volume_version_changes_with_the_voxels_and_the_spacing_and_only_then(case):
    import slicer

    from GastricPropagateLib.scene_input import volumeVersion

    first = volumeVersion(case.volume)
    slicer.util.arrayFromVolume(case.volume)  # read, not changed
    assert volumeVersion(case.volume) == first
    slicer.util.arrayFromVolume(case.volume)[0, 0, 0] += 1
    slicer.util.arrayFromVolumeModified(case.volume)
    second = volumeVersion(case.volume)
    assert second != first
    case.volume.SetSpacing(*[s * 2 for s in case.volume.GetSpacing()])
    assert volumeVersion(case.volume) not in (first, second)


def test_writing_a_result_tells_the_segmentation_observers_once(case, logic):
    """The Segment Editor, the views and the panel observe the segmentation node: they hear of the new segment once
    it holds its voxels and tags (one SegmentAdded, one SegmentModified), not of each of the nine steps."""
    from GastricPropagateLib.run_output import RunResult

    prepared = logic.prepare(case.volume, case.segmentation, case.paintedId)
    mask = prepared.annotation.copy()
    mask[case.paintedSlice + 1] = mask[case.paintedSlice]
    heard = []
    for event, name in ((slicer.vtkSegmentation.SegmentAdded, "SegmentAdded"),
                        (slicer.vtkSegmentation.SegmentModified, "SegmentModified")):
        case.segmentation.AddObserver(event, lambda caller, event, name=name: heard.append(name))
    resultId = logic.apply(prepared, RunResult(mask=mask))
    assert sorted(heard) == ["SegmentAdded", "SegmentModified"], heard
    segment = case.segmentation.GetSegmentation().GetSegment(resultId)
    assert segment.GetName() == resultSegmentName() and exportSegment(case.segmentation, resultId, case.volume)[0][
        case.paintedSlice + 1].any()


def test_a_run_reads_again_only_the_other_segments_that_changed_since_the_table_counted_them(case, logic,
                                                                                             monkeypatch):
    """Each Propagate re-read every other segment on the whole CT grid (five organs: about 0.2 s at 300 slices)."""
    from GastricPropagateLib import scene_output

    otherIds = [addSegmentFromArray(case.segmentation, case.volume, np.roll(case.truth, 30 * n, axis=2), f"organ {n}")
                for n in (1, 2)]
    logic.run(case.volume, case.segmentation, case.paintedId)
    read = []
    real = scene_output.segmentArray
    monkeypatch.setattr(scene_output, "segmentArray",
                        lambda volume, segmentation, segmentId: read.append(segmentId) or real(volume, segmentation,
                                                                                               segmentId))
    edited = exportSegment(case.segmentation, otherIds[1], case.volume)[0] > 0
    edited[case.paintedSlice] = False
    setSegmentArray(case.segmentation, case.volume, otherIds[1], edited)
    logic.run(case.volume, case.segmentation, case.paintedId, replaceExisting=True)
    assert otherIds[0] not in read and otherIds[1] in read
    rows = {row["Segment ID"]: row for row in tableRows(logic.resultsTableNode(case.segmentation))}
    assert int(rows[otherIds[1]]["Voxels"]) == int(edited.sum())
    assert int(rows[otherIds[0]]["Voxels"]) == int((np.roll(case.truth, 30, axis=2) > 0).sum())


def test_a_result_replaced_by_a_smaller_one_keeps_nothing_of_the_larger(case, logic):
    """The result is imported as the box that holds it: a replaced, larger result must leave no voxel outside it."""
    resultId, first = logic.run(case.volume, case.segmentation, case.paintedId)
    prepared = logic.prepare(case.volume, case.segmentation, case.paintedId)
    smaller = logic.compute(prepared)
    k = case.paintedSlice
    smaller.mask[:] = 0
    smaller.mask[k - 1:k + 2] = case.annotation[k]  # three slices only
    assert np.count_nonzero(first.mask) > np.count_nonzero(smaller.mask)
    logic.apply(prepared, smaller, replaceExisting=True)
    written = exportSegment(case.segmentation, resultId, case.volume)[0] > 0
    np.testing.assert_array_equal(written, smaller.mask > 0)
    rows = {row["Segment ID"]: row for row in tableRows(logic.resultsTableNode(case.segmentation))}
    assert int(rows[resultId]["Voxels"]) == int(np.count_nonzero(smaller.mask))


def test_a_result_unchanged_since_the_click_is_not_read_again_to_be_replaced(case, logic, monkeypatch):
    from GastricPropagateLib import scene_output

    logic.run(case.volume, case.segmentation, case.paintedId)
    prepared = logic.prepare(case.volume, case.segmentation, case.paintedId)
    result = logic.compute(prepared)
    monkeypatch.setattr(scene_output, "resultDigests", lambda *args: pytest.fail("read again, though unchanged"))
    logic.apply(prepared, result, replaceExisting=True)
