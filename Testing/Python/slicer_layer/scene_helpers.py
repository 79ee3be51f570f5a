"""Scenes, fixtures and checks shared by the headless tests of the Slicer layer (real MRML from slicer-core).

A phantom CT (non-identity direction, non-zero origin) is loaded into a scene as a volume node and the truth's
largest cross-section is painted into a segment. Runs use the real child process (``python -m
gastric_propagate.cli segment``): plumbing tests give it tiny untrained networks saved as checkpoints, so a run takes
a few seconds; tests that need a result beyond the painted slice use the bundled weights.

Test modules import the fixtures they use from here (a second ``conftest.py`` would clash with the engine tests'
``from conftest import ...``).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (real MRML): pip install -e '.[slicer]'")
import vtk  # noqa: E402  (installed with slicer-core)

REPO = Path(__file__).resolve().parents[3]
if str(REPO / "GastricPropagate") not in sys.path:
    sys.path.insert(0, str(REPO / "GastricPropagate"))

from GastricPropagateLib import GastricPropagateLogic  # noqa: E402
from GastricPropagateLib.launchers import PopenLauncher  # noqa: E402
from gastric_propagate.data.annotation import annotation_from_label  # noqa: E402
from gastric_propagate.synthetic.phantom import HELD_OUT_SEED_START, make_phantom  # noqa: E402

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
    segmentId = segmentationNode.GetSegmentation().AddEmptySegment("", name, colour)
    setSegmentArray(segmentationNode, referenceVolumeNode, segmentId, array)
    return segmentId


def setSegmentArray(segmentationNode, referenceVolumeNode, segmentId: str, array: np.ndarray) -> None:
    """Replaces a segment's voxels with ``array`` (k, j, i), as an edit in the Segment Editor would."""
    scene = segmentationNode.GetScene()
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "temp")
    try:
        labelmap.CopyOrientation(referenceVolumeNode)
        labelmap.SetAndObserveTransformNodeID(referenceVolumeNode.GetTransformNodeID())  # on the volume's voxels
        slicer.util.updateVolumeFromArray(labelmap, (array > 0).astype(np.uint8))
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segmentId)
        segmentations = slicer.vtkSlicerSegmentationsModuleLogic
        assert segmentations.ImportLabelmapToSegmentationNode(labelmap, segmentationNode, ids)
    finally:
        scene.RemoveNode(labelmap)


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


def closedSurfaceName() -> str:
    return slicer.vtkSegmentationConverter.GetClosedSurfaceRepresentationName()


def binaryLabelmapName() -> str:
    return slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()


def saveSegmentAsStl(segmentationNode, segmentId: str, folder) -> Path:
    """Writes one segment's closed surface with Slicer's own STL export (LPS, as Slicer saves it)."""
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segmentId)
    before = set(Path(folder).glob("*.stl"))
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsClosedSurfaceRepresentationToFiles(
        str(folder), segmentationNode, ids, "STL", True, 1.0, False)
    (path,) = set(Path(folder).glob("*.stl")) - before
    return path


def loadSegmentationFromStl(scene, path, name: str):
    """A segmentation node as Slicer's segmentation reader makes it from an STL file: one segment, source
    representation closed surface, no labelmap and no reference geometry (qSlicerSegmentationsReader)."""
    storage = slicer.vtkMRMLModelStorageNode()
    storage.SetFileName(str(path))
    model = slicer.vtkMRMLModelNode()
    assert storage.ReadData(model)
    segment = slicer.vtkSegment()
    segment.SetName(name)
    segment.SetColor(0.9, 0.2, 0.2)
    segment.AddRepresentation(closedSurfaceName(), model.GetPolyData())
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.GetSegmentation().SetSourceRepresentationName(closedSurfaceName())
    node.CreateDefaultDisplayNodes()
    node.GetDisplayNode().SetPreferredDisplayRepresentationName2D(closedSurfaceName())
    assert node.GetSegmentation().AddSegment(segment)
    return node, node.GetSegmentation().GetSegmentIdBySegment(segment)


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
    logic = GastricPropagateLogic(device="cpu", proposerPath=tinyWeights["proposer"],
                                  refinerPath=tinyWeights["refiner"], launcher=PopenLauncher(),
                                  python=sys.executable)
    yield logic
    logic.close()  # ends the session's warm worker


@pytest.fixture
def trainedLogic():
    """The bundled weights (they propagate beyond the painted slice, which the masking tests need)."""
    bundledWeightsOrSkip()
    logic = GastricPropagateLogic(device="cpu", launcher=PopenLauncher(), python=sys.executable)
    yield logic
    logic.close()


def bundledWeightsOrSkip():
    from gastric_propagate.inference.checkpoints import bundled_weights

    missing = [str(bundled_weights(stage)) for stage in ("proposer", "refiner") if not bundled_weights(stage).is_file()]
    if missing:
        pytest.skip(f"bundled weights not present yet ({', '.join(missing)}); train/commit them to run this test")


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


#: scripts/test.sh sets it: there a missing PyQt5 fails the tests that need Qt (the QProcess launcher the Slicer
#: application uses, the panel's render) rather than skips them.
QT_REQUIRED = os.environ.get("GASTRIC_PROPAGATE_QT_TEST") == "required"


def pyQt5OrSkip(name: str, why: str):
    """Imports ``name`` (a PyQt5 module; the ``qt`` extra pins PyQt5): skips without it, or fails where
    ``GASTRIC_PROPAGATE_QT_TEST=required``."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        message = f"{why}: {error} (PyQt5 is in the qt extra: pip install -e '.[qt]')"
        if QT_REQUIRED:
            pytest.fail(f"GASTRIC_PROPAGATE_QT_TEST=required and {message}")
        pytest.skip(message)


@pytest.fixture
def qtModule(monkeypatch):
    """Slicer's ``qt`` (PythonQt) when present, else PyQt5's QtCore standing in for it; skips without either."""
    try:
        import qt
    except ImportError:
        pass
    else:
        yield qt
        return
    QtCore = pyQt5OrSkip("PyQt5.QtCore", "needs Slicer's qt or PyQt5 to start a QProcess")
    application = QtCore.QCoreApplication.instance() or QtCore.QCoreApplication([])
    monkeypatch.setitem(sys.modules, "qt", QtCore)
    yield QtCore
    del application


def runExpecting(error, match, logic, case, volume, segmentation, segmentId, options=None):
    extra = []
    before = case.snapshot(extra)
    with pytest.raises(error, match=match):
        logic.run(volume, segmentation, segmentId, options)
    assertSnapshotsEqual(before, case.snapshot(extra))
