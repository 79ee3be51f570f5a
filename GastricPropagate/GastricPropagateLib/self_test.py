"""GastricPropagateTest: the module's self-test inside the Slicer application; it drives the panel itself.

Needs onnxruntime (PyTorch too on an NVIDIA GPU; clicking Propagate once offers to install what is missing) and the
bundled weights; without them each test is skipped, and says why. Run it from the Developer section (Reload and
Test), with ``Slicer --testing --python-code "slicer.selfTests['GastricPropagate']()"``, or under ctest
(``slicer_add_python_unittest`` in GastricPropagate/CMakeLists.txt), which runs each ``test_`` method on its own in
alphabetical order: every test starts from a cleared scene and an idle panel, and depends on no other.

Its CT comes from ``testdata.py`` (numpy), so the self-test needs nothing the extension does not install.
"""

import time
import unittest

import numpy as np

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from . import dependencies
from .i18n import _
from .logic import Cancelled
from .result_segment import resultSegmentName
from .testdata import addTestVolume, makeTestCT
from .widget import segmentEditorNode


class GastricPropagateTest(ScriptedLoadableModuleTest):
    """Drives the module panel on a numpy-built CT with a non-identity IJK-to-RAS direction."""

    TIMEOUT_S = 600

    def setUp(self):
        slicer.mrmlScene.Clear()  # also ends a run left by an earlier test (the panel cancels it on scene close)
        editorNode = segmentEditorNode()
        if editorNode is not None:  # masking settings left by a user or another test must not change the result
            editorNode.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedEverywhere)
            editorNode.SetSourceVolumeIntensityMask(False)

    def runTest(self):
        # Called without a unittest runner (Reload and Test): a test that skips must not stop the ones after it.
        for test in (self.test_CancelThroughWidget, self.test_EnteringStartsTheWorker, self.test_PropagateThroughWidget,
                     self.test_RepropagateThroughWidget, self.test_UndoInSegmentEditor):
            self.setUp()
            try:
                test()
            except unittest.SkipTest as skipped:
                self.delayDisplay(f"{test.__name__} skipped: {skipped}")

    # ---------------------------------------------------------------- helpers

    def _loadCase(self):
        """The test CT as a volume node + a segmentation whose segment holds the largest cross-section."""
        if not dependencies.ready():  # never a download of its own, unasked: Propagate asks before installing
            self.skipTest("the engine's packages are not installed: click Propagate once and accept the install")
        image, truth, painted = makeTestCT()
        volumeNode = addTestVolume(slicer.mrmlScene, image)

        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Tumour")
        segmentationNode.CreateDefaultDisplayNodes()
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        paintedId = segmentationNode.GetSegmentation().AddEmptySegment("", "Tumour (painted)", (0.9, 0.2, 0.2))
        slicer.util.updateSegmentBinaryLabelmapFromArray(painted, segmentationNode, paintedId, volumeNode)
        return volumeNode, segmentationNode, paintedId, painted, truth

    def _panelWith(self, volumeNode, segmentationNode, paintedId):
        """The module's panel (its Widget), idle, with these inputs selected."""
        slicer.util.selectModule("GastricPropagate")
        widget = slicer.modules.gastricpropagate.widgetRepresentation().self()
        self.assertFalse(widget.controller.isRunning, "a run of an earlier test is still going")
        parameters = widget.logic.getParameterNode()
        parameters.inputVolume = volumeNode
        parameters.segmentationNode = segmentationNode
        parameters.paintedSegmentId = paintedId
        parameters.device = "auto"
        parameters.useEditorMasking = True
        slicer.app.processEvents()
        self.assertEqual(widget.ui.segmentSelector.currentSegmentID(), paintedId)
        self.assertTrue(widget.ui.applyButton.enabled, widget.ui.applyButton.toolTip)
        return widget

    @staticmethod
    def _nodeIds():
        scene = slicer.mrmlScene
        return sorted(scene.GetNthNode(index).GetID() for index in range(scene.GetNumberOfNodes()))

    def _waitForJob(self, widget):
        started = time.monotonic()
        while widget.controller.isRunning:
            self.assertLess(time.monotonic() - started, self.TIMEOUT_S, "the propagation did not finish in time")
            slicer.app.processEvents()
            time.sleep(0.02)
        slicer.app.processEvents()

    def _assertPaintedUnchanged(self, segmentationNode, paintedId, volumeNode, painted):
        array = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, paintedId, volumeNode)
        np.testing.assert_array_equal(array > 0, painted > 0)

    # ---------------------------------------------------------------- tests

    def test_PropagateThroughWidget(self):
        self.delayDisplay("Loading a test CT and painting its lesion's largest cross-section")
        volumeNode, segmentationNode, paintedId, painted, truth = self._loadCase()
        widget = self._panelWith(volumeNode, segmentationNode, paintedId)
        controller = widget.controller

        self.delayDisplay("Propagating through the module panel")
        nodesBefore = self._nodeIds()
        widget.ui.applyButton.click()
        self.assertTrue(controller.isRunning, f"the run did not start: {controller.lastError}")
        self.assertEqual(self._nodeIds(), nodesBefore, "starting a run added nodes to the scene")
        self._waitForJob(widget)
        self.assertIsNone(controller.lastError, f"the run failed: {controller.lastError}")

        segmentation = segmentationNode.GetSegmentation()
        resultId = widget.logic.resultSegmentId(segmentationNode)
        self.assertIsNotNone(resultId, "no result segment was written")
        self.assertEqual(segmentation.GetNumberOfSegments(), 2)
        self.assertNotEqual(resultId, paintedId)
        self.assertEqual(segmentation.GetSegment(resultId).GetName(), resultSegmentName())
        self._assertPaintedUnchanged(segmentationNode, paintedId, volumeNode, painted)
        result = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, resultId, volumeNode) > 0
        dice = 2.0 * (result & (truth > 0)).sum() / (result.sum() + (truth > 0).sum())
        self.delayDisplay(f"Dice vs the lesion: {dice:.3f}")
        self.assertGreaterEqual(dice, 0.85)
        k = int(np.flatnonzero(painted.reshape(len(painted), -1).any(axis=1))[0])
        np.testing.assert_array_equal(result[k], painted[k] > 0, "the painted slice was not kept exactly")
        self.assertIsNotNone(widget.logic.resultsTableNode(segmentationNode))
        self.assertTrue(widget.ui.jumpButton.enabled)
        widget.ui.jumpButton.click()

        # A second run asks before replacing; the question is answered here (Slicer answers its dialogs by itself
        # only when started with --testing, not under Reload and Test).
        asked = []
        widget.confirm = lambda text, title: asked.append(text) or True
        try:
            widget.ui.applyButton.click()
        finally:
            del widget.confirm  # the panel's own method again
        self.assertEqual(len(asked), 1, "replacing the earlier result was not asked")
        self.assertTrue(controller.isRunning, f"the second run did not start: {controller.lastError}")
        self._waitForJob(widget)
        self.assertIsNone(controller.lastError, f"the second run failed: {controller.lastError}")
        self.assertEqual(widget.logic.resultSegmentId(segmentationNode), resultId)
        self.assertEqual(segmentation.GetNumberOfSegments(), 2)
        self.delayDisplay("Propagation test passed")

    def test_EnteringStartsTheWorker(self):
        if not dependencies.ready():
            self.skipTest("the engine's packages are not installed: the worker is started by the first run instead")
        slicer.util.selectModule("Data")
        slicer.util.selectModule("GastricPropagate")  # enter(): the worker starts while the reader picks the inputs
        widget = slicer.modules.gastricpropagate.widgetRepresentation().self()
        worker = widget.logic.worker()
        self.assertTrue(worker.running(), "opening the module did not start the engine's worker")
        started = time.monotonic()
        while not worker.ready:
            self.assertTrue(worker.running(), f"the worker ended while loading: {worker.stderrMessage()}")
            self.assertLess(time.monotonic() - started, self.TIMEOUT_S, "the worker did not load in time")
            worker.readLines()
            time.sleep(0.05)
        self.delayDisplay("Opening the module started the engine's worker; its weights are loaded")

    def test_CancelThroughWidget(self):
        volumeNode, segmentationNode, paintedId, painted, _truth = self._loadCase()
        widget = self._panelWith(volumeNode, segmentationNode, paintedId)
        controller = widget.controller
        nodesBefore = self._nodeIds()

        widget.ui.applyButton.click()
        self.assertTrue(controller.isRunning, f"the run did not start: {controller.lastError}")
        self.assertTrue(widget.ui.cancelButton.enabled)
        widget.ui.cancelButton.click()
        self.assertFalse(controller.isRunning, "Cancel did not end the segmentation process")
        slicer.app.processEvents()

        self.assertIsInstance(controller.lastError, Cancelled)
        self.assertIsNone(widget.logic.resultSegmentId(segmentationNode))
        self.assertEqual(segmentationNode.GetSegmentation().GetNumberOfSegments(), 1)
        self._assertPaintedUnchanged(segmentationNode, paintedId, volumeNode, painted)
        self.assertEqual(self._nodeIds(), nodesBefore)
        self.delayDisplay("Cancel test passed")

    def test_RepropagateThroughWidget(self):
        volumeNode, segmentationNode, paintedId, painted, _truth = self._loadCase()
        widget = self._panelWith(volumeNode, segmentationNode, paintedId)
        controller = widget.controller
        self.assertFalse(widget.ui.repropagateButton.enabled, "nothing to re-propagate from before a run")
        widget.ui.applyButton.click()
        self._waitForJob(widget)
        self.assertIsNone(controller.lastError, f"the run failed: {controller.lastError}")
        resultId = widget.logic.resultSegmentId(segmentationNode)
        self.assertTrue(widget.ui.repropagateButton.enabled)
        self.assertTrue(widget.ui.reviewSummaryLabel.text)
        self.assertGreater(widget.ui.confidenceTable.rowCount, 1)

        self.delayDisplay("Correcting the least confident slice of the result by hand, then re-propagating")
        edited = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, resultId, volumeNode) > 0
        runResult = controller.lastRun.result
        # The least confident slices are often the empty ones where the lesion was judged to end: take the
        # least confident slice that holds voxels of the result.
        held = [k for k in runResult.least_confident_slices(len(runResult.slice_confidence)) if edited[k].any()]
        self.assertTrue(held, "no propagated slice holds voxels")
        corrected = held[0]
        middleI = int(np.median(np.argwhere(edited[corrected])[:, 1]))
        edited[corrected, :, :middleI] = False  # cut the slice in half: a correction the networks would not make
        self.assertTrue(edited[corrected].any())
        slicer.util.updateSegmentBinaryLabelmapFromArray(edited.astype(np.uint8), segmentationNode, resultId,
                                                         volumeNode)
        widget.ui.repropagateButton.click()
        self.assertTrue(controller.isRunning, f"the re-propagation did not start: {controller.lastError}")
        self._waitForJob(widget)
        self.assertIsNone(controller.lastError, f"the re-propagation failed: {controller.lastError}")
        self.assertEqual(widget.logic.resultSegmentId(segmentationNode), resultId)
        result = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, resultId, volumeNode) > 0
        np.testing.assert_array_equal(result[corrected], edited[corrected], "the corrected slice was not kept")
        self._assertPaintedUnchanged(segmentationNode, paintedId, volumeNode, painted)
        self.assertIn(_("{k} (corrected)").format(k=corrected),
                      [widget.ui.confidenceTable.item(row, 0).text()
                       for row in range(widget.ui.confidenceTable.rowCount)])
        self.delayDisplay("Re-propagation test passed")

    def test_UndoInSegmentEditor(self):
        """One Undo in the Segment Editor after Propagate takes the result away, not the reader's last stroke."""
        volumeNode, segmentationNode, paintedId, painted, _truth = self._loadCase()
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.SegmentEditorWidget.editor
        editor.setSegmentationNode(segmentationNode)
        editor.setSourceVolumeNode(volumeNode)
        editor.saveStateForUndo()  # as the editor does before each stroke
        k = int(np.flatnonzero(painted.reshape(len(painted), -1).any(axis=1))[0])
        ys, xs = np.nonzero(painted[k])
        touchedUp = painted.copy()
        touchedUp[k, ys.max() + 1, xs.min():xs.max() + 1] = 1  # the reader's last stroke: one more row
        slicer.util.updateSegmentBinaryLabelmapFromArray(touchedUp, segmentationNode, paintedId, volumeNode)

        widget = self._panelWith(volumeNode, segmentationNode, paintedId)
        widget.ui.applyButton.click()
        self._waitForJob(widget)
        self.assertIsNone(widget.controller.lastError, f"the run failed: {widget.controller.lastError}")
        self.assertIsNotNone(widget.logic.resultSegmentId(segmentationNode))
        editor.undo()
        slicer.app.processEvents()
        self.assertIsNone(widget.logic.resultSegmentId(segmentationNode), "Undo did not take the result away")
        self._assertPaintedUnchanged(segmentationNode, paintedId, volumeNode, touchedUp)
        self.delayDisplay("Undo test passed")
