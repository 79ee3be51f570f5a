"""GastricPropagateLogic against real MRML (the slicer-core wheel), headless.

A phantom CT (non-identity direction, non-zero origin) is loaded into a scene as a volume node, the truth's
largest cross-section is painted into a segment, and the Logic is driven through prepare / start or compute /
apply. Every run is the real child process (``python -m gastric_propagate.cli segment``, started with
``subprocess.Popen``). Plumbing tests give it tiny untrained networks saved as checkpoints, so a run takes a few
seconds; the accuracy test uses the bundled weights.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (real MRML): pip install -e '.[slicer]'")
import vtk  # noqa: E402  (installed with slicer-core)

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "GastricPropagate"))

from GastricPropagateLib import (  # noqa: E402
    GastricPropagateLogic,
    Masking,
    ResultSegmentExistsError,
    resultSegmentName,
)
from GastricPropagateLib.runner import PopenLauncher, Progress, parseProgressLine  # noqa: E402
from GastricPropagateLib.export import exportLabelmap, exportResultsCsv, exportSegmentation  # noqa: E402
from GastricPropagateLib.results_table import COLUMN_NAMES, tableRows  # noqa: E402
from gastric_propagate.data.annotation import annotation_from_label  # noqa: E402
from gastric_propagate.errors import Cancelled, InputError, WeightsError  # noqa: E402
from gastric_propagate.synthetic.phantom import HELD_OUT_SEED_START, make_phantom  # noqa: E402
from gastric_propagate.inference.pipeline import PropagationOptions  # noqa: E402

pytestmark = pytest.mark.slicer

SEED = HELD_OUT_SEED_START + 7


def _rotation(axis: int, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = [a for a in range(3) if a != axis]
    matrix = np.eye(3)
    matrix[i, i], matrix[i, j], matrix[j, i], matrix[j, j] = c, -s, s, c
    return matrix


#: LPS direction given to the test volumes: 12 degrees in-plane, 5 degrees of gantry-like tilt.
OBLIQUE_DIRECTION = _rotation(2, 12.0) @ _rotation(0, 5.0)


# ---------------------------------------------------------------------------------------------- scene helpers


def _lpsToRas(matrix3: np.ndarray) -> np.ndarray:
    return np.diag([-1.0, -1.0, 1.0]) @ matrix3


def addVolumeFromSitk(scene, image, name: str, className: str = "vtkMRMLScalarVolumeNode"):
    """A volume node holding a SimpleITK image (LPS) with the same voxels in the same physical place (RAS)."""
    import SimpleITK as sitk

    node = scene.AddNewNodeByClass(className, name)
    slicer.util.updateVolumeFromArray(node, sitk.GetArrayFromImage(image))
    node.SetSpacing(*image.GetSpacing())
    node.SetOrigin(*(_lpsToRas(np.eye(3)) @ np.array(image.GetOrigin())))
    direction = _lpsToRas(np.array(image.GetDirection()).reshape(3, 3))
    matrix = vtk.vtkMatrix4x4()
    for row in range(3):
        for column in range(3):
            matrix.SetElement(row, column, direction[row, column])
    node.SetIJKToRASDirectionMatrix(matrix)
    return node


def addSegmentFromArray(segmentationNode, referenceVolumeNode, array: np.ndarray, name: str,
                        colour=(0.9, 0.2, 0.2)) -> str:
    """A new segment holding ``array`` (k, j, i) on ``referenceVolumeNode``'s grid; the scene keeps no temp node."""
    scene = segmentationNode.GetScene()
    segmentId = segmentationNode.GetSegmentation().AddEmptySegment("", name, colour)
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "temp")
    try:
        labelmap.CopyOrientation(referenceVolumeNode)
        slicer.util.updateVolumeFromArray(labelmap, (array > 0).astype(np.uint8))
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segmentId)
        assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentationNode, ids)
    finally:
        scene.RemoveNode(labelmap)
    return segmentId


def exportSegment(segmentationNode, segmentId: str, referenceVolumeNode=None):
    """(array (k, j, i), 4x4 IJK-to-RAS) of one segment, on the reference volume's grid or on the segment's own.

    Independent of the Logic's reading code; removes every node it adds.
    """
    scene = segmentationNode.GetScene()
    before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "export")
    try:
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segmentId)
        assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentationNode, ids, labelmap, referenceVolumeNode)
        matrix = vtk.vtkMatrix4x4()
        labelmap.GetIJKToRASMatrix(matrix)
        return np.array(slicer.util.arrayFromVolume(labelmap)), slicer.util.arrayFromVTKMatrix(matrix)
    finally:
        for index in reversed(range(scene.GetNumberOfNodes())):
            node = scene.GetNthNode(index)
            if node.GetID() not in before:
                scene.RemoveNode(node)


