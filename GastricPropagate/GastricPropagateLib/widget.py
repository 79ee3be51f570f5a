"""The module panel: wires ``Resources/UI/GastricPropagate.ui`` to the controller (``controller.py``), which holds
what the buttons do, and to the Logic. Loaded only inside the Slicer application (it needs ``qt``).
"""

from __future__ import annotations

import contextlib
import os

import qt
import vtk

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from gastric_propagate.protocol import MANUAL_FULL_OUTLINE_SECONDS, MANUAL_ONE_SLICE_SECONDS, POLL_INTERVAL_MS

from . import dependencies
from .controller import RunController, adoptedSegmentId
from .i18n import _
from .parameters import parameterWidgets
from .results_table import manualEstimateText
from .review import leastConfidentRow
from .launchers import QProcessLauncher


def segmentEditorNode():
    """The Segment Editor's parameter node (its masking settings), or None if the editor was never used.

    Looked up as the scene's singleton node, as the Segment Editor module itself finds it: building the editor's GUI
    here would add nodes to the scene.
    """
    return slicer.mrmlScene.GetSingletonNode("SegmentEditor", "vtkMRMLSegmentEditorNode")


def _askToInstall(device: str) -> bool:
    """The controller's ``ensureDependencies``: asks before installing what ``device`` needs."""
    return dependencies.ensureDependencies(askConfirmation=True, device=device)


def saveSegmentEditorUndoState(segmentationNode) -> None:
    """Adds the segmentation as it is now to the Segment Editor's undo history when that editor edits it. The editor
    saves a state only before its own edits: without this, one Undo after Propagate would take the reader's last
    stroke away with the result. The editor's panel is not built for it (its widget exists once it was opened)."""
    segmentEditorWidget = getattr(slicer.modules, "SegmentEditorWidget", None)  # Slicer sets it when it builds it
    editor = getattr(segmentEditorWidget, "editor", None)
    if editor is not None and segmentationNode is not None and editor.segmentationNodeID() == segmentationNode.GetID():
        editor.saveStateForUndo()


class GastricPropagateWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: inputs, options, Propagate/Cancel with progress, results and export."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.controller = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._timer = None

    def setup(self) -> None:
        from GastricPropagate import GastricPropagateLogic  # the module file, loaded by Slicer before its panel

        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/GastricPropagate.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        self._repropagateToolTip = self.ui.repropagateButton.toolTip  # the .ui's, shown unless the state says why not
        uiWidget.setMRMLScene(slicer.mrmlScene)

        # Inference runs in a child process started as a QProcess: the GUI stays responsive and Cancel ends it.
        self.logic = GastricPropagateLogic(launcher=QProcessLauncher())
        self.controller = RunController(self.logic, self, ensureDependencies=_askToInstall,
                                        dependenciesReady=dependencies.ready, segmentEditorNode=segmentEditorNode,
                                        saveUndoState=saveSegmentEditorUndoState)

        self.ui.confidenceTable.setColumnCount(2)
        self.ui.confidenceTable.setHorizontalHeaderLabels([_("Slice (K)"), _("Confidence")])
        self.ui.confidenceTable.horizontalHeader().setStretchLastSection(True)
        self.ui.confidenceTable.verticalHeader().setVisible(False)
        self.ui.manualSliceValueLabel.text = manualEstimateText(MANUAL_ONE_SLICE_SECONDS)
        self.ui.manualFullValueLabel.text = manualEstimateText(MANUAL_FULL_OUTLINE_SECONDS)
        self.ui.exportDicomSegButton.visible = self._dicomSegAvailable()
        self.hideProgress()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.segmentSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onSegmentationSelected)
        self.ui.segmentSelector.connect("currentSegmentChanged(QString)", self.onSegmentSelected)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.repropagateButton.connect("clicked(bool)", self.onRepropagateButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.jumpButton.connect("clicked(bool)", self.onJumpButton)
        self.ui.confidenceTable.connect("cellDoubleClicked(int,int)", self.onConfidenceRowDoubleClicked)
        self.ui.exportSegNrrdButton.connect("clicked(bool)", self.onExportSegNrrd)
        self.ui.exportNiftiButton.connect("clicked(bool)", self.onExportNifti)
        self.ui.exportCsvButton.connect("clicked(bool)", self.onExportCsv)
        self.ui.exportDicomSegButton.connect("clicked(bool)", self.onExportDicomSeg)

        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self.controller.poll)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Called when the application closes, and on Reload (the old panel is then hidden, not destroyed): ends a
        running process and lets go of the parameter node, so that the old panel's selectors write nothing into it."""
        if self._timer is not None:
            self._timer.stop()
        if self.controller is not None:
            self.controller.cleanup()
        self.setParameterNode(None)
        self.removeObservers()

    # ------------------------------------------------------------------ parameter node

    def enter(self) -> None:
        self.initializeParameterNode()
        self.controller.entered()  # the engine loads while the reader picks the inputs; the table is counted again

    def exit(self) -> None:
        self.controller.watchSegments(None)  # enter() follows the selection again
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        self.controller.sceneClosing()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()
            self.controller.warmUp()  # the worker ended with the closed scene: the next one loads now

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode and not firstVolumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        self.controller.parameters = inputParameterNode
        if self._parameterNode:
            # Widgets with a SlicerParameterName property in the .ui follow the parameter node both ways;
            # the segment selector has no connector and is synchronised in _onParameterNodeModified.
            self._parameterNodeGuiTag = self._parameterNode.connectParametersToGui(parameterWidgets(self.ui))
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        parameters = self._parameterNode
        self.controller.watchSegments(parameters.segmentationNode if parameters is not None else None)
        if parameters is not None:
            selector = self.ui.segmentSelector
            wasBlocked = selector.blockSignals(True)
            if selector.currentNode() != parameters.segmentationNode:
                selector.setCurrentNode(parameters.segmentationNode)
            if parameters.paintedSegmentId and selector.currentSegmentID() != parameters.paintedSegmentId:
                selector.setCurrentSegmentID(parameters.paintedSegmentId)
            selector.blockSignals(wasBlocked)
            adopted = adoptedSegmentId(parameters.segmentationNode, parameters.paintedSegmentId,
                                       selector.currentSegmentID())
            if adopted is not None:
                parameters.paintedSegmentId = adopted  # modifies the node again; the next pass changes nothing
                return
        self.controller.inputsChanged()

    def onSegmentationSelected(self, node) -> None:
        if self._parameterNode is not None:
            self._parameterNode.segmentationNode = node
            self._parameterNode.paintedSegmentId = self.ui.segmentSelector.currentSegmentID() or ""

    def onSegmentSelected(self, segmentId) -> None:
        # While another segmentation is being selected, the selector lists its segments before it says so: a segment
        # of that one is written with it (onSegmentationSelected), never beside the one still selected.
        parameters = self._parameterNode
        if parameters is not None and self.ui.segmentSelector.currentNode() == parameters.segmentationNode:
            parameters.paintedSegmentId = segmentId or ""

    # ------------------------------------------------------------------ run, cancel (the controller's)

    def onApplyButton(self) -> None:
        self.controller.run(fromCorrections=False)

    def onRepropagateButton(self) -> None:
        """Propagates again with the slices the reader corrected in the result as anchors."""
        self.controller.run(fromCorrections=True)

    def onCancelButton(self) -> None:
        self.controller.cancel()

    # ------------------------------------------------------------------ the view the controller drives

    def setStatus(self, text: str) -> None:
        self.ui.statusLabel.text = text

    def showRunTime(self, text: str) -> None:
        self.ui.thisRunValueLabel.text = text

    def showProgress(self, done: int, total: int) -> None:
        self.ui.progressBar.visible = True
        self.ui.progressBar.setRange(0, total)  # (0, 0): busy indicator
        if total > 0:
            self.ui.progressBar.setValue(done)
            self.ui.progressBar.format = _("%v / %m slices")

    def hideProgress(self) -> None:
        self.ui.progressBar.setRange(0, 1)
        self.ui.progressBar.setValue(0)
        self.ui.progressBar.visible = False

    def startPolling(self) -> None:
        self._timer.start()

    def stopPolling(self) -> None:
        self._timer.stop()

    @contextlib.contextmanager
    def waitCursor(self):
        qt.QApplication.setOverrideCursor(qt.Qt.WaitCursor)
        try:
            yield
        finally:
            qt.QApplication.restoreOverrideCursor()

    def confirm(self, text: str, title: str) -> bool:
        return slicer.util.confirmOkCancelDisplay(text, windowTitle=title)

    def showError(self, text: str) -> None:
        slicer.util.errorDisplay(text)

    def setButtons(self, state) -> None:
        ui = self.ui
        ui.applyButton.enabled = state.apply
        ui.applyButton.toolTip = state.applyToolTip
        ui.cancelButton.enabled = state.cancel
        ui.inputsCollapsibleButton.enabled = state.editInputs
        ui.optionsCollapsibleButton.enabled = state.editInputs
        ui.jumpButton.enabled = state.jump
        ui.repropagateButton.enabled = state.repropagate
        ui.repropagateButton.toolTip = state.repropagateToolTip or self._repropagateToolTip
        ui.exportSegNrrdButton.enabled = state.exportSegNrrd
        ui.exportNiftiButton.enabled = state.exportNifti
        ui.exportCsvButton.enabled = state.exportCsv
        ui.exportDicomSegButton.enabled = state.exportDicomSeg

    def showReview(self, rows, summary: str) -> None:
        self.ui.reviewSummaryLabel.text = summary
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
                    item.setToolTip(row.toolTip())
            table.setItem(index, 0, kItem)
            table.setItem(index, 1, valueItem)
        if rows:
            table.resizeColumnToContents(0)  # "28 (painted)" in full
        least = leastConfidentRow(rows)
        if least is not None:
            table.scrollToItem(table.item(least, 0), qt.QAbstractItemView.PositionAtCenter)

    def showResultsTable(self, tableNode) -> None:
        self.ui.resultsTableView.setMRMLTableNode(tableNode)

    # ------------------------------------------------------------------ navigation

    def jumpToSlice(self, k: int) -> None:
        """Centres every slice view on the volume's K slice ``k``."""
        x, y, z = self.controller.sliceCenterRAS(k)
        slicer.modules.markups.logic().JumpSlicesToLocation(x, y, z, True)

    def onJumpButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not move the slice views.")):
            k = self.controller.leastConfidentSlice()
            if k is not None:
                self.jumpToSlice(k)
                self.setStatus(_("Showing slice K = {k}, the least confident one.").format(k=k))

    def onConfidenceRowDoubleClicked(self, row, column) -> None:
        item = self.ui.confidenceTable.item(row, 0)
        if item is not None and self.controller.lastRun is not None:
            self.jumpToSlice(int(item.data(qt.Qt.UserRole)))

    # ------------------------------------------------------------------ export

    def _askSavePath(self, title: str, defaultName: str, fileFilter: str) -> str:
        directory = slicer.app.defaultScenePath if hasattr(slicer.app, "defaultScenePath") else ""
        from .export import replacesUnasked, withDefaultSuffix

        typed = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), title, os.path.join(directory, defaultName),
                                               fileFilter) or ""
        path = withDefaultSuffix(typed, defaultName)
        if replacesUnasked(typed, path) and not slicer.util.confirmYesNoDisplay(
                _("{path} already exists. Replace it?").format(path=path), windowTitle=title):
            return ""
        return path

    def onExportSegNrrd(self) -> None:
        from .export import exportSegmentation

        with slicer.util.tryWithErrorDisplay(_("Export failed.")):
            segmentationNode = self._parameterNode.segmentationNode
            path = self._askSavePath(_("Save segmentation"), segmentationNode.GetName() + ".seg.nrrd",
                                     _("Segmentation (*.seg.nrrd)"))
            if path:
                exportSegmentation(segmentationNode, path)
                self.setStatus(_("Saved {path}").format(path=path))

    def onExportNifti(self) -> None:
        from .export import exportLabelmap

        with slicer.util.tryWithErrorDisplay(_("Export failed.")):
            parameters = self._parameterNode
            resultId = self.controller.resultToExport()
            if resultId is None:
                return
            path = self._askSavePath(_("Save labelmap"), parameters.inputVolume.GetName() + "_tumour.nii.gz",
                                     _("NIfTI (*.nii.gz *.nii)"))
            if path:
                exportLabelmap(parameters.inputVolume, parameters.segmentationNode, [resultId], path)
                self.setStatus(_("Saved {path}").format(path=path))

    def onExportCsv(self) -> None:
        from .export import exportResultsCsv

        with slicer.util.tryWithErrorDisplay(_("Export failed.")):
            path = self._askSavePath(_("Save results table"), "GastricPropagate_results.csv", _("CSV (*.csv)"))
            if path:
                exportResultsCsv(self.controller.refreshResultsTable(), path)  # the segments as they are now
                self.setStatus(_("Saved {path}").format(path=path))

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
