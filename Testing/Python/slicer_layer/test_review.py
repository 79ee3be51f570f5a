"""GastricPropagateLib.review: the rows of the panel's per-slice confidence list, and what is flagged."""

from __future__ import annotations

import numpy as np
import pytest

import scene_helpers  # noqa: F401  (skips without slicer-core; puts GastricPropagate/ on sys.path)
from GastricPropagateLib.review import adviceSentences, leastConfidentRow, reviewRows, reviewSummary
from GastricPropagateLib.run_output import RunResult
from gastric_propagate.protocol import Report

pytestmark = pytest.mark.slicer


def _result(confidence, anchors, toReview, advice=()):
    return RunResult(mask=np.zeros((12, 4, 4), np.uint8), report=Report(
        slice_confidence=confidence, painted_slices=anchors, stop_reasons={}, seconds=1.0, device="cpu",
        slices_to_review=toReview, advice=list(advice)))


def test_rows_in_slice_order_flag_the_engines_slices_to_review_and_the_least_confident():
    # Slice 8 was cut back after a leak: flagged by the engine although its confidence is 0.52.
    result = _result({3: 0.31, 4: 0.62, 5: 1.0, 6: 0.9, 7: 0.45, 8: 0.52}, anchors=[5], toReview=[3, 7, 8])
    rows = reviewRows(result)
    assert [row.k for row in rows] == [3, 4, 5, 6, 7, 8]
    assert [row.k for row in rows if row.toReview] == [3, 7, 8]
    assert [row.k for row in rows if row.leastConfident] == [3]
    assert [row.label() for row in rows][2] == "5 (painted)"
    assert rows[2].role == "painted" and rows[0].role == "propagated"
    assert reviewSummary(rows) == "3 slice(s) to review: K = 3, 7, 8."


def test_corrected_anchors_are_labelled_and_never_flagged():
    result = _result({2: 0.2, 5: 1.0, 8: 1.0, 9: 0.7}, anchors=[5, 8], toReview=[2, 8])
    rows = {row.k: row for row in reviewRows(result, correctedSlices=[8])}
    assert rows[8].role == "corrected" and rows[8].label() == "8 (corrected)" and not rows[8].toReview
    assert rows[5].role == "painted"
    assert rows[2].toReview and rows[2].leastConfident


def test_the_panel_scrolls_to_the_least_confident_slices_row():
    # A long list: the least confident slice (14) is far below the rows the panel shows first.
    confidence = {k: 0.9 for k in range(2, 16)} | {14: 0.05, 3: 0.3}
    rows = reviewRows(_result(confidence, anchors=[8], toReview=[3, 14]))
    assert rows[leastConfidentRow(rows)].k == 14
    assert leastConfidentRow(reviewRows(_result({4: 1.0}, anchors=[4], toReview=[]))) is None


def test_summary_without_flagged_slices():
    from gastric_propagate.inference.result import REVIEW_CONFIDENCE

    rows = reviewRows(_result({4: 0.8, 5: 1.0}, anchors=[5], toReview=[]))
    assert reviewSummary(rows).startswith("No slice flagged for review")
    assert f"confidence {REVIEW_CONFIDENCE:g} or more" in reviewSummary(rows)  # the engine's threshold, not another


def test_row_colours_mark_the_least_confident_and_the_flagged_slices():
    from GastricPropagateLib.review import LEAST_CONFIDENT_COLOUR, REVIEW_COLOUR

    rows = {row.k: row for row in reviewRows(_result({3: 0.2, 4: 0.4, 5: 1.0, 6: 0.9}, anchors=[5], toReview=[3, 4]))}
    assert rows[3].colour() == LEAST_CONFIDENT_COLOUR
    assert rows[4].colour() == REVIEW_COLOUR
    assert rows[5].colour() is None and rows[6].colour() is None


