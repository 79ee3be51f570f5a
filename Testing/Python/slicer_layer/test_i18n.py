"""What the panel shows can be translated: every translated text is a literal lupdate can extract, and the texts of
the results table, of a killed process and of a mask on the wrong grid go through the translator (a stand-in that
marks what it translates)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from scene_helpers import slicer  # noqa: F401  (skips without slicer-core; puts GastricPropagate/ on sys.path)
from GastricPropagateLib import results_table, run_output, runner

pytestmark = pytest.mark.slicer

MODULE = Path(__file__).resolve().parents[3] / "GastricPropagate"


def marked(text: str) -> str:
    """A translator that shows what went through it."""
    return f"<<{text}>>"


def test_every_translated_text_is_a_literal_lupdate_can_extract():
    """``_(text)`` (Slicer's ``tr``) and ``translate(context, text)`` with a variable or an f-string are never
    extracted for the translators, so they are never translated."""
    offending = []
    for path in [MODULE / "GastricPropagate.py", *sorted((MODULE / "GastricPropagateLib").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
                continue
            position = {"_": 0, "tr": 0, "translate": 1}.get(node.func.id)
            if position is None:
                continue
            arguments = node.args[position:position + 1]
            if not (arguments and isinstance(arguments[0], ast.Constant) and isinstance(arguments[0].value, str)):
                offending.append(f"{path.name}:{node.lineno}: {ast.unparse(node)[:80]}")
    assert not offending, "translated texts that lupdate cannot extract:\n" + "\n".join(offending)


def test_results_table_shows_translated_titles_and_descriptions_under_fixed_column_names(monkeypatch, tmp_path):
    monkeypatch.setattr(results_table, "_", marked)
    scene = slicer.vtkMRMLScene()
    tableNode = scene.AddNewNodeByClass("vtkMRMLTableNode")
    stats = results_table.SegmentStatistics(voxels=12, volumeMl=0.5, firstSlice=3, lastSlice=7)
    results_table.fillResultsTable(tableNode, [("Tumour (propagated)", "result", "propagated", stats)],
                                   resultId="result", seconds=4.5, device="cpu")

    table = tableNode.GetTable()
    assert tuple(table.GetColumnName(c) for c in range(table.GetNumberOfColumns())) == results_table.COLUMN_NAMES
    assert tableNode.GetColumnTitle("Volume [mL]") == "<<Volume [mL]>>"
    assert tableNode.GetColumnDescription("Volume [mL]") == "<<Segment volume>>"
    assert tableNode.GetColumnUnitLabel("Volume [mL]") == "mL"
    for name in results_table.COLUMN_NAMES:
        assert tableNode.GetColumnTitle(name).startswith("<<") and tableNode.GetColumnDescription(name).startswith("<<")
    # The CSV keeps the column names: what scripts read does not change with Slicer's language.
    results_table.writeTableCsv(tableNode, tmp_path / "results.csv")
    header = (tmp_path / "results.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header == ",".join(results_table.COLUMN_NAMES)


class _KilledProcess:
    """A child killed from outside: it has ended without an exit code."""

    def running(self):
        return False

    def exitCode(self):
        return None


def test_a_killed_process_is_said_in_the_translated_failure_message(monkeypatch, tmp_path):
    from gastric_propagate.data.mask_boxes import Grid

    monkeypatch.setattr(runner, "_", marked)
    paths = {name: tmp_path / name for name in ("output.nrrd", "report.json", "stdout.txt", "stderr.txt")}
    paths["stderr.txt"].write_text("Killed\n")
    job = runner.InferenceJob(_KilledProcess(), tmp_path, paths, Grid(size=(4, 4, 3), spacing=(1.0, 1.0, 1.0)))
    assert job.poll()
    with pytest.raises(RuntimeError) as info:
        job.result()
    assert "(exit code <<none: it was killed>>)" in str(info.value)


def test_a_mask_on_another_grid_is_said_in_a_translated_message(monkeypatch, tmp_path):
    import SimpleITK as sitk

    from gastric_propagate.data.mask_boxes import Grid

    monkeypatch.setattr(run_output, "_", marked, raising=False)  # raising=False: the unfixed module had no _
    maskPath, reportPath = tmp_path / "output.nrrd", tmp_path / "report.json"
    image = sitk.GetImageFromArray(np.zeros((3, 4, 4), np.uint8))
    image.SetSpacing((2.0, 2.0, 2.0))  # the volume's grid has 1 mm voxels
    sitk.WriteImage(image, str(maskPath))
    reportPath.write_text(json.dumps({"slice_confidence": {}, "painted_slices": [1], "stop_reasons": {},
                                      "seconds": 1.0, "device": "cpu"}))
    with pytest.raises(RuntimeError) as info:
        run_output.readRunResult(reportPath, maskPath, Grid(size=(4, 4, 3), spacing=(1.0, 1.0, 1.0)))
    message = str(info.value)
    assert message.startswith("<<The engine's mask ") and str(maskPath) in message and "spacing" in message
