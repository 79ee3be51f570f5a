"""The report never contradicts its mask (Hypothesis): every slice it names agrees with the final mask.

Random tumours (size, position, elongation), painted slices, slice limits and options run through the exactly known
networks of conftest.py, with and without the vote; the report is then read as a reviewer would.
"""

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from conftest import CopyCoarseRefiner, OracleProposer
from gastric_propagate.file_segmentation import build_report
from gastric_propagate.inference.pipeline import PropagationOptions, Segmenter
from gastric_propagate.inference.preprocessing import Preprocessing
from gastric_propagate.inference.result import SegmentationResult

ENDS_ON = re.compile(r"(?:after|at|ends on) slice (\d+)|slice limit \((\d+)\)")  # the result's last slice
BEYOND = re.compile(r"(?:on|before) slice (\d+)")  # a slice past the result's end


@pytest.fixture(scope="module")
def segmenter():
    return Segmenter.from_networks(OracleProposer(), CopyCoarseRefiner(), Preprocessing(), device="cpu")


@st.composite
def runs(draw):
    depth = draw(st.integers(6, 24))
    in_plane = draw(st.floats(0.6, 1.2))
    spacing = (in_plane, in_plane, draw(st.floats(0.8, 5.0)))
    size = draw(st.sampled_from((48, 64)))
    # The tumour stays inside the image in-plane (a painted slice touching the edge is refused as bad input).
    largest_radius_mm = min(14.0, (size / 2 - 6) * in_plane)
    return {
        "depth": depth, "size": size, "spacing": spacing,
        "centre_z": draw(st.floats(0.2, 0.8)) * (depth - 1), "radius_mm": draw(st.floats(5.0, largest_radius_mm)),
        "elongation": draw(st.floats(0.5, 3.0)), "painted_offset": draw(st.integers(-2, 2)),
        "limit": draw(st.sampled_from((None, "min", "max", "distance"))),
        "consensus": draw(st.booleans()), "refiner": draw(st.booleans()), "largest": draw(st.booleans()),
        "seed": draw(st.integers(0, 5)),
    }


def make_case(run):
    depth, size, spacing = run["depth"], run["size"], run["spacing"]
    z, y, x = np.mgrid[:depth, :size, :size]
    distance = np.sqrt(((z - run["centre_z"]) * spacing[2] / run["elongation"]) ** 2
                       + ((y - size / 2) * spacing[1]) ** 2 + ((x - size / 2 + 3) * spacing[0]) ** 2)
    label = distance < run["radius_mm"]
    rng = np.random.default_rng(run["seed"])
    image = (np.where(label, 120.0, -60.0) + rng.normal(0, 8, label.shape)).astype(np.int16)
    image[:, :5] = -1000
    areas = label.sum(axis=(1, 2))
    k = int(np.clip(int(np.argmax(areas)) + run["painted_offset"], 0, depth - 1))
    if areas[k] < 8:
        k = int(np.argmax(areas))
    annotation = np.zeros(label.shape, np.uint8)
    annotation[k] = label[k]
    return image, annotation, k


def check_agrees(report, mask):
    tumour = [int(k) for k in np.flatnonzero(mask.any(axis=(1, 2)))]
    first, last = tumour[0], tumour[-1]
    assert report["slices"] == {"first": first, "last": last, "count": last - first + 1}
    assert report["voxels"] == int(np.count_nonzero(mask))
    for k in report["painted_slices"]:
        assert mask[k].any(), f"painted slice {k} has no tumour"
    named = ([int(k) for k in report["slice_confidence"]] + report["least_confident_slices"]
             + report["slices_to_review"])
    assert sorted(map(int, report["review_reasons"])) == report["slices_to_review"], "each flagged slice says why"
    assert all(first <= k <= last for k in named), (named, first, last)
    for direction, reason in report["stop_reasons"].items():
        end, outward = (last, 1) if direction == "up" else (first, -1)
        for a, b in ENDS_ON.findall(reason):
            assert int(a or b) == end, f"{direction}: {reason!r} but the result ends on slice {end}"
        for k in map(int, BEYOND.findall(reason.replace("ends on slice", ""))):
            assert (k - end) * outward > 0 and not mask[k].any(), (
                f"{direction}: {reason!r} but slice {k} is in the result ({first}-{last})")
        if "edge of the volume" in reason:
            assert end == (mask.shape[0] - 1 if outward > 0 else 0), reason


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(run=runs())
def test_every_slice_the_report_names_agrees_with_the_mask(run, segmenter):
    image, annotation, k = make_case(run)
    # A short, thin tumour can fall between two thick slices: a painted slice the input checks refuse is not a run.
    assume(annotation[k].sum() >= 8 and annotation[k].sum() * run["spacing"][0] ** 2 >= 3.0)
    limit = {"min": {"min_slice": max(0, k - 2)}, "max": {"max_slice": min(run["depth"] - 1, k + 2)},
             "distance": {"max_distance_mm": 2.5 * run["spacing"][2]}, None: {}}[run["limit"]]
    options = PropagationOptions(use_consensus=run["consensus"], use_refiner=run["refiner"],
                                 painted_is_largest=run["largest"], **limit)
    result = segmenter.segment(image, run["spacing"], annotation, options)
    report = build_report(result, run["spacing"])
    event("a stop reason replaced" if any("result ends on" in r for r in report["stop_reasons"].values())
          else "stop reasons kept")
    check_agrees(report, result.mask)


