"""The report's breakdowns: groups from case names, thickness bins, counts against copy-slice, confidence."""

import math
import warnings

import numpy as np

from gastric_propagate.evaluation.breakdown import (breakdown_markdown, case_group, confidence_markdown,
                                                    per_slice_dice, size_bin, thickness_bin)


def test_groups_are_the_names_without_their_numbers():
    assert case_group("ibsi_sts_004") == "ibsi_sts"
    assert case_group("lidc_0001_n1") == "lidc"
    assert case_group("shapes_12") == "shapes" and case_group("phantom_100000") == "phantom"
    assert case_group("patient") == "patient"


def test_thickness_bins():
    assert [thickness_bin(mm) for mm in (0.6, 1.0, 1.25, 3.0, 3.27, 5.0)] == [
        "thin (<= 1 mm)", "thin (<= 1 mm)", "1-3 mm", "1-3 mm", "thick (> 3 mm)", "thick (> 3 mm)"]
    assert thickness_bin(math.nan) == "unknown"


def test_size_bins_by_the_true_volume():
    assert [size_bin(ml) for ml in (0.04, 0.5, 4.99, 5.0, 49.9, 50.0, 900.0)] == [
        "< 0.5 mL", "0.5-5 mL", "0.5-5 mL", "5-50 mL", "5-50 mL", ">= 50 mL", ">= 50 mL"]
    assert size_bin(math.nan) == "unknown"


def _row(case, method, dice, volume_error=10.0, slice_mm=2.0, truth_ml=3.0):
    return {"case": case, "variant": "largest", "method": method, "dice": dice,
            "volume_error_percent": volume_error, "slice_mm": slice_mm, "truth_ml": truth_ml}


def test_the_thickness_and_size_tables_keep_their_bins_in_order_and_leave_empty_bins_out():
    rows = [_row("a_1", "engine", 0.9, slice_mm=5.0, truth_ml=120.0), _row("b_1", "engine", 0.7, slice_mm=0.7),
            _row("b_2", "engine", 0.8, slice_mm=0.7, truth_ml=0.2)]
    text = "\n".join(breakdown_markdown(rows, "largest", {"engine": "Engine"}))
    assert "| Method | thin (<= 1 mm) | thick (> 3 mm) |" in text  # smallest first, not alphabetical; no 1-3 mm
    size = text[text.index("### Dice by lesion size"):]
    assert "| Method | < 0.5 mL | 0.5-5 mL | >= 50 mL |" in size
    assert "| Engine | 0.800 (0.800), n=1 | 0.700 (0.700), n=1 | 0.900 (0.900), n=1 |" in size


def test_cases_below_copy_slice_are_counted_per_method():
    rows = [_row("a_1", "copy_slice", 0.70), _row("a_1", "engine", 0.60, -40.0),
            _row("b_1", "copy_slice", 0.70, slice_mm=5.0), _row("b_1", "engine", 0.68, 20.0, slice_mm=5.0)]
    text = "\n".join(breakdown_markdown(rows, "largest", {"engine": "Engine"}))
    assert "| Engine | 1 of 2 | 30.0 |" in text  # a_1 is 0.10 below; b_1 only 0.02
    assert "| a | b |" in text and "thick (> 3 mm)" in text


def test_per_slice_dice_and_how_confidence_tracks_it():
    truth = np.zeros((3, 4, 4), np.uint8)
    truth[:, 1:3, 1:3] = 1
    mask = truth.copy()
    mask[2] = 0
    assert per_slice_dice(mask, truth, [0, 1, 2]) == {0: 1.0, 1: 1.0, 2: 0.0}
    # The engine's flags: below the threshold, and the third slice cut back after a leak whatever its confidence.
    pairs = [{"case": "c", "confidence": c, "flagged": f, "dice": d}
             for c, f, d in ((0.9, 0, 0.9), (0.95, 1, 0.95), (0.3, 1, 0.2), (0.5, 0, 0.4))]
    text = "\n".join(confidence_markdown(pairs, review_threshold=0.4))
    assert "Pearson r = 1.00" in text or "Pearson r = 0.99" in text
    assert "flagged for review (confidence < 0.4, or cut back after a leak): 2 (50%), mean Dice 0.575" in text
    assert "the others: mean Dice 0.650" in text
    # Every slice right (one small case, say): no correlation to compute, and none printed as "nan".
    perfect = [{**pair, "dice": 1.0} for pair in pairs]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "invalid value encountered in divide" fails the test
        text = "\n".join(confidence_markdown(perfect, review_threshold=0.4))
    assert "no correlation (the confidence or the Dice is the same on every slice)" in text and "nan" not in text


def test_spearman_rho_gives_tied_slices_their_mean_rank_whatever_the_row_order():
    """Many slices tie (Dice 0 on missed ends, confidence 1 beside a painted slice): ranked by their position, rho
    was -0.14 in one order and 0.31 in the other on these six slices; with mean ranks it is 0.20 both ways."""
    pairs = [{"case": "c", "confidence": c, "flagged": 0, "dice": d}
             for c, d in ((0.9, 0.0), (0.9, 0.0), (0.9, 0.8), (0.5, 0.0), (0.5, 0.6), (0.2, 0.0))]
    forward = "\n".join(confidence_markdown(pairs, review_threshold=0.3))
    backward = "\n".join(confidence_markdown(pairs[::-1], review_threshold=0.3))
    assert "Spearman rho = 0.20" in forward and "Spearman rho = 0.20" in backward
