"""GastricPropagateLib.testdata: the self-test's numpy-built CT is segmented as the self-test expects, through the
panel's controller, the real Logic and the real child process with the bundled weights (real MRML, no Qt)."""

from __future__ import annotations

import sys
import time

import numpy as np

from scene_helpers import addSegmentFromArray, bundledWeightsOrSkip, dice, exportSegment, slicer  # noqa: F401
from test_controller import FakeView, parameters

from GastricPropagateLib import GastricPropagateLogic
from GastricPropagateLib.controller import RunController
from GastricPropagateLib.launchers import PopenLauncher
from GastricPropagateLib.testdata import TEST_CT_SPACING, addTestVolume, makeTestCT

import pytest

pytestmark = pytest.mark.slicer


def test_the_test_ct_has_one_lesion_painted_on_its_largest_cross_section():
    image, truth, painted = makeTestCT()
    assert image.shape == truth.shape == painted.shape and image.dtype == np.int16
    areas = truth.reshape(len(truth), -1).sum(axis=1)
    paintedSlices = np.flatnonzero(painted.reshape(len(painted), -1).any(axis=1))
    assert len(paintedSlices) == 1 and areas[paintedSlices[0]] == areas.max()
    np.testing.assert_array_equal(painted[paintedSlices[0]], truth[paintedSlices[0]])
    assert 60 < image[truth > 0].mean() < 120 and -130 < np.median(image[(truth == 0) & (image > -500)]) < 60


def test_the_self_test_case_through_the_controller_and_the_child_process():
    bundledWeightsOrSkip()
    image, truth, painted = makeTestCT()
    scene = slicer.vtkMRMLScene()
    segmentationsLogic = slicer.vtkSlicerSegmentationsModuleLogic()  # registers the converter rules
    segmentationsLogic.SetMRMLScene(scene)
    volume = addTestVolume(scene, image)
    directions = np.zeros((3, 3))
    volume.GetIJKToRASDirections(directions)
    assert not np.allclose(directions, np.eye(3)) and not np.allclose(directions, np.diag([-1, -1, 1]))
    assert volume.GetSpacing() == TEST_CT_SPACING
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Tumour")
    segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    paintedId = addSegmentFromArray(segmentation, volume, painted, "Tumour (painted)")

    logic = GastricPropagateLogic(launcher=PopenLauncher(), python=sys.executable)
    controller = RunController(logic, FakeView())
    controller.parameters = parameters(inputVolume=volume, segmentationNode=segmentation, paintedSegmentId=paintedId,
                                       maxSlice=-1, useConsensus=True)
    controller.run()
    assert controller.isRunning, controller.lastError
    started = time.monotonic()
    while controller.isRunning:
        assert time.monotonic() - started < 300, "the propagation did not finish in time"
        controller.poll()
        time.sleep(0.05)
    assert controller.lastError is None, controller.lastError

    resultId = controller.lastRun.resultId
    assert logic.resultSegmentId(segmentation) == resultId != paintedId
    result = exportSegment(segmentation, resultId, volume)[0] > 0
    assert dice(result, truth) >= 0.85  # the self-test's threshold (0.99 when written)
    k = int(np.flatnonzero(painted.reshape(len(painted), -1).any(axis=1))[0])
    np.testing.assert_array_equal(result[k], painted[k] > 0)
    np.testing.assert_array_equal(exportSegment(segmentation, paintedId, volume)[0] > 0, painted > 0)
    assert controller.view.buttons.jump and controller.view.buttons.repropagate