def result_on(slices, depth=12, **fields):
    mask = np.zeros((depth, 8, 8), np.uint8)
    mask[slices, 2:6, 2:6] = 1
    values = dict(mask=mask, proposer_mask=mask, slice_confidence={}, anchor_slices=[5], stop_reasons={},
                  seconds=0.1, device="cpu", consensus=True)
    values.update(fields)
    return SegmentationResult(**values)


def test_a_stop_reason_naming_a_slice_of_the_result_is_replaced_by_where_it_ends():
    result = result_on(list(range(3, 9)), slice_confidence={k: 0.1 for k in range(1, 11)} | {5: 1.0},
                       stop_reasons={"up": "tumour ended: the proposer found 0 mm2 on slice 6",
                                     "down": "stopped before slice 2: its cross-section grew from 20 to 90 mm2"})
    report = build_report(result, (1.0, 1.0, 1.0))
    assert report["stop_reasons"]["up"] == ("the result ends on slice 8, where the vote of the networks, "
                                            "registration and the copied outline ends it (the proposer alone went "
                                            "less far)")
    assert report["stop_reasons"]["down"].startswith("stopped before slice 2"), "it agrees with the mask: kept"
    assert report["slices_to_review"] == [3, 4, 6, 7, 8]
    assert report["review_reasons"] == {str(k): ["low_confidence"] for k in (3, 4, 6, 7, 8)}, "slices 1, 2, 9, 10: none"
    assert report["least_confident_slices"] == [3, 4, 6, 7, 8]
    assert sorted(map(int, report["slice_confidence"])) == list(range(3, 9))
    check_agrees(report, result.mask)


def test_a_result_the_vote_ended_slices_before_the_proposer_says_so():
    """The proposer's reason names the slice just past its own end (14): the vote ended the result at 20, six slices
    before, and the report says that, not the proposer's reason (as with --painted-not-largest)."""
    proposer = np.zeros((40, 8, 8), np.uint8)
    proposer[15:36, 2:6, 2:6] = 1
    result = result_on(list(range(20, 34)), depth=40, proposer_mask=proposer,
                       stop_reasons={"down": "tumour ended: the proposer found 0 mm2 on slice 14",
                                     "up": "tumour ended: the proposer found 0 mm2 on slice 36"})
    report = build_report(result, (1.0, 1.0, 1.0))
    assert report["stop_reasons"]["down"] == ("the result ends on slice 20, where the vote of the networks, "
                                              "registration and the copied outline ends it (the proposer alone went "
                                              "further)")
    assert report["stop_reasons"]["up"].startswith("the result ends on slice 33")
    agreeing = result_on(list(range(15, 36)), depth=40, proposer_mask=proposer, stop_reasons=result.stop_reasons)
    assert build_report(agreeing, (1.0, 1.0, 1.0))["stop_reasons"] == result.stop_reasons, "ends agree: kept"


@pytest.mark.parametrize("reason", ["stopped after slice 10: 2x the painted diameter from the painted slice",
                                    "reached the slice limit (10)", "reached the edge of the volume"])
def test_a_result_ending_short_of_where_the_networks_stopped_says_so(reason):
    result = result_on(list(range(3, 9)), stop_reasons={"up": reason, "down": "reached the edge of the volume"},
                       consensus=False)
    report = build_report(result, (1.0, 1.0, 1.0))
    assert report["stop_reasons"]["up"].startswith("the result ends on slice 8, where the refiner")
    assert report["stop_reasons"]["down"].startswith("the result ends on slice 3")
    check_agrees(report, result.mask)