def sceneSnapshot(scene, paintedPairs) -> dict:
    """Node IDs, segment IDs/names per segmentation, and the voxels of the given (segmentationNode, segmentId)."""
    nodes = sorted(scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes()))
    segments = {}
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLSegmentationNode")
        segmentation = node.GetSegmentation()
        segments[node.GetID()] = [(segmentation.GetNthSegmentID(i), segmentation.GetNthSegment(i).GetName())
                                  for i in range(segmentation.GetNumberOfSegments())]
    voxels = {f"{node.GetID()}/{segmentId}": exportSegment(node, segmentId)[0] for node, segmentId in paintedPairs}
    return {"nodes": nodes, "segments": segments, "voxels": voxels}


def assertSnapshotsEqual(before: dict, after: dict) -> None:
    assert after["nodes"] == before["nodes"]
    assert after["segments"] == before["segments"]
    assert after["voxels"].keys() == before["voxels"].keys()
    for key in before["voxels"]:
        np.testing.assert_array_equal(after["voxels"][key], before["voxels"][key], err_msg=key)


def rasCentroid(array: np.ndarray, ijkToRas: np.ndarray) -> np.ndarray:
    kji = np.argwhere(array > 0).astype(float)
    ijk1 = np.c_[kji[:, ::-1], np.ones(len(kji))]
    return (ijkToRas @ ijk1.T).T[:, :3].mean(axis=0)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


