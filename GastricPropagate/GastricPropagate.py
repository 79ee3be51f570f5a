"""GastricPropagate: one painted axial slice of a gastric tumour on CT -> a 3D segment (3D Slicer scripted module).

The module file stays thin: the Widget wires the GUI to ``GastricPropagateLib.GastricPropagateLogic``, which turns
MRML into arrays for the engine (``gastric_propagate``) and the result back into a segment.
"""

import logging
import os
import time
from typing import Annotated, Optional

import qt
import vtk

import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from GastricPropagateLib import dependencies
from GastricPropagateLib.logic import (  # noqa: F401  (GastricPropagateLogic is re-exported for scripts)
    Cancelled,
    GastricPropagateLogic,
    Masking,
    resultSegmentName,
)
from GastricPropagateLib.parameters import missingInput, optionsFromParameterNode
from GastricPropagateLib.review import adviceSentences, reviewRows, reviewSummary
from GastricPropagateLib.runner import QProcessLauncher
from GastricPropagateLib.results_table import (
    MANUAL_FULL_OUTLINE_SECONDS,
    MANUAL_ONE_SLICE_SECONDS,
    formatDuration,
)

#: How often the GUI polls the running segmentation process (ms).
POLL_INTERVAL_MS = 100


def stageText(stage: str) -> str:
    """What the status line says for a stage the engine's process reports (runner.STAGES)."""
    texts = {
        "load": _("Loading the networks..."),
        "read": _("Reading the volume..."),
        "proposer": _("Propagating slice by slice..."),
        "refiner": _("Refining..."),
        "write": _("Writing the result..."),
    }
    return texts.get(stage, _("Starting the segmentation process..."))


#
# GastricPropagate
#


class GastricPropagate(ScriptedLoadableModule):
    """Module description shown in Slicer's module list and Help panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Gastric Propagate")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["Segmentations", "Markups"]
        self.parent.contributors = ["GastricPropagate contributors"]
        self.parent.helpText = _(
            "Segments a gastric tumour in 3D from one painted axial slice of a CT.<br>"
            "1. In the Segment Editor, paint the tumour's largest cross-section on one axial slice, along its edge "
            "(the result follows the outline as drawn).<br>"
            "2. Select the CT and that segment here and click <b>Propagate</b>.<br>"
            "The result is a new segment, <i>Tumour (propagated)</i>, beside the painted one, which is never "
            "changed. Check the least confident slice first, then correct with the Segment Editor.<br>"
            "The networks run on the GPU when PyTorch has one, otherwise on the CPU. Research use only; not for "
            "clinical decisions.")
        self.parent.acknowledgementText = _(
            "GastricPropagate uses 3D Slicer's Segmentations infrastructure and PyTorch. The networks were trained on "
            "synthetic phantoms shipped with the extension.")


#
# Parameter node
#


@parameterNodeWrapper
class GastricPropagateParameterNode:
    """What the user chose; saved with the scene.

    inputVolume: the CT. segmentationNode / paintedSegmentId: the segment holding the painted slice.
    keyframes: several painted slices are fixed anchors. minSlice / maxSlice: K limits (-1 = none).
    maxDistanceMm: furthest distance from the painted slice (0 = none). device: torch device.
    useRefiner: run the refiner stage. useConsensus: vote with registration and the copied outline.
    useEditorMasking: honour the Segment Editor's masking settings.
    paintedIsLargest: the painted slice is the tumour's largest cross-section (the protocol).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    segmentationNode: vtkMRMLSegmentationNode
    paintedSegmentId: str = ""
    keyframes: bool = False
    minSlice: Annotated[int, WithinRange(-1, 100000)] = -1
    maxSlice: Annotated[int, WithinRange(-1, 100000)] = -1
    maxDistanceMm: Annotated[float, WithinRange(0.0, 1000.0)] = 0.0
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    useRefiner: bool = True
    useConsensus: bool = True
    useEditorMasking: bool = True
    paintedIsLargest: bool = True


