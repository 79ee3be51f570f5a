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


def _held_out(fold: Path, *cases: str) -> None:
    """The fold's test folder as crossval_finetune.py links it: one image/label pair per held-out case."""
    (fold / "test").mkdir(parents=True, exist_ok=True)
    for case in cases:
        for part in ("image", "label"):
            (fold / "test" / f"{case}_{part}.nii.gz").touch()


def _report(tmp_path, *extra):
    return subprocess.run([sys.executable, str(SCRIPT), "--folds", str(tmp_path / "cv"), "--out",
                           str(tmp_path / "report"), *extra], capture_output=True, text=True)


def _confidence(case, slices, value):
    return [{"case": case, "variant": "largest", "slice": k, "confidence": value, "flagged": False, "dice": 0.8}
            for k in slices]


def test_the_first_run_listed_gives_each_row_and_each_case_s_confidence_once(tmp_path):
    fold = tmp_path / "cv" / "fold0"
    _held_out(fold, "lidc_0001_n1")
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
    _held_out(fold, "lidc_0001_n1")
    # The newer run scored the vote but its confidence holds no slice of the case: the older run's slices are not
    # paired with the newer run's Dice.
    _run_folder(fold / "eval-new", [_row("lidc_0001_n1", "engine", 0.90)], _confidence("lidc_0002_n1", [3], 0.5))
    _run_folder(fold / "eval-old", [_row("lidc_0001_n1", "engine", 0.70)], _confidence("lidc_0001_n1", [4, 5], 0.1))
    out = tmp_path / "report"
    done = subprocess.run([sys.executable, str(SCRIPT), "--folds", str(tmp_path / "cv"), "--out", str(out),
                           "--runs", "eval-new", "eval-old"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not (out / "confidence.csv").exists() or "lidc_0001_n1" not in (out / "confidence.csv").read_text()


def test_a_case_scored_by_a_fold_that_did_not_hold_it_out_is_refused(tmp_path):
    """Fold 0's networks learned fold 1's cases: their rows for them are no cross-validation, even listed first."""
    folds = tmp_path / "cv"
    _held_out(folds / "fold0", "lidc_0001_n1")
    _held_out(folds / "fold1", "lidc_0002_n1")
    both = [_row("lidc_0001_n1", "engine", 0.9), _row("lidc_0002_n1", "engine", 0.9)]
    _run_folder(folds / "fold0" / "eval-tuned", both, [])
    _run_folder(folds / "fold1" / "eval-tuned", [_row("lidc_0002_n1", "engine", 0.7)], [])
    done = _report(tmp_path, "--runs", "eval-tuned")
    assert done.returncode == 2 and "scores lidc_0002_n1 with engine, a case fold0 does not hold out" in done.stderr
    assert not (tmp_path / "report").exists()


def test_a_held_out_case_without_a_row_or_a_baseline_given_twice_is_refused(tmp_path):
    folds = tmp_path / "cv"
    _held_out(folds / "fold0", "lidc_0001_n1", "lidc_0003_n1")
    _run_folder(folds / "fold0" / "eval-tuned", [_row("lidc_0001_n1", "engine", 0.9)], [])
    done = _report(tmp_path, "--runs", "eval-tuned")
    assert done.returncode == 2 and "1 held-out case(s) have no vote (engine) row" in done.stderr, done.stderr
    assert "lidc_0003_n1" in done.stderr
    _run_folder(folds / "fold0" / "eval-more", [_row("lidc_0003_n1", "engine", 0.8)], [])
    baselines = tmp_path / "baselines.csv"
    write_csv([_row("lidc_0001_n1", "copy_slice", 0.6), _row("lidc_0003_n1", "copy_slice", 0.5)], baselines)
    assert _report(tmp_path, "--runs", "eval-tuned", "eval-more", "--baselines", str(baselines)).returncode == 0
    done = _report(tmp_path, "--runs", "eval-tuned", "eval-more", "--baselines", str(baselines), str(baselines))
    assert done.returncode == 2 and "in the baselines twice" in done.stderr


def test_fold_weights_that_learned_a_held_out_case_are_refused(tmp_path):
    """--reuse-weights or a recipe's own --init could leave a fold's networks trained on its own cases."""
    import torch

    from gastric_propagate.inference.checkpoints import INPUT_CHANNELS, save_checkpoint
    from gastric_propagate.inference.networks import UNet2D
    from gastric_propagate.inference.preprocessing import Preprocessing

    fold = tmp_path / "cv" / "fold0"
    _held_out(fold, "lidc_0001_n1")
    _run_folder(fold / "eval-tuned", [_row("lidc_0001_n1", "engine", 0.9)], [])
    for learned, code in ((["lidc_0009_n1"], 0), (["lidc_0001_n2"], 2)):  # n2: another lesion of the patient
        torch.manual_seed(0)
        for stage, channels in INPUT_CHANNELS.items():
            save_checkpoint(fold / "weights" / f"{stage}.pt", stage=stage,
                            network=UNet2D(in_channels=channels, base_channels=4, depth=2),
                            preprocessing=Preprocessing(), training={"case_names": learned})
        done = _report(tmp_path, "--runs", "eval-tuned")
        assert done.returncode == code, done.stderr
    assert "learned 1 case(s) the fold holds out (lidc_0001_n1" in done.stderr


def test_a_run_scored_with_weights_that_learned_its_cases_is_refused(tmp_path):
    """A fold's run evaluated without its fold's --proposer/--refiner (the bundled weights, which learned
    ../shared/real-ct): results.csv does not say so, evaluate's summary does."""
    fold = tmp_path / "cv" / "fold0"
    _held_out(fold, "lidc_0001_n1")
    _run_folder(fold / "eval-tuned", [_row("lidc_0001_n1", "engine", 0.9)], [])
    _run_folder(fold / "eval-variants", [_row("lidc_0001_n1", "networks", 0.8)], [])
    (fold / "eval-variants" / "summary.md").write_text(
        "# Evaluation\n\n**The weights were trained on 1 of these 1 cases** (by patient: lidc_0001_n1): ...\n")
    done = _report(tmp_path)  # the default runs: eval-tuned, eval-variants
    assert done.returncode == 2 and "eval-variants was not scored with" in done.stderr, done.stderr
    assert not (tmp_path / "report").exists()
    (fold / "eval-variants" / "summary.md").write_text("# Evaluation\n\n12 labelled case(s) ...\n")
    assert _report(tmp_path).returncode == 0