def test_advice_is_worded_for_the_panel_from_its_figures():
    """The engine's sentence names its command-line option; the panel's names its own check box, from the figures."""
    from gastric_propagate.inference.advice import larger_neighbour_advice

    engine = larger_neighbour_advice(12, 15, 1.43).to_dict()
    assert "--painted-not-largest" in engine["sentence"]
    [sentence] = adviceSentences([engine])
    assert sentence.startswith("Slice 15 looks 1.4 times as large as the painted slice 12:")
    assert "untick 'is the largest cross-section' and click Propagate again" in sentence and "--painted" not in sentence
    from gastric_propagate.inference.advice import cut_at_reach_advice

    cut = cut_at_reach_advice(37, "up", 30, 0.52, 0.75).to_dict()
    assert "--keyframes" in cut["sentence"]
    [sentence] = adviceSentences([cut])
    assert sentence.startswith("The result stops at slice 37, as far as it may reach (0.75 painted diameters from "
                               "the painted slice 30), and still covers 52% of the painted cross-section there")
    assert "'Re-propagate from corrected slices'" in sentence and "--keyframes" not in sentence
    assert "Check the slices beyond slice 37 (K > 37)" in sentence
    # Slices thicker than the reach: both ends on the painted slice, told apart by their side.
    down, up = adviceSentences([cut_at_reach_advice(30, direction, 30, 1.0, 0.75).to_dict()
                                for direction in ("down", "up")])
    assert "beyond slice 30 (K < 30)" in down and "beyond slice 30 (K > 30)" in up
    followed = cut_at_reach_advice(37, "up", 30, 0.04, 0.75, registration_share=0.81).to_dict()
    [sentence] = adviceSentences([followed])
    assert sentence.startswith("The result stops at slice 37, as far as it may reach (0.75 painted diameters from "
                               "the painted slice 30), where the registration still follows a cross-section of 81% "
                               "of the painted one (the result covers 4%): the tumour may go on beyond it.")
    assert "'Re-propagate from corrected slices'" in sentence
    from gastric_propagate.inference.advice import ended_while_followed_advice

    ended = ended_while_followed_advice(22, "down", 30, 0.66).to_dict()
    [sentence] = adviceSentences([ended])
    assert sentence.startswith("The result ends at slice 22, but the registration still follows a cross-section of "
                               "66% of the painted one there: the tumour may go on beyond it.")
    assert "'Re-propagate from corrected slices'" in sentence and "--keyframes" not in sentence
    assert "Check the slices beyond slice 22 (K < 22)" in sentence and "(K < 22)" in ended["sentence"]
    rows = {row.k: row for row in reviewRows(_result({22: 0.8, 30: 1.0}, anchors=[30], toReview=[], advice=[ended]))}
    assert rows[22].toReview and "registration still follows the tumour" in rows[22].toolTip()
    both = [ended, larger_neighbour_advice(30, 22, 1.3).to_dict()]  # two reasons for one slice: both in its tooltip
    [row] = [r for r in reviewRows(_result({22: 0.8, 30: 1.0}, anchors=[30], toReview=[], advice=both)) if r.k == 22]
    assert "registration still follows the tumour" in row.toolTip() and "larger than the painted one" in row.toolTip()
    other = {"kind": "something_new", "sentence": "A sentence the panel does not know how to word."}
    assert adviceSentences([other]) == [other["sentence"]]


def test_slices_the_advice_names_are_flagged_with_their_reason():
    """The slice where the result stops at its reach (and one that looks larger than the painted slice) is a row the
    reader can find in the list and double-click to, with the reason as its tooltip; other rows keep theirs."""
    from gastric_propagate.inference.advice import cut_at_reach_advice, larger_neighbour_advice

    advice = [cut_at_reach_advice(9, "up", 5, 0.52, 0.75).to_dict(), larger_neighbour_advice(5, 6, 1.4).to_dict(),
              larger_neighbour_advice(5, 40, 1.4).to_dict()]  # a slice the result never visited: no row for it
    confidence = {3: 0.2, 4: 0.9, 5: 1.0, 6: 0.9, 7: 0.8, 8: 0.7, 9: 0.6}
    rows = {row.k: row for row in reviewRows(_result(confidence, anchors=[5], toReview=[3], advice=advice))}
    assert sorted(rows) == [3, 4, 5, 6, 7, 8, 9]
    assert [k for k, row in rows.items() if row.toReview] == [3, 6, 9]
    assert "as far as it may reach" in rows[9].toolTip() and "beyond this slice" in rows[9].toolTip()
    assert "larger than the painted one" in rows[6].toolTip()
    assert rows[3].toolTip() == "Flagged for review: check this slice."
    assert rows[4].toolTip() == "" and rows[4].colour() is None
    assert reviewSummary(list(rows.values())) == "3 slice(s) to review: K = 3, 6, 9."


