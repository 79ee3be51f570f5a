"""Renders the module panel's real ``.ui`` offscreen into ``docs/module-panel.png`` (no Slicer needed).

The ``.ui`` is loaded as it is with PyQt5's ``uic``; the ctk / MRML classes it names (``ctkCollapsibleButton``,
``qMRMLNodeComboBox``, ``qMRMLSegmentSelectorWidget``, ``qMRMLTableView``, ``qMRMLWidget``) do not exist outside
Slicer and are replaced by small stand-ins of the same Qt base class, which draw themselves plainly (a collapsible
header, combo boxes, a table). The ``.ui``'s ``<connections>`` (MRML scene signals) are left out, as nothing in
them draws.

The values shown come from a real run: ``gastric-propagate demo`` (the built-in phantom with the bundled
weights) is run into a temporary folder, unless ``--demo-dir`` names the output of one, and its report and
annotation fill the panel the way the Widget does (the per-slice list from ``GastricPropagateLib.review``, the
results table from ``GastricPropagateLib.results_table``). Every section is shown expanded.

Usage (PyQt5 from the ``qt`` extra, which ``scripts/setup.sh`` installs)::

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/render_panel.py

It needs the ``slicer-core`` wheel as the tests do (``GastricPropagateLib`` imports MRML classes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import types
import xml.etree.ElementTree as ElementTree
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
UI_PATH = REPO / "GastricPropagate" / "Resources" / "UI" / "GastricPropagate.ui"
OUTPUT = REPO / "docs" / "module-panel.png"
PANEL_WIDTH = 430
PANEL_HEIGHT = 1300  # about a module panel's height on a 1440-pixel-high screen


def _standIns():
    """Stand-in classes for the ctk/MRML widgets, as modules named after their headers (what uic imports)."""
    from PyQt5 import QtCore, QtGui, QtWidgets

    class _AcceptsSlicerProperties:
        """Ignores the ctk/MRML-only properties the .ui sets (nodeTypes, noneEnabled, addEnabled, ...)."""

        def __getattr__(self, name):
            if name.startswith("set"):
                return lambda *args: None
            raise AttributeError(name)

    class qMRMLWidget(_AcceptsSlicerProperties, QtWidgets.QWidget):
        pass

    class ctkCollapsibleButton(_AcceptsSlicerProperties, QtWidgets.QWidget):
        """A header bar with an arrow and the title above the content, as ctk draws it."""

        HEADER = 26

        def __init__(self, parent=None):
            super().__init__(parent)
            self._text = ""
            self._collapsed = False
            self.setContentsMargins(0, self.HEADER, 0, 0)

        def setText(self, text):
            self._text = text

        def text(self):
            return self._text

        def setCollapsed(self, collapsed):
            self._collapsed = bool(collapsed)
            for child in self.findChildren(QtWidgets.QWidget, options=QtCore.Qt.FindDirectChildrenOnly):
                child.setVisible(not self._collapsed)
            self.setMaximumHeight(self.HEADER if self._collapsed else 16777215)

        def paintEvent(self, event):
            painter = QtWidgets.QStylePainter(self)
            option = QtWidgets.QStyleOptionButton()
            option.initFrom(self)
            option.rect = QtCore.QRect(0, 0, self.width(), self.HEADER - 2)
            painter.drawControl(QtWidgets.QStyle.CE_PushButtonBevel, option)
            arrow = QtWidgets.QStyleOption()
            arrow.initFrom(self)
            arrow.rect = QtCore.QRect(6, 6, 12, 12)
            painter.drawPrimitive(QtWidgets.QStyle.PE_IndicatorArrowRight if self._collapsed
                                  else QtWidgets.QStyle.PE_IndicatorArrowDown, arrow)
            painter.drawText(QtCore.QRect(24, 0, self.width() - 24, self.HEADER - 2),
                             int(QtCore.Qt.AlignVCenter | QtCore.Qt.AlignLeft), self._text)
            if not self._collapsed:
                painter.setPen(self.palette().color(QtGui.QPalette.Mid))
                painter.drawRect(0, self.HEADER - 2, self.width() - 1, self.height() - self.HEADER + 1)

    class qMRMLNodeComboBox(_AcceptsSlicerProperties, QtWidgets.QComboBox):
        pass

    class qMRMLSegmentSelectorWidget(qMRMLWidget):
        """The segmentation combo box above the segment combo box, as the real selector shows them."""

        def __init__(self, parent=None):
            super().__init__(parent)
            layout = QtWidgets.QFormLayout(self)
            layout.setContentsMargins(0, 0, 0, 0)
            self.segmentationComboBox = QtWidgets.QComboBox()
            self.segmentComboBox = QtWidgets.QComboBox()
            layout.addRow("Segmentation:", self.segmentationComboBox)
            layout.addRow("Segment:", self.segmentComboBox)

    class qMRMLTableView(_AcceptsSlicerProperties, QtWidgets.QTableView):
        pass

    classes = (qMRMLWidget, ctkCollapsibleButton, qMRMLNodeComboBox, qMRMLSegmentSelectorWidget, qMRMLTableView)
    for cls in classes:
        module = types.ModuleType(cls.__name__)
        setattr(module, cls.__name__, cls)
        sys.modules[cls.__name__] = module  # uic imports the module named after the header, e.g. "qMRMLTableView"
    return {cls.__name__: cls for cls in classes}


def _uiWithoutConnections(path: Path) -> str:
    tree = ElementTree.parse(path)
    root = tree.getroot()
    for connections in root.findall("connections"):
        root.remove(connections)
    return ElementTree.tostring(root, encoding="unicode")


def _demo(folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "gastric_propagate.cli", "demo", "--out", str(folder), "--device", "cpu"],
                   check=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                       [str(REPO / "GastricPropagate"), os.environ.get("PYTHONPATH", "")])})
    return folder


def _fill(ui, classes, demoDir: Path) -> int | None:
    """The panel after one Propagate on the demo phantom, filled as the Widget does it (GastricPropagateLib/widget.py,
    with the status line from its controller)."""
    import SimpleITK as sitk
    from PyQt5 import QtGui, QtWidgets

    from GastricPropagateLib.controller import resultStatus
    from gastric_propagate.protocol import MANUAL_FULL_OUTLINE_SECONDS, MANUAL_ONE_SLICE_SECONDS
    from GastricPropagateLib.results_table import COLUMN_NAMES, formatDuration, manualEstimateText, segmentStatistics
    from GastricPropagateLib.review import leastConfidentRow, reviewRows, reviewSummary
    from GastricPropagateLib.result_segment import resultSegmentName
    from GastricPropagateLib.run_output import runResultFromReport

    report = json.loads((demoDir / "report.json").read_text(encoding="utf-8"))
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(demoDir / "result.nrrd")))
    annotationImage = sitk.ReadImage(str(demoDir / "annotation.nrrd"))
    result = runResultFromReport(report, mask)
    spacing = annotationImage.GetSpacing()

    for collapsible in ui.findChildren(classes["ctkCollapsibleButton"]):
        collapsible.setCollapsed(False)
    ui.inputVolumeSelector.addItem("ct (demo phantom)")
    ui.segmentSelector.segmentationComboBox.addItem("Segmentation")
    ui.segmentSelector.segmentComboBox.addItem("Tumour (painted)")
    ui.minSliceSpinBox.setRange(-1, 100000)  # the parameter node's range: -1 shows "no limit"
    ui.minSliceSpinBox.setValue(-1)
    ui.maxSliceSpinBox.setRange(-1, 100000)
    ui.maxSliceSpinBox.setValue(-1)
    ui.maxDistanceSpinBox.setRange(0.0, 1000.0)
    ui.maxDistanceSpinBox.setValue(0.0)
    ui.deviceComboBox.addItems(["auto", "cpu", "cuda"])
    for checkBox in (ui.useRefinerCheckBox, ui.useConsensusCheckBox, ui.useEditorMaskingCheckBox,
                     ui.paintedIsLargestCheckBox):  # the parameter node's defaults
        checkBox.setChecked(True)
    ui.applyButton.setEnabled(True)
    ui.progressBar.setVisible(False)
    ui.statusLabel.setText(resultStatus(result))
    ui.thisRunValueLabel.setText(f"{formatDuration(result.seconds)} on {result.device}")
    ui.manualSliceValueLabel.setText(manualEstimateText(MANUAL_ONE_SLICE_SECONDS))
    ui.manualFullValueLabel.setText(manualEstimateText(MANUAL_FULL_OUTLINE_SECONDS))

    rows = reviewRows(result)
    table = ui.confidenceTable
    table.setColumnCount(2)
    table.setHorizontalHeaderLabels(["Slice (K)", "Confidence"])
    table.horizontalHeader().setStretchLastSection(True)
    table.verticalHeader().setVisible(False)
    table.setRowCount(len(rows))
    for index, row in enumerate(rows):
        for column, text in enumerate((row.label(), f"{row.confidence:.2f}")):
            item = QtWidgets.QTableWidgetItem(text)
            if row.colour() is not None:
                item.setBackground(QtGui.QColor(*row.colour()))
            table.setItem(index, column, item)
    table.resizeColumnToContents(0)
    ui.reviewSummaryLabel.setText(reviewSummary(rows))
    ui.jumpButton.setEnabled(True)
    ui.repropagateButton.setEnabled(True)

    painted = segmentStatistics(sitk.GetArrayFromImage(annotationImage), spacing)
    propagated = segmentStatistics(mask, spacing)
    model = QtGui.QStandardItemModel(0, len(COLUMN_NAMES))
    model.setHorizontalHeaderLabels(list(COLUMN_NAMES))
    for name, segmentId, role, stats, isResult in (("Tumour (painted)", "Segment_1", "painted", painted, False),
                                                   (resultSegmentName(), "Segment_2", "propagated", propagated, True)):
        values = (name, segmentId, role, stats.voxels, f"{stats.volumeMl:.3f}", stats.firstSlice, stats.lastSlice,
                  f"{result.seconds:.1f}" if isResult else "", result.device if isResult else "")
        model.appendRow([QtGui.QStandardItem(str(value)) for value in values])
    ui.resultsTableView.setModel(model)
    ui.resultsTableView.verticalHeader().setVisible(False)
    ui.resultsTableView.resizeColumnsToContents()
    for button in (ui.exportSegNrrdButton, ui.exportNiftiButton, ui.exportCsvButton, ui.exportDicomSegButton):
        button.setEnabled(True)
    return leastConfidentRow(rows)


def _overlappingWidgets(panel) -> list[tuple[str, str]]:
    """Pairs of visible widgets of one layout whose rectangles intersect (a panel squeezed below its size)."""
    from PyQt5 import QtWidgets

    pairs = []
    for layout in panel.findChildren(QtWidgets.QLayout):
        widgets = [layout.itemAt(i).widget() for i in range(layout.count())]
        widgets = [w for w in widgets if w is not None and w.isVisible()]
        for i, first in enumerate(widgets):
            pairs += [(first.objectName(), second.objectName()) for second in widgets[i + 1:]
                      if first.geometry().intersects(second.geometry())]
    return pairs


def render(output: Path, demoDir: Path | None) -> Path:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PyQt5 import QtWidgets, uic

    application = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["render_panel"])
    application.setStyle("Fusion")
    classes = _standIns()
    with tempfile.TemporaryDirectory(prefix="render-panel-") as temporary:
        uiFile = Path(temporary) / UI_PATH.name
        uiFile.write_text(_uiWithoutConnections(UI_PATH), encoding="utf-8")
        panel = uic.loadUi(str(uiFile))
        least = _fill(panel, classes, demoDir or _demo(Path(temporary) / "demo"))
    # The size hint, not the minimum: the minimum leaves out the wrapped review line's height, which then overlaps
    # the table above it (Slicer's panel scrolls instead of squeezing).
    panel.resize(PANEL_WIDTH, max(PANEL_HEIGHT, panel.sizeHint().height()))
    panel.show()
    application.processEvents()
    if least is not None:  # as the Widget does after a run; once shown, when the list knows its height
        table = panel.confidenceTable
        table.scrollToItem(table.item(least, 0), QtWidgets.QAbstractItemView.PositionAtCenter)
        application.processEvents()
    overlapping = _overlappingWidgets(panel)
    if overlapping:
        raise RuntimeError("widgets drawn over each other: " + ", ".join(f"{a} and {b}" for a, b in overlapping))
    output.parent.mkdir(parents=True, exist_ok=True)
    if not panel.grab().save(str(output)):
        raise RuntimeError(f"could not write {output}")
    return output


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUTPUT, help=f"PNG to write (default: {OUTPUT})")
    parser.add_argument("--demo-dir", type=Path, help="output of 'gastric-propagate demo' (default: run it now)")
    arguments = parser.parse_args(argv)
    print(render(arguments.out, arguments.demo_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
