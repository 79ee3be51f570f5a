"""scripts/rerender_report.py: a report's summary written again from its own per-case files, its header kept."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gastric_propagate.evaluation.reporting import summary_markdown, write_confidence, write_csv

SCRIPT = Path(__file__).resolve().parents[4] / "scripts" / "rerender_report.py"


def _row(case, method, dice, truth_ml):
    return {"case": case, "variant": "largest", "method": method, "dice": dice, "hd95_mm": 2.0,
            "volume_error_percent": -5.0, "seconds": 0.1, "truth_ml": truth_ml, "predicted_ml": truth_ml * 0.95,
            "painted_slice": 7, "slice_mm": 2.5, "source": f"{case}_image.nii.gz", "error": ""}


def _report(folder: Path, meta: dict) -> None:
    rows = [_row("lidc_0001_n1", "engine", 0.84, 1.5), _row("ibsi_sts_001", "engine", 0.78, 120.0)]
    folder.mkdir()
    write_csv(rows, folder / "results.csv")
    confidence = [{"case": "lidc_0001_n1", "variant": "largest", "slice": 6, "confidence": 0.9, "flagged": False,
                   "dice": 0.85},
                  {"case": "lidc_0001_n1", "variant": "largest", "slice": 8, "confidence": 0.2, "flagged": True,
                   "dice": 0.3},
                  {"case": "ibsi_sts_001", "variant": "largest", "slice": 12, "confidence": 0.6, "flagged": False,
                   "dice": 0.7}]
    write_confidence(confidence, folder / "confidence.csv")
    # An older layout: the summary as the report's command wrote it, before the size table existed.
    text = summary_markdown(rows, {**meta, "confidence": confidence})
    (folder / "summary.md").write_text(text[:text.index("### Dice by lesion size")], encoding="utf-8")


def _run(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(folder)], capture_output=True, text=True)


def test_the_summary_is_written_again_from_its_rows_with_its_data_command_and_notes_kept(tmp_path):
    folder = tmp_path / "report"
    _report(folder, {"data": "two cases, by CV (runs/cv)", "command": "python scripts/crossval_report.py --folds x",
                     "notes": ["a note the command wrote"]})

    done = _run(folder)

    assert done.returncode == 0, done.stderr
    summary = (folder / "summary.md").read_text(encoding="utf-8")
    assert "- **Data:** two cases, by CV (runs/cv)" in summary
    assert "- **Command:** `python scripts/crossval_report.py --folds x`" in summary
    assert "- a note the command wrote" in summary
    assert "Written again on " in summary and "no case was run again" in summary
    assert "| Method | 0.5-5 mL | >= 50 mL |" in summary  # the new layout, from results.csv
    assert "| Engine | 0.840 (0.840), n=1 | 0.780 (0.780), n=1 |".replace("Engine", _engine_title()) in summary
    assert "Pearson r" in summary, "the confidence section, from confidence.csv"

    _run(folder)  # again: one rewrite note, not two
    assert (folder / "summary.md").read_text(encoding="utf-8").count("Written again on ") == 1


def test_a_summary_that_counted_the_engine_s_advice_is_refused_and_left_as_it_was(tmp_path):
    folder = tmp_path / "report"
    _report(folder, {"data": "d", "command": "c"})
    before = (folder / "summary.md").read_text(encoding="utf-8") + (
        "\nThe engine's result came with advice to the reader (...) in 1 of 2 runs.\n")
    (folder / "summary.md").write_text(before, encoding="utf-8")

    done = _run(folder)

    assert done.returncode == 1 and "run its command again" in done.stderr
    assert (folder / "summary.md").read_text(encoding="utf-8") == before


def _engine_title() -> str:
    from gastric_propagate.evaluation.running import ENGINE_TITLES

    return ENGINE_TITLES["engine"]