def test_the_slice_where_the_scan_ends_under_a_wide_result_is_flagged_with_its_reason():
    from gastric_propagate.inference.advice import result_at_volume_edge_advice

    advice = [result_at_volume_edge_advice(0, 0.8).to_dict()]
    rows = {row.k: row for row in reviewRows(_result({0: 0.9, 1: 0.9, 2: 1.0}, anchors=[2], toReview=[],
                                                     advice=advice))}
    assert [k for k, row in rows.items() if row.toReview] == [0]
    assert "The scan ends here" in rows[0].toolTip()


def test_advice_on_an_anchor_does_not_flag_it():
    from gastric_propagate.inference.advice import cut_at_reach_advice

    advice = [cut_at_reach_advice(8, "up", 5, 0.5, 0.75).to_dict()]
    rows = {row.k: row for row in reviewRows(_result({5: 1.0, 6: 0.9, 8: 1.0}, anchors=[5, 8], toReview=[],
                                                     advice=advice), correctedSlices=[8])}
    assert not rows[8].toReview and rows[8].advised == "" and rows[8].colour() is None


def test_a_flagged_rows_tooltip_says_why_the_engine_flagged_it():
    """The reader hovering a flagged row learns what to look for: a weak slice, a leak cut back, a late find."""
    result = RunResult(mask=np.zeros((12, 4, 4), np.uint8), report=Report.from_json({
        "slice_confidence": {"3": 0.21, "4": 0.62, "5": 1.0, "6": 0.9, "7": 0.2951}, "painted_slices": [5],
        "slices_to_review": [3, 4, 6, 7],
        "review_reasons": {"3": ["low_confidence"], "4": ["cut_back"], "6": ["found_when_turned"],
                           "7": ["low_confidence", "cut_back"]}}))
    tips = {row.k: row.toolTip() for row in reviewRows(result)}
    assert tips[3].startswith("Confidence 0.21, below 0.3:") and "cut back" not in tips[3]
    assert "cut back here after it ran into the tissue beside the tumour" in tips[4] and "Confidence" not in tips[4]
    assert tips[6].startswith("Found only when the network saw the slice flipped or rotated")
    assert tips[7].startswith("Confidence 0.29, below 0.3") and "cut back" in tips[7], "not '0.30, below 0.3'"
    assert tips[5] == "", "the painted slice is not flagged"


def test_every_reason_the_engine_gives_has_its_own_tooltip_sentence():
    """The engine's reasons (``REVIEW_REASONS``) and the panel's sentences are written in two places: a new reason
    without its sentence would show an empty or another reason's tooltip."""
    from gastric_propagate.inference.result import REVIEW_REASONS

    result = RunResult(mask=np.zeros((12, 4, 4), np.uint8), report=Report.from_json({
        "slice_confidence": {str(3 + i): 0.1 for i in range(len(REVIEW_REASONS))} | {"9": 1.0},
        "painted_slices": [9], "slices_to_review": [3 + i for i in range(len(REVIEW_REASONS))],
        "review_reasons": {str(3 + i): [reason] for i, reason in enumerate(REVIEW_REASONS)}}))
    tips = [row.toolTip() for row in reviewRows(result) if row.toReview]
    assert len(tips) == len(REVIEW_REASONS) and all(tips) and len(set(tips)) == len(tips)


def test_a_long_flagged_list_is_summed_up_without_a_dangling_ellipsis():
    """"K = 20, ..., 36, ...." on the panel: the summary names the first eight and says how many more."""
    confidence = {k: 0.1 for k in range(20, 32)} | {19: 1.0}
    rows = reviewRows(_result(confidence, anchors=[19], toReview=list(range(20, 32))))
    assert reviewSummary(rows) == ("12 slices to review: K = 20, 21, 22, 23, 24, 25, 26, 27 and 4 more (the list "
                                   "below).")


def test_the_manual_estimates_read_as_estimates_in_whole_units():
    """"~40.0 s" and "~7.0 min" on the panel, "about 40 s" in the README: one text, written by one function."""
    from GastricPropagateLib.results_table import manualEstimateText
    from gastric_propagate.protocol import MANUAL_FULL_OUTLINE_SECONDS, MANUAL_ONE_SLICE_SECONDS

    assert manualEstimateText(MANUAL_ONE_SLICE_SECONDS) == "about 40 s"
    assert manualEstimateText(MANUAL_FULL_OUTLINE_SECONDS) == "about 7 min"
