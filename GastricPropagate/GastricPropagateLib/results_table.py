"""The "GastricPropagate results" table: one row per segment (voxels, volume, K range) plus the last run's timing."""

from __future__ import annotations

import csv
from dataclasses import dataclass

import numpy as np
import vtk

from gastric_propagate.data.annotation import occupied_box, painted_slices
from gastric_propagate.metrics import volume_ml

from .i18n import _

RESULTS_TABLE_NAME = "GastricPropagate results"


def manualEstimateText(seconds: float) -> str:
    """The panel's manual-annotation estimates: 'about 40 s', 'about 7 min'."""
    return _("about {duration}").format(duration=formatDuration(seconds, digits=0))


def formatDuration(seconds: float, digits: int = 1) -> str:
    """'12.3 s' or '7.0 min' (minutes above 90 s); ``digits`` after the point: 0 for the manual estimates, '40 s'."""
    if seconds >= 90:
        return _("{minutes:.{digits}f} min").format(minutes=seconds / 60.0, digits=digits)
    return _("{seconds:.{digits}f} s").format(seconds=seconds, digits=digits)

# (column name, vtk array class, unit label). The names are the table's keys, read by the CSV export and by scripts:
# never translated; the panel shows each column's translated title (``columnTexts``).
_COLUMNS = (
    ("Segment", vtk.vtkStringArray, ""),
    ("Segment ID", vtk.vtkStringArray, ""),
    ("Role", vtk.vtkStringArray, ""),
    ("Voxels", vtk.vtkIntArray, ""),
    ("Volume [mL]", vtk.vtkDoubleArray, "mL"),
    ("First slice (K)", vtk.vtkIntArray, ""),
    ("Last slice (K)", vtk.vtkIntArray, ""),
    ("Run time [s]", vtk.vtkStringArray, "s"),
    ("Device", vtk.vtkStringArray, ""),
)
COLUMN_NAMES = tuple(column[0] for column in _COLUMNS)


def columnTexts() -> dict[str, tuple[str, str]]:
    """{column name: (title, description)} as the panel shows them, translated: literal strings, so that lupdate
    extracts them, translated when called, in the language Slicer runs in."""
    return {
        "Segment": (_("Segment"), _("Segment name")),
        "Segment ID": (_("Segment ID"), _("Segment ID in the segmentation")),
        "Role": (_("Role"), _("painted (input), propagated (result) or other")),
        "Voxels": (_("Voxels"), _("Number of voxels on the CT volume's grid")),
        "Volume [mL]": (_("Volume [mL]"), _("Segment volume")),
        "First slice (K)": (_("First slice (K)"), _("Lowest K index holding the segment (-1 if empty)")),
        "Last slice (K)": (_("Last slice (K)"), _("Highest K index holding the segment (-1 if empty)")),
        "Run time [s]": (_("Run time [s]"), _("Wall time of the last propagation (result row only)")),
        "Device": (_("Device"), _("Device (and the networks' precision) of the last propagation (result row only)")),
    }


@dataclass(frozen=True)
class SegmentStatistics:
    """Size and K range of one segment on the volume's grid."""

    voxels: int
    volumeMl: float
    firstSlice: int
    lastSlice: int


def segmentStatistics(array: np.ndarray, spacingXYZ: tuple[float, float, float]) -> SegmentStatistics:
    """Statistics of a (k, j, i) mask with voxel spacing ``spacingXYZ`` in mm (its voxels above 0), read in the box
    that holds its voxels: a whole CT's grid is read once, not once per figure."""
    array = np.asarray(array)
    box = occupied_box(array)
    mask = array[box] > 0
    slices = [box[0].start + k for k in painted_slices(mask)]
    first, last = (slices[0], slices[-1]) if slices else (-1, -1)
    return SegmentStatistics(voxels=int(np.count_nonzero(mask)), volumeMl=volume_ml(mask, spacingXYZ),
                             firstSlice=first, lastSlice=last)


def fillResultsTable(tableNode, rows, *, resultId: str, seconds: float | None, device: str,
                     volumeName: str = "") -> None:
    """Replaces the table's content with ``rows`` = [(name, segmentId, role, SegmentStatistics), ...]; ``seconds``
    None: no run time on the result's row (not known). A table that already says exactly this is left untouched, so
    that opening the module does not mark a saved scene as modified."""
    table = vtk.vtkTable()
    arrays = []
    for name, arrayClass, _unit in _COLUMNS:
        array = arrayClass()
        array.SetName(name)
        arrays.append(array)
        table.AddColumn(array)
    for name, segmentId, role, stats in rows:
        isResult = segmentId == resultId
        values = (name, segmentId, role, stats.voxels, stats.volumeMl, stats.firstSlice, stats.lastSlice,
                  f"{seconds:.1f}" if isResult and seconds is not None else "", device if isResult else "")
        for array, value in zip(arrays, values):
            array.InsertNextValue(value)
    current = tableNode.GetTable()
    if (current is not None and _cellTexts(current) == _cellTexts(table)
            and (not volumeName or tableNode.GetAttribute("GastricPropagate.VolumeName") == volumeName)):
        return
    wasModifying = tableNode.StartModify()
    tableNode.SetAndObserveTable(table)
    texts = columnTexts()
    for name, _arrayClass, unit in _COLUMNS:
        if unit:
            tableNode.SetColumnUnitLabel(name, unit)
        title, description = texts[name]
        tableNode.SetColumnTitle(name, title)
        tableNode.SetColumnDescription(name, description)
    tableNode.SetUseColumnTitleAsColumnHeader(True)
    if volumeName:
        tableNode.SetAttribute("GastricPropagate.VolumeName", volumeName)
    tableNode.EndModify(wasModifying)


def _cellTexts(table) -> list[list[str]]:
    """A vtkTable's column names, then each row's cells, as text."""
    columns = range(table.GetNumberOfColumns())
    return [[table.GetColumnName(c) for c in columns]] + [
        [table.GetValue(r, c).ToString() for c in columns] for r in range(table.GetNumberOfRows())]


def tableRows(tableNode) -> list[dict[str, str]]:
    """The table as a list of {column name: cell text} (what the GUI shows and the CSV holds)."""
    table = tableNode.GetTable()
    names = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    return [{names[c]: tableNode.GetCellText(r, c) for c in range(len(names))} for r in range(table.GetNumberOfRows())]


def writeTableCsv(tableNode, path) -> None:
    """Writes the table to ``path`` as CSV (header row, then one row per segment)."""
    rows = tableRows(tableNode)
    table = tableNode.GetTable()
    names = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=names)
        writer.writeheader()
        writer.writerows(rows)
