"""scripts/crossval_report.py: each case's variant and method, and its per-slice confidence, from the first run listed
that holds it."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from gastric_propagate.evaluation.reporting import write_confidence, write_csv

SCRIPT = Path(__file__).resolve().parents[4] / "scripts" / "crossval_report.py"


def _row(case, method, dice):
    return {"case": case, "variant": "largest", "method": method, "dice": dice, "hd95_mm": 2.0,
            "volume_error_percent": -5.0, "seconds": 0.1, "truth_ml": 1.5, "predicted_ml": 1.4,
            "painted_slice": 7, "slice_mm": 2.5, "source": f"{case}_image.nii.gz", "error": ""}


def _run_folder(folder: Path, rows: list[dict], confidence: list[dict]) -> None:
    folder.mkdir(parents=True)
    write_csv(rows, folder / "results.csv")
    if confidence:
        write_confidence(confidence, folder / "confidence.csv")


def _confidence(case, slices, value):
    return [{"case": case, "variant": "largest", "slice": k, "confidence": value, "flagged": False, "dice": 0.8}
            for k in slices]


def test_the_first_run_listed_gives_each_row_and_each_case_s_confidence_once(tmp_path):
    fold = tmp_path / "cv" / "fold0"
    # A newer run of the vote (engine) and the older run it replaces, which also holds the networks' row.
    _run_folder(fold / "eval-new", [_row("lidc_0001_n1", "engine", 0.90)], _confidence("lidc_0001_n1", [5, 6], 0.9))
    _run_folder(fold / "eval-old", [_row("lidc_0001_n1", "engine", 0.70), _row("lidc_0001_n1", "networks", 0.80)],
                _confidence("lidc_0001_n1", [4, 5, 6, 7], 0.1))
    out = tmp_path / "report"
    done = subprocess.run([sys.executable, str(SCRIPT), "--folds", str(tmp_path / "cv"), "--out", str(out),
                           "--runs", "eval-new", "eval-old"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with open(out / "results.csv", newline="", encoding="utf-8") as handle:
        rows = {row["method"]: float(row["dice"]) for row in csv.DictReader(handle)}
    assert rows == {"engine": 0.90, "networks": 0.80}
    with open(out / "confidence.csv", newline="", encoding="utf-8") as handle:
        confidence = [(int(row["slice"]), float(row["confidence"])) for row in csv.DictReader(handle)]
    assert confidence == [(5, 0.9), (6, 0.9)], "the old run's confidence of the same case is not added"
    assert "the first of the runs eval-new, eval-old that holds it" in (out / "summary.md").read_text(encoding="utf-8")


def test_a_case_s_confidence_comes_only_from_the_run_that_gives_its_dice(tmp_path):
    fold = tmp_path / "cv" / "fold0"
    # The newer run scored the vote but its confidence holds no slice of the case: the older run's slices are not
    # paired with the newer run's Dice.
    _run_folder(fold / "eval-new", [_row("lidc_0001_n1", "engine", 0.90)], _confidence("lidc_0002_n1", [3], 0.5))
    _run_folder(fold / "eval-old", [_row("lidc_0001_n1", "engine", 0.70)], _confidence("lidc_0001_n1", [4, 5], 0.1))
    out = tmp_path / "report"
    done = subprocess.run([sys.executable, str(SCRIPT), "--folds", str(tmp_path / "cv"), "--out", str(out),
                           "--runs", "eval-new", "eval-old"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not (out / "confidence.csv").exists() or "lidc_0001_n1" not in (out / "confidence.csv").read_text()