class Case:
    """A scene with a phantom CT volume node and a segmentation whose segment 'painted' holds one slice."""

    def __init__(self, *, size_xy: int, n_slices: int | None = None, oblique: bool = True):
        import SimpleITK as sitk

        phantom = make_phantom(SEED, size_xy=size_xy, n_slices=n_slices, oblique=oblique)
        self.phantom = phantom
        self.image, self.truth = phantom.arrays()
        # Same voxels, placed with a rotated and slightly tilted grid (the phantom's own "oblique" may be a mere
        # LPS flip, i.e. an identity IJK-to-RAS in Slicer): the Logic must work in the volume's IJK grid.
        self.imageSitk, self.truthSitk = sitk.Image(phantom.image), sitk.Image(phantom.label)
        for image in (self.imageSitk, self.truthSitk):
            image.SetDirection(OBLIQUE_DIRECTION.flatten().tolist())
        self.scene = slicer.vtkMRMLScene()
        self.segmentationsLogic = slicer.vtkSlicerSegmentationsModuleLogic()  # registers the converter rules
        self.segmentationsLogic.SetMRMLScene(self.scene)
        self.volume = addVolumeFromSitk(self.scene, self.imageSitk, "CT")
        self.segmentation = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Segmentation")
        self.segmentation.CreateDefaultDisplayNodes()
        self.segmentation.SetReferenceImageGeometryParameterFromVolumeNode(self.volume)
        self.annotation = annotation_from_label(self.truth)
        self.paintedSlice = int(np.flatnonzero(self.annotation.reshape(len(self.annotation), -1).any(1))[0])
        self.paintedId = addSegmentFromArray(self.segmentation, self.volume, self.annotation, "painted")
        self._sitk = sitk

    def paintedCentreI(self) -> int:
        """I index through the middle of the painted cross-section (to split it in two)."""
        return int(np.round(np.argwhere(self.annotation > 0)[:, 2].mean()))

    def snapshot(self, extra=()):
        return sceneSnapshot(self.scene, [(self.segmentation, self.paintedId), *extra])

    def truthRasCentroid(self) -> np.ndarray:
        """Centroid of the truth from the SimpleITK geometry alone (LPS -> RAS)."""
        kji = np.argwhere(self.truth > 0)
        points = [self.truthSitk.TransformContinuousIndexToPhysicalPoint([float(i), float(j), float(k)])
                  for k, j, i in kji[:: max(1, len(kji) // 2000)]]
        return np.mean([[-x, -y, z] for x, y, z in points], axis=0)


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tinyWeights(tmp_path_factory):
    """Untrained tiny networks saved as checkpoints: the engine's real code path, fast in a child process."""
    import torch

    from gastric_propagate.inference.checkpoints import save_checkpoint
    from gastric_propagate.inference.networks import UNet2D
    from gastric_propagate.inference.preprocessing import Preprocessing

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-weights")
    paths = {}
    for stage, channels in (("proposer", 4), ("refiner", 6)):
        paths[stage] = save_checkpoint(folder / f"{stage}.pt", stage=stage,
                                       network=UNet2D(in_channels=channels, base_channels=4, depth=2),
                                       preprocessing=Preprocessing(), training={"note": "untrained, for tests"})
    return paths


@pytest.fixture
def case():
    return Case(size_xy=160, n_slices=28)


@pytest.fixture
def logic(tinyWeights):
    return GastricPropagateLogic(device="cpu", proposerPath=tinyWeights["proposer"],
                                 refinerPath=tinyWeights["refiner"], launcher=PopenLauncher(),
                                 python=sys.executable)


@pytest.fixture
def trainedLogic():
    """The bundled weights (they propagate beyond the painted slice, which the masking tests need)."""
    bundledWeightsOrSkip()
    return GastricPropagateLogic(device="cpu", launcher=PopenLauncher(), python=sys.executable)


def bundledWeightsOrSkip():
    from gastric_propagate.inference.checkpoints import bundled_weights

    missing = [str(bundled_weights(stage)) for stage in ("proposer", "refiner") if not bundled_weights(stage).is_file()]
    if missing:
        pytest.skip(f"bundled weights not present yet ({', '.join(missing)}); train/commit them to run this test")


# ---------------------------------------------------------------------------------------------- the main path


def test_lib_imports_without_gui_or_torch():
    """The Lib loads headless and cheaply: no qt/ctk/ScriptedLoadableModule, and torch only when a run starts."""
    import subprocess

    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "import GastricPropagateLib, GastricPropagateLib.export, GastricPropagateLib.runner, "
            "GastricPropagateLib.dependencies; "
            "bad = [m for m in ('qt', 'ctk', 'slicer.ScriptedLoadableModule', 'torch') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    completed = subprocess.run([sys.executable, "-c", code, str(REPO / "GastricPropagate")], capture_output=True,
                               text=True, timeout=120)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_run_with_bundled_weights_segments_the_tumour_beside_the_painted_segment():
    bundledWeightsOrSkip()
    case = Case(size_xy=192, oblique=True)
    direction = np.array(case.imageSitk.GetDirection()).reshape(3, 3)
    assert not np.allclose(direction, np.eye(3)), "the test needs a non-identity direction"
    assert np.linalg.norm(case.imageSitk.GetOrigin()) > 1.0, "the test needs a non-zero origin"
    paintedBefore = exportSegment(case.segmentation, case.paintedId, case.volume)[0]

    logic = GastricPropagateLogic(device="cpu")
    resultId, result = logic.run(case.volume, case.segmentation, case.paintedId)

    segmentation = case.segmentation.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 2
    assert resultId != case.paintedId
    assert segmentation.GetSegment(resultId).GetName() == resultSegmentName()
    np.testing.assert_array_equal(exportSegment(case.segmentation, case.paintedId, case.volume)[0], paintedBefore)
    resultArray = exportSegment(case.segmentation, resultId, case.volume)[0]
    score = dice(resultArray, case.truth)
    print(f"Dice of the Logic's result vs the phantom truth: {score:.3f} ({result.seconds:.1f} s on {result.device})")
    assert score >= 0.85
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


def _runExpecting(error, match, logic, case, volume, segmentation, segmentId, options=None):
    extra = []
    before = case.snapshot(extra)
    with pytest.raises(error, match=match):
        logic.run(volume, segmentation, segmentId, options)
    assertSnapshotsEqual(before, case.snapshot(extra))


def test_empty_segment_is_refused(case, logic):
    emptyId = case.segmentation.GetSegmentation().AddEmptySegment("", "empty")
    _runExpecting(InputError, "has no painted voxels", logic, case, case.volume, case.segmentation, emptyId)


def test_segment_painted_on_two_slices_is_refused_naming_them(case, logic):
    k = case.paintedSlice
    twoSlices = case.annotation.copy()
    twoSlices[k + 3] = case.truth[k + 3]
    segmentId = addSegmentFromArray(case.segmentation, case.volume, twoSlices, "two slices")
    _runExpecting(InputError, rf"2 slices .*K = {k}, {k + 3}", logic, case, case.volume, case.segmentation,
                  segmentId)


def test_missing_volume_segmentation_or_segment_is_refused(case, logic):
    _runExpecting(InputError, "No CT volume is selected", logic, case, None, case.segmentation, case.paintedId)
    _runExpecting(InputError, "No segmentation is selected", logic, case, case.volume, None, case.paintedId)
    _runExpecting(InputError, "Select the painted segment", logic, case, case.volume, case.segmentation, "")
    _runExpecting(InputError, "Select the painted segment", logic, case, case.volume, case.segmentation, "nonexist")


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
    with pytest.raises(InputError, match="different image grid.*voxels are"):
        logic.run(case.volume, otherSegmentation, segmentId)
    assertSnapshotsEqual(before, case.snapshot(extra))


def test_label_map_or_non_ct_volume_is_refused(case, logic):
    import SimpleITK as sitk

    labelNode = addVolumeFromSitk(case.scene, case.truthSitk, "label", "vtkMRMLLabelMapVolumeNode")
    _runExpecting(InputError, "not a CT scalar volume", logic, case, labelNode, case.segmentation, case.paintedId)
    # An MR-like volume on the same grid (0..1000, no air below -300): the engine refuses it.
    mr = sitk.Cast(sitk.RescaleIntensity(case.imageSitk, 0, 1000), sitk.sitkInt16)
    mrNode = addVolumeFromSitk(case.scene, mr, "MR")
    _runExpecting(InputError, "does not look like a CT", logic, case, mrNode, case.segmentation, case.paintedId)


def test_missing_weights_are_refused_and_scene_unchanged(case, tmp_path):
    logic = GastricPropagateLogic(device="cpu", proposerPath=tmp_path / "missing_proposer.pt")
    _runExpecting(WeightsError, "missing_proposer", logic, case, case.volume, case.segmentation, case.paintedId)


def test_cancel_raises_cancelled_and_leaves_scene_unchanged(case, logic):
    _cancelAfter = {"calls": 0}

    def shouldStop():
        _cancelAfter["calls"] += 1
        return _cancelAfter["calls"] > 1  # stop once the run has started

    before = case.snapshot()
    with pytest.raises(Cancelled):
        logic.run(case.volume, case.segmentation, case.paintedId, shouldStop=shouldStop)
    assertSnapshotsEqual(before, case.snapshot())


def test_progress_line_parsing():
    assert parseProgressLine("PROGRESS stage=proposer done=3 total=20\n") == Progress("proposer", 3, 20)
    assert parseProgressLine("tumour: 12.0 mL on slices 3-9") is None
    assert parseProgressLine("PROGRESS stage=proposer done=x total=20") is None


def test_job_runs_in_a_child_process_reporting_every_stage(case, logic):
    prepared = logic.prepare(case.volume, case.segmentation, case.paintedId)
    before = case.snapshot()
    seen = []
    job = logic.start(prepared, onProgress=seen.append)
    folder = job.folder
    assert folder.is_dir() and not job.isFinished()
    assert job.wait(timeout=300)
    result = job.result()

    stages = [p.stage for p in seen]
    assert [name for i, name in enumerate(stages) if i == 0 or stages[i - 1] != name] == \
        ["load", "read", "proposer", "refiner", "write"]
    proposer = [p for p in seen if p.stage == "proposer"]
    assert proposer[-1].done == proposer[-1].total >= 1
    assert job.progress == Progress("write", 1, 1)
    assert result.mask.shape == case.image.shape and result.device == "cpu"
    assert result.anchor_slices == [case.paintedSlice]
    np.testing.assert_array_equal(result.mask[case.paintedSlice] > 0, case.annotation[case.paintedSlice] > 0)
    assert not folder.exists(), "the temporary files are removed once the result is read"
    assertSnapshotsEqual(before, case.snapshot())


@pytest.fixture(scope="module")
def slowRefinerWeights(tinyWeights, tmp_path_factory):
    """The tiny proposer with a wide refiner, so that the child spends a while in the refiner stage."""
    import torch

    from gastric_propagate.inference.checkpoints import save_checkpoint
    from gastric_propagate.inference.networks import UNet2D
    from gastric_propagate.inference.preprocessing import Preprocessing

    torch.manual_seed(0)
    refiner = save_checkpoint(tmp_path_factory.mktemp("slow-refiner") / "refiner.pt", stage="refiner",
                              network=UNet2D(in_channels=6, base_channels=96, depth=3),
                              preprocessing=Preprocessing(), training={"note": "untrained, for tests"})
    return {"proposer": tinyWeights["proposer"], "refiner": refiner}


@pytest.mark.parametrize("stage", ["start", "load", "refiner"])
def test_cancel_ends_the_process_at_any_stage_and_leaves_the_scene_as_it_was(case, logic, slowRefinerWeights,
                                                                             stage):
    import time

    logic.refinerPath = slowRefinerWeights["refiner"]
    prepared = logic.prepare(case.volume, case.segmentation, case.paintedId)
    before = case.snapshot()
    job = logic.start(prepared)
    if stage != "start":
        while not job.poll() and job.progress.stage != stage:
            time.sleep(0.002)
        assert job.progress.stage == stage and not job.isFinished(), "the child ended before reaching the stage"
    process, folder = job._process, job.folder
    assert process.running()
    job.cancel()
    assert job.isFinished() and job.cancelled()
    assert not process.running(), "the child process still runs after cancel"
    assert not folder.exists()
    with pytest.raises(Cancelled):
        job.result()
    assertSnapshotsEqual(before, case.snapshot())


@pytest.fixture
def qtModule(monkeypatch):
    """Slicer's ``qt`` (PythonQt) when present, else PyQt5's QtCore standing in for it; skips without either."""
    try:
        import qt

        return qt
    except ImportError:
        pass
    QtCore = pytest.importorskip("PyQt5.QtCore", reason="needs Slicer's qt or PyQt5 to start a QProcess")
    application = QtCore.QCoreApplication.instance() or QtCore.QCoreApplication([])
    monkeypatch.setitem(sys.modules, "qt", QtCore)
    yield QtCore
    del application


def test_qprocess_launcher_runs_reports_and_cancels(case, logic, qtModule, slowRefinerWeights):
    import time

    from GastricPropagateLib.runner import QProcessLauncher

    logic.launcher = QProcessLauncher()
    prepared = logic.prepare(case.volume, case.segmentation, case.paintedId)
    job = logic.start(prepared)
    assert job.wait(timeout=300)
    assert job.progress == Progress("write", 1, 1)
    np.testing.assert_array_equal(job.result().mask[case.paintedSlice] > 0, case.annotation[case.paintedSlice] > 0)

    logic.refinerPath = slowRefinerWeights["refiner"]
    job = logic.start(prepared)
    while not job.poll() and job.progress.stage != "refiner":
        time.sleep(0.002)
    process = job._process
    assert process.running()
    job.cancel()
    assert not process.running() and not job.folder.exists()
    with pytest.raises(Cancelled):
        job.result()


def test_engine_failure_in_the_child_is_reported_with_its_message(case, logic):
    """A CUDA request on a machine without CUDA: the child exits with code 2 and its message reaches the caller."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    logic.device = "cuda"
    _runExpecting(InputError, "no CUDA device", logic, case, case.volume, case.segmentation, case.paintedId)


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


def test_segment_editor_masking_is_turned_into_arrays(case, logic):
    insideId = addSegmentFromArray(case.segmentation, case.volume, case.truth, "allowed", (0.1, 0.9, 0.1))
    editor = case.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    editor.SetAndObserveSegmentationNode(case.segmentation)
    editor.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedInsideSingleSegment)
    editor.SetMaskSegmentID(insideId)
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


def test_masking_segment_that_no_longer_exists_is_an_error_saying_what_to_do(case, logic):
    insideId = addSegmentFromArray(case.segmentation, case.volume, case.truth, "allowed", (0.1, 0.9, 0.1))
    editor = case.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    editor.SetAndObserveSegmentationNode(case.segmentation)
    editor.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedInsideSingleSegment)
    editor.SetMaskSegmentID(insideId)
    case.segmentation.GetSegmentation().RemoveSegment(insideId)
    editor.SetMaskSegmentID(insideId)  # the editor may have dropped it; a saved scene can still name it
    with pytest.raises(InputError, match="no longer exists.*Masking section.*untick 'Use Segment Editor masking'"):
        logic.maskingFromSegmentEditorNode(editor, case.volume, case.segmentation, case.paintedId)
    editor.SetMaskSegmentID("")
    with pytest.raises(InputError, match="none selected"):
        logic.maskingFromSegmentEditorNode(editor, case.volume, case.segmentation, case.paintedId)


# ---------------------------------------------------------------------------------------------- export


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