class GastricPropagateParameterNodeLogic(ScriptedLoadableModuleLogic):
    """Finds or creates the module's parameter node (the Logic itself lives in GastricPropagateLib)."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.moduleName = "GastricPropagate"

    def getParameterNode(self) -> GastricPropagateParameterNode:
        return GastricPropagateParameterNode(super().getParameterNode())


#
# GastricPropagateWidget
#


class GastricPropagateWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: inputs, options, Propagate/Cancel with progress, results and export."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterLogic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._prepared = None
        self._replaceExisting = False
        self._timer = None
        self._lastRun = None  # (volumeNode, segmentationNode, resultSegmentId, runner.RunResult)
        self.lastError = None  # the last error a run reported (read by the self-test)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/GastricPropagate.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        # Inference runs in a child process started as a QProcess: the GUI stays responsive and Cancel ends it.
        self.logic = GastricPropagateLogic(launcher=QProcessLauncher())
        self._parameterLogic = GastricPropagateParameterNodeLogic()

        self.ui.confidenceTable.setColumnCount(2)
        self.ui.confidenceTable.setHorizontalHeaderLabels([_("Slice (K)"), _("Confidence")])
        self.ui.confidenceTable.horizontalHeader().setStretchLastSection(True)
        self.ui.confidenceTable.verticalHeader().setVisible(False)
        self.ui.manualSliceValueLabel.text = "~" + formatDuration(MANUAL_ONE_SLICE_SECONDS)
        self.ui.manualFullValueLabel.text = "~" + formatDuration(MANUAL_FULL_OUTLINE_SECONDS)
        self.ui.exportDicomSegButton.visible = self._dicomSegAvailable()
        self._resetProgress()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.segmentSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onSegmentationSelected)
        self.ui.segmentSelector.connect("currentSegmentChanged(QString)", self.onSegmentSelected)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.jumpButton.connect("clicked(bool)", self.onJumpButton)
        self.ui.repropagateButton.connect("clicked(bool)", self.onRepropagateButton)
        self.ui.confidenceTable.connect("cellDoubleClicked(int,int)", self.onConfidenceRowDoubleClicked)
        self.ui.exportSegNrrdButton.connect("clicked(bool)", self.onExportSegNrrd)
        self.ui.exportNiftiButton.connect("clicked(bool)", self.onExportNifti)
        self.ui.exportCsvButton.connect("clicked(bool)", self.onExportCsv)
        self.ui.exportDicomSegButton.connect("clicked(bool)", self.onExportDicomSeg)

        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self._pollJob)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Called when the application closes and the module widget is destroyed: ends a running process."""
        if self._timer is not None:
            self._timer.stop()
        self._cancelJob()
        self.removeObservers()

    def _cancelJob(self) -> None:
        """Ends the running child process (and waits for it); its result is dropped."""
        job, self._job = self._job, None
        if job is not None:
            job.cancel()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        if self._job is not None:
            self._timer.stop()
            self._cancelJob()  # its result would have nowhere to go
            self._prepared = None
            self._resetProgress()
            self.ui.statusLabel.text = _("Cancelled: the scene was closed.")
        self._lastRun = None
        self.ui.confidenceTable.setRowCount(0)  # the list described a result that is gone with the scene
        self.ui.reviewSummaryLabel.text = ""
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self._parameterLogic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode and not firstVolumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode: Optional[GastricPropagateParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # Widgets with a SlicerParameterName property in the .ui follow the parameter node both ways;
            # the segment selector has no connector and is synchronised in _onParameterNodeModified.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._onParameterNodeModified()

    # ------------------------------------------------------------------ GUI state

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        parameters = self._parameterNode
        if parameters is None:
            self.ui.applyButton.enabled = False
            return
        selector = self.ui.segmentSelector
        wasBlocked = selector.blockSignals(True)
        if selector.currentNode() != parameters.segmentationNode:
            selector.setCurrentNode(parameters.segmentationNode)
        if parameters.paintedSegmentId and selector.currentSegmentID() != parameters.paintedSegmentId:
            selector.setCurrentSegmentID(parameters.paintedSegmentId)
        selector.blockSignals(wasBlocked)
        # A newly selected segmentation: adopt the segment the selector shows if the stored one is not in it.
        segmentationNode = parameters.segmentationNode
        currentId = selector.currentSegmentID()
        if (segmentationNode is not None and currentId and currentId != parameters.paintedSegmentId
                and segmentationNode.GetSegmentation().GetSegment(parameters.paintedSegmentId) is None):
            parameters.paintedSegmentId = currentId  # modifies the node again; the next pass changes nothing
            return
        self._updateButtons()

    def onSegmentationSelected(self, node) -> None:
        if self._parameterNode is not None:
            self._parameterNode.segmentationNode = node
            self._parameterNode.paintedSegmentId = self.ui.segmentSelector.currentSegmentID() or ""

    def onSegmentSelected(self, segmentId) -> None:
        if self._parameterNode is not None:
            self._parameterNode.paintedSegmentId = segmentId or ""

    def isRunning(self) -> bool:
        return self._job is not None

    def _updateButtons(self) -> None:
        parameters = self._parameterNode
        running = self.isRunning()
        missing = missingInput(parameters)
        self.ui.applyButton.enabled = missing is None and not running
        self.ui.applyButton.toolTip = missing or _("Propagate the painted slice through the volume.")
        self.ui.cancelButton.enabled = running
        self.ui.inputsCollapsibleButton.enabled = not running
        self.ui.optionsCollapsibleButton.enabled = not running
        hasResult = self._lastRun is not None and not running
        self.ui.jumpButton.enabled = hasResult and bool(self._lastRun[3].least_confident_slices(1))
        segmentationNode = parameters.segmentationNode if parameters is not None else None
        canRepropagate = (missing is None and not running
                          and self.logic.resultSegmentId(segmentationNode) is not None)
        self.ui.repropagateButton.enabled = canRepropagate
        self.ui.exportSegNrrdButton.enabled = segmentationNode is not None and not running
        resultId = self.logic.resultSegmentId(segmentationNode) if segmentationNode is not None else None
        self.ui.exportNiftiButton.enabled = resultId is not None and bool(parameters.inputVolume) and not running
        table = self.logic.resultsTableNode(segmentationNode) if segmentationNode is not None else None
        self.ui.exportCsvButton.enabled = table is not None and not running
        self.ui.exportDicomSegButton.enabled = segmentationNode is not None and not running

    # ------------------------------------------------------------------ run

    @staticmethod
    def _segmentEditorNode():
        """The Segment Editor's parameter node (its masking settings), or None if the editor was never used.

        Looked up as the scene's singleton node, as the Segment Editor module itself finds it: building the editor's
        GUI here would add nodes to the scene.
        """
        return slicer.mrmlScene.GetSingletonNode("SegmentEditor", "vtkMRMLSegmentEditorNode")

    def _editorMasking(self) -> Masking:
        parameters = self._parameterNode
        return self.logic.maskingFromSegmentEditorNode(self._segmentEditorNode(), parameters.inputVolume,
                                                       parameters.segmentationNode, parameters.paintedSegmentId)

    def onApplyButton(self) -> None:
        """Reads the scene, asks before replacing an earlier result, then starts the engine's process."""
        self._run(fromCorrections=False)

    def onRepropagateButton(self) -> None:
        """Propagates again with the slices the reader corrected in the result as anchors (Logic.prepareCorrections)."""
        self._run(fromCorrections=True)

    def _run(self, fromCorrections: bool) -> None:
        if self.isRunning():
            return
        self.lastError = None
        try:
            self._startRun(fromCorrections)
        except Exception as error:
            self.lastError = error
            self.ui.statusLabel.text = _("Not run: {error}").format(error=error)
            logging.error("GastricPropagate: %s", error)
            slicer.util.errorDisplay(_("Could not start the propagation.") + "\n\n" + str(error))
        finally:
            self._updateButtons()

    def _startRun(self, fromCorrections: bool) -> None:
        # Dialogs (installing packages, replacing the earlier result) come without a wait cursor over them.
        if not dependencies.ensureDependencies():
            self.ui.statusLabel.text = _("PyTorch is needed; nothing was run.")
            return
        parameters = self._parameterNode
        self.logic.device = parameters.device
        qt.QApplication.setOverrideCursor(qt.Qt.WaitCursor)
        try:
            masking = self._editorMasking() if parameters.useEditorMasking else Masking()
            prepare = self.logic.prepareCorrections if fromCorrections else self.logic.prepare
            prepared = prepare(parameters.inputVolume, parameters.segmentationNode, parameters.paintedSegmentId,
                               optionsFromParameterNode(parameters), masking=masking)
        finally:
            qt.QApplication.restoreOverrideCursor()
        self._replaceExisting = fromCorrections  # re-propagating replaces the corrected result by design
        existingId = self.logic.resultSegmentId(parameters.segmentationNode)
        if existingId is not None and not fromCorrections:
            name = parameters.segmentationNode.GetSegmentation().GetSegment(existingId).GetName()
            if not slicer.util.confirmOkCancelDisplay(
                    _("The segmentation already has a segment '{name}' from an earlier run. Replace it with the "
                      "new result? (Rename that segment first to keep it.)").format(name=name),
                    windowTitle=_("Replace the propagated segment?")):
                self.ui.statusLabel.text = _("Not run: the earlier result was kept.")
                return
            self._replaceExisting = True
        if masking.isActive():
            logging.info("GastricPropagate: Segment Editor masking applied (%s)", masking.description)
        self._job = self.logic.start(prepared)
        self._prepared = prepared
        self.ui.progressBar.visible = True
        self.ui.progressBar.setRange(0, 0)  # busy until the process reports a stage
        self.ui.statusLabel.text = _("Starting the segmentation process...")
        self._timer.start()

    def _resetProgress(self) -> None:
        self.ui.progressBar.setRange(0, 1)
        self.ui.progressBar.setValue(0)
        self.ui.progressBar.visible = False

    def onCancelButton(self) -> None:
        """Ends the segmentation process at once, whatever it is doing; the scene is left as it was."""
        if self._job is None:
            return
        self._timer.stop()
        self._cancelJob()
        self._prepared = None
        self.lastError = Cancelled(_("Cancelled: nothing was written."))
        self._resetProgress()
        self.ui.statusLabel.text = _("Cancelled: nothing was written.")
        self._updateButtons()

    def _pollJob(self) -> None:
        job = self._job
        if job is None:
            self._timer.stop()
            return
        finished = job.poll()
        progress = job.progress
        if progress.stage == "proposer" and progress.total > 0:
            self.ui.progressBar.setRange(0, progress.total)
            self.ui.progressBar.setValue(progress.done)
            self.ui.progressBar.format = _("%v / %m slices")
        elif progress.stage:
            self.ui.progressBar.setRange(0, 0)  # a stage without slices: busy indicator
        self.ui.statusLabel.text = _("{stage} {elapsed}").format(stage=stageText(progress.stage),
                                                                  elapsed=formatDuration(job.elapsed()))
        if not finished:
            return
        self._timer.stop()
        self._job = None
        prepared, self._prepared = self._prepared, None
        try:
            self._finishJob(job, prepared)
        finally:
            self._updateButtons()

    def _finishJob(self, job, prepared) -> None:
        """After the process has ended: report its error, or write its result into the scene."""
        self._resetProgress()
        try:
            result = job.result()
            resultId = self.logic.apply(prepared, result, replaceExisting=self._replaceExisting)
        except Cancelled as error:
            self.lastError = error
            self.ui.statusLabel.text = _("Cancelled: nothing was written.")
            return
        except Exception as error:
            self.lastError = error
            self.ui.statusLabel.text = _("Failed: {error}").format(error=error)
            logging.error("GastricPropagate: %s", error)
            slicer.util.errorDisplay(_("The propagation failed; nothing was written.") + "\n\n" + str(error))
            return
        self._lastRun = (prepared.volumeNode, prepared.segmentationNode, resultId, result)
        self._showResult(prepared, result, resultId)

    def _showResult(self, prepared, result, resultId: str) -> None:
        segmentationNode = prepared.segmentationNode
        displayNode = segmentationNode.GetDisplayNode()
        if displayNode is not None:
            displayNode.SetSegmentVisibility(resultId, True)
        sliceRange = result.slice_range()
        self.ui.statusLabel.text = _("Done: '{name}' on slices K = {first} to {last}.").format(
            name=resultSegmentName(), first=sliceRange[0], last=sliceRange[1]) if sliceRange else _("Done.")
        if prepared.correctedSlices:
            self.ui.statusLabel.text += " " + _("Corrected slices kept as anchors: K = {slices}.").format(
                slices=", ".join(str(k) for k in prepared.correctedSlices))
        for sentence in adviceSentences(result.advice):
            self.ui.statusLabel.text += " " + sentence
        self.ui.thisRunValueLabel.text = _("{duration} on {device}").format(
            duration=formatDuration(result.seconds), device=result.device)

        rows = reviewRows(result, prepared.correctedSlices)
        self.ui.reviewSummaryLabel.text = reviewSummary(rows)
        table = self.ui.confidenceTable
        table.setRowCount(len(rows))
        for index, row in enumerate(rows):
            kItem = qt.QTableWidgetItem(row.label())
            kItem.setData(qt.Qt.UserRole, row.k)
            valueItem = qt.QTableWidgetItem(f"{row.confidence:.2f}")
            colour = row.colour()
            for item in (kItem, valueItem):
                if colour is not None:
                    item.setBackground(qt.QColor(*colour))
                if row.toReview:
                    item.setToolTip(_("Flagged for review: check this slice."))
            table.setItem(index, 0, kItem)
            table.setItem(index, 1, valueItem)
        table.resizeColumnToContents(0)  # "28 (painted)" in full
        self.ui.resultsTableView.setMRMLTableNode(self.logic.resultsTableNode(segmentationNode))

    # ------------------------------------------------------------------ navigation

    def jumpToSlice(self, k: int) -> None:
        """Centres every slice view on the volume's K slice ``k``."""
        volumeNode = self._lastRun[0] if self._lastRun is not None else self._parameterNode.inputVolume
        x, y, z = self.logic.sliceCenterRAS(volumeNode, int(k))
        slicer.modules.markups.logic().JumpSlicesToLocation(x, y, z, True)

    def onJumpButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not move the slice views.")):
            slices = self._lastRun[3].least_confident_slices(1)
            if slices:
                self.jumpToSlice(slices[0])
                self.ui.statusLabel.text = _("Showing slice K = {k}, the least confident one.").format(k=slices[0])

    def onConfidenceRowDoubleClicked(self, row, column) -> None:
        item = self.ui.confidenceTable.item(row, 0)
        if item is not None and self._lastRun is not None:
            self.jumpToSlice(int(item.data(qt.Qt.UserRole)))

    # ------------------------------------------------------------------ export

    def _askSavePath(self, title: str, defaultName: str, fileFilter: str) -> str:
        directory = slicer.app.defaultScenePath if hasattr(slicer.app, "defaultScenePath") else ""
        path = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), title, os.path.join(directory, defaultName),
                                              fileFilter)
        return path or ""

    def onExportSegNrrd(self) -> None:
        from GastricPropagateLib.export import exportSegmentation

        with slicer.util.tryWithErrorDisplay(_("Export failed.")):
            segmentationNode = self._parameterNode.segmentationNode
            path = self._askSavePath(_("Save segmentation"), segmentationNode.GetName() + ".seg.nrrd",
                                     _("Segmentation (*.seg.nrrd)"))
            if path:
                exportSegmentation(segmentationNode, path)
                self.ui.statusLabel.text = _("Saved {path}").format(path=path)

    def onExportNifti(self) -> None:
        from GastricPropagateLib.export import exportLabelmap

        with slicer.util.tryWithErrorDisplay(_("Export failed.")):
            parameters = self._parameterNode
            resultId = self.logic.resultSegmentId(parameters.segmentationNode)
            path = self._askSavePath(_("Save labelmap"), parameters.inputVolume.GetName() + "_tumour.nii.gz",
                                     _("NIfTI (*.nii.gz *.nii)"))
            if path:
                exportLabelmap(parameters.inputVolume, parameters.segmentationNode, [resultId], path)
                self.ui.statusLabel.text = _("Saved {path}").format(path=path)

    def onExportCsv(self) -> None:
        from GastricPropagateLib.export import exportResultsCsv

        with slicer.util.tryWithErrorDisplay(_("Export failed.")):
            table = self.logic.resultsTableNode(self._parameterNode.segmentationNode)
            path = self._askSavePath(_("Save results table"), "GastricPropagate_results.csv", _("CSV (*.csv)"))
            if path:
                exportResultsCsv(table, path)
                self.ui.statusLabel.text = _("Saved {path}").format(path=path)

    @staticmethod
    def _dicomSegAvailable() -> bool:
        """DICOM SEG export needs Slicer's DICOM module and its DICOMSegmentationPlugin (QuantitativeReporting)."""
        plugins = getattr(slicer.modules, "dicomPlugins", None) or {}
        return hasattr(slicer.modules, "dicom") and "DICOMSegmentationPlugin" in plugins

    def onExportDicomSeg(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("DICOM export failed.")):
            segmentationNode = self._parameterNode.segmentationNode
            shNode = slicer.mrmlScene.GetSubjectHierarchyNode()
            itemId = shNode.GetItemByDataNode(segmentationNode)
            exportDialog = slicer.qSlicerDICOMExportDialog()
            exportDialog.setMRMLScene(slicer.mrmlScene)
            exportDialog.execDialog(itemId)


#
# GastricPropagateTest
#


class GastricPropagateTest(ScriptedLoadableModuleTest):
    """Self-test inside Slicer: drives the module panel on a synthetic phantom CT.

    Needs PyTorch (the PyTorch extension installs it) and the bundled weights. Run it from the Developer section
    (Reload and Test), with ``Slicer --testing --python-code "slicer.selfTests['GastricPropagate']()"``, or under
    ctest, which runs each ``test_`` method on its own in alphabetical order: every test starts from a cleared
    scene and an idle panel, and depends on no other.
    """

    TIMEOUT_S = 600

    def setUp(self):
        slicer.mrmlScene.Clear()  # also ends a run left by an earlier test (the panel cancels it on scene close)
        editorNode = GastricPropagateWidget._segmentEditorNode()
        if editorNode is not None:  # masking settings left by a user or another test must not change the result
            editorNode.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedEverywhere)
            editorNode.SetSourceVolumeIntensityMask(False)

    def runTest(self):
        for test in (self.test_CancelThroughWidget, self.test_PropagateThroughWidget,
                     self.test_RepropagateThroughWidget):
            self.setUp()
            test()

    # -------------------------------------------------------------- helpers

    def _loadPhantom(self):
        """Phantom CT (non-identity direction) + a segmentation whose segment holds the largest cross-section."""
        import numpy as np
        import sitkUtils

        self.assertTrue(dependencies.ensureDependencies(askConfirmation=False),
                        "PyTorch is missing: install the PyTorch extension and let it install PyTorch")
        from gastric_propagate.data.annotation import annotation_from_label
        from gastric_propagate.synthetic.phantom import HELD_OUT_SEED_START, make_phantom

        import SimpleITK as sitk

        phantom = make_phantom(HELD_OUT_SEED_START + 7, size_xy=192, oblique=True)
        # Same voxels on a rotated (15 degrees about S) grid, so that IJK-to-RAS is not the identity in Slicer.
        angle = np.radians(15.0)
        rotation = [np.cos(angle), -np.sin(angle), 0.0, np.sin(angle), np.cos(angle), 0.0, 0.0, 0.0, 1.0]
        image = sitk.Image(phantom.image)
        image.SetDirection(rotation)
        volumeNode = sitkUtils.PushVolumeToSlicer(image, name="GastricPropagate phantom CT")
        ijkToRas = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASDirectionMatrix(ijkToRas)
        self.assertFalse(np.allclose(slicer.util.arrayFromVTKMatrix(ijkToRas)[:3, :3], np.eye(3)),
                         "the self-test needs a non-identity IJK-to-RAS direction")
        _image, truth = phantom.arrays()
        annotation = annotation_from_label(truth)

        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Tumour")
        segmentationNode.CreateDefaultDisplayNodes()
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        paintedId = segmentationNode.GetSegmentation().AddEmptySegment("", "Tumour (painted)", (0.9, 0.2, 0.2))
        slicer.util.updateSegmentBinaryLabelmapFromArray(annotation, segmentationNode, paintedId, volumeNode)
        return volumeNode, segmentationNode, paintedId, annotation, truth

    def _widget(self):
        slicer.util.selectModule("GastricPropagate")
        return slicer.modules.gastricpropagate.widgetRepresentation().self()

    def _selectInputs(self, widget, volumeNode, segmentationNode, paintedId):
        self.assertFalse(widget.isRunning(), "a run of an earlier test is still going")
        parameters = widget._parameterNode
        parameters.inputVolume = volumeNode
        parameters.segmentationNode = segmentationNode
        parameters.paintedSegmentId = paintedId
        parameters.device = "auto"
        parameters.useEditorMasking = True
        slicer.app.processEvents()
        self.assertEqual(widget.ui.segmentSelector.currentSegmentID(), paintedId)
        self.assertTrue(widget.ui.applyButton.enabled, widget.ui.applyButton.toolTip)

    @staticmethod
    def _nodeIds():
        scene = slicer.mrmlScene
        return sorted(scene.GetNthNode(index).GetID() for index in range(scene.GetNumberOfNodes()))

    def _waitForJob(self, widget):
        started = time.monotonic()
        while widget.isRunning():
            self.assertLess(time.monotonic() - started, self.TIMEOUT_S, "the propagation did not finish in time")
            slicer.app.processEvents()
            time.sleep(0.02)
        slicer.app.processEvents()

    # -------------------------------------------------------------- tests

    def test_PropagateThroughWidget(self):
        import numpy as np

        self.delayDisplay("Loading a phantom CT and painting its largest cross-section")
        volumeNode, segmentationNode, paintedId, annotation, truth = self._loadPhantom()
        widget = self._widget()
        self._selectInputs(widget, volumeNode, segmentationNode, paintedId)

        self.delayDisplay("Propagating through the module panel")
        nodesBefore = self._nodeIds()
        widget.ui.applyButton.click()
        self.assertTrue(widget.isRunning(), f"the run did not start: {widget.lastError}")
        self.assertEqual(self._nodeIds(), nodesBefore, "starting a run added nodes to the scene")
        self._waitForJob(widget)
        self.assertIsNone(widget.lastError, f"the run failed: {widget.lastError}")

        segmentation = segmentationNode.GetSegmentation()
        resultId = widget.logic.resultSegmentId(segmentationNode)
        self.assertIsNotNone(resultId, "no result segment was written")
        self.assertEqual(segmentation.GetNumberOfSegments(), 2)
        self.assertNotEqual(resultId, paintedId)
        self.assertEqual(segmentation.GetSegment(resultId).GetName(), resultSegmentName())
        painted = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, paintedId, volumeNode)
        np.testing.assert_array_equal(painted > 0, annotation > 0)
        result = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, resultId, volumeNode) > 0
        dice = 2.0 * (result & (truth > 0)).sum() / (result.sum() + (truth > 0).sum())
        self.delayDisplay(f"Dice vs the phantom truth: {dice:.3f}")
        self.assertGreaterEqual(dice, 0.85)
        k = int(np.flatnonzero(annotation.reshape(len(annotation), -1).any(axis=1))[0])
        np.testing.assert_array_equal(result[k], annotation[k] > 0, "the painted slice was not kept exactly")
        self.assertIsNotNone(widget.logic.resultsTableNode(segmentationNode))
        self.assertTrue(widget.ui.jumpButton.enabled)
        widget.ui.jumpButton.click()

        # A second run asks before replacing (confirmOkCancelDisplay answers OK in testing mode).
        widget.ui.applyButton.click()
        self.assertTrue(widget.isRunning(), f"the second run did not start: {widget.lastError}")
        self._waitForJob(widget)
        self.assertIsNone(widget.lastError, f"the second run failed: {widget.lastError}")
        self.assertEqual(widget.logic.resultSegmentId(segmentationNode), resultId)
        self.assertEqual(segmentation.GetNumberOfSegments(), 2)
        self.delayDisplay("Propagation test passed")

    def test_CancelThroughWidget(self):
        import numpy as np

        volumeNode, segmentationNode, paintedId, annotation, _truth = self._loadPhantom()
        widget = self._widget()
        self._selectInputs(widget, volumeNode, segmentationNode, paintedId)
        nodesBefore = self._nodeIds()

        widget.ui.applyButton.click()
        self.assertTrue(widget.isRunning(), f"the run did not start: {widget.lastError}")
        self.assertTrue(widget.ui.cancelButton.enabled)
        widget.ui.cancelButton.click()
        self.assertFalse(widget.isRunning(), "Cancel did not end the segmentation process")
        slicer.app.processEvents()

        self.assertIsInstance(widget.lastError, Cancelled)
        self.assertIsNone(widget.logic.resultSegmentId(segmentationNode))
        self.assertEqual(segmentationNode.GetSegmentation().GetNumberOfSegments(), 1)
        painted = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, paintedId, volumeNode)
        np.testing.assert_array_equal(painted > 0, annotation > 0)
        self.assertEqual(self._nodeIds(), nodesBefore)
        self.delayDisplay("Cancel test passed")

    def test_RepropagateThroughWidget(self):
        import numpy as np

        volumeNode, segmentationNode, paintedId, annotation, _truth = self._loadPhantom()
        widget = self._widget()
        self._selectInputs(widget, volumeNode, segmentationNode, paintedId)
        self.assertFalse(widget.ui.repropagateButton.enabled, "nothing to re-propagate from before a run")
        widget.ui.applyButton.click()
        self._waitForJob(widget)
        self.assertIsNone(widget.lastError, f"the run failed: {widget.lastError}")
        resultId = widget.logic.resultSegmentId(segmentationNode)
        self.assertTrue(widget.ui.repropagateButton.enabled)
        self.assertTrue(widget.ui.reviewSummaryLabel.text)
        self.assertGreater(widget.ui.confidenceTable.rowCount, 1)

        self.delayDisplay("Correcting the least confident slice of the result by hand, then re-propagating")
        edited = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, resultId, volumeNode) > 0
        runResult = widget._lastRun[3]
        # The least confident slices are often the empty ones where the tumour was judged to end: take the least
        # confident slice that holds voxels of the result.
        held = [k for k in runResult.least_confident_slices(len(runResult.slice_confidence)) if edited[k].any()]
        self.assertTrue(held, "no propagated slice holds voxels")
        corrected = held[0]
        middleI = int(np.median(np.argwhere(edited[corrected])[:, 1]))
        edited[corrected, :, :middleI] = False  # cut the slice in half: a correction the networks would not make
        self.assertTrue(edited[corrected].any())
        slicer.util.updateSegmentBinaryLabelmapFromArray(edited.astype(np.uint8), segmentationNode, resultId,
                                                         volumeNode)
        widget.ui.repropagateButton.click()
        self.assertTrue(widget.isRunning(), f"the re-propagation did not start: {widget.lastError}")
        self._waitForJob(widget)
        self.assertIsNone(widget.lastError, f"the re-propagation failed: {widget.lastError}")
        self.assertEqual(widget.logic.resultSegmentId(segmentationNode), resultId)
        result = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, resultId, volumeNode) > 0
        np.testing.assert_array_equal(result[corrected], edited[corrected], "the corrected slice was not kept")
        painted = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, paintedId, volumeNode)
        np.testing.assert_array_equal(painted > 0, annotation > 0)
        self.assertIn(_("{k} (corrected)").format(k=corrected),
                      [widget.ui.confidenceTable.item(row, 0).text()
                       for row in range(widget.ui.confidenceTable.rowCount)])
        self.delayDisplay("Re-propagation test passed")
