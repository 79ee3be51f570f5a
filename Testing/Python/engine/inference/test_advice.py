"""inference.advice: each piece of advice's kind, English sentence and figures, which must name the same thing."""

from gastric_propagate.inference.advice import (LARGER_NEIGHBOUR, NOT_AXIAL, SEPARATE_REGIONS, larger_neighbour_advice,
                                                not_axial_advice, separate_regions_advice,
                                                result_at_volume_edge_advice, unfilled_outline_advice)


def test_the_larger_neighbour_ratio_is_given_to_two_decimals_and_worded_to_one():
    advice = larger_neighbour_advice(8, 11, 1.2345)
    assert advice.to_dict() == {"kind": LARGER_NEIGHBOUR, "sentence": advice.sentence, "painted_slice": 8,
                                "slice": 11, "ratio": 1.23}
    assert advice.sentence.startswith("Slice 11 looks 1.2 times as large as the painted slice 8: ")


def test_separate_regions_name_their_count_the_largest_and_the_others_together():
    advice = separate_regions_advice(5, [300.04, 20.0, 12.53])
    assert advice.kind == SEPARATE_REGIONS
    assert advice.values == {"painted_slice": 5, "regions": 3, "largest_mm2": 300.0, "others_mm2": 32.5}
    assert advice.sentence.startswith("The painted slice 5 holds 3 separate regions (the largest 300 mm², the others "
                                      "32.5 mm² together)")
    assert "can make the tumour's own result run on past its ends" in advice.sentence  # measured: 2 slices each way


def test_a_sagittal_volume_was_propagated_left_to_right_and_a_coronal_one_front_to_back():
    for orientation, across in (("sagittal", "left to right"), ("coronal", "front to back")):
        advice = not_axial_advice(orientation)
        assert advice.kind == NOT_AXIAL and advice.values == {"orientation": orientation}
        assert f"propagated from the painted slice {across} along" in advice.sentence


def test_an_unfilled_outline_names_its_slice_and_both_areas_as_its_values_say():
    advice = unfilled_outline_advice(7, 212.04, 530.46).to_dict()
    assert advice["kind"] == "unfilled_outline" and advice["painted_slice"] == 7
    assert (advice["painted_mm2"], advice["enclosed_mm2"]) == (212.0, 530.5)
    assert "slice 7 encloses 530.5 mm² that it does not hold (it holds 212 mm²)" in advice["sentence"]


def test_a_result_at_the_volume_s_edge_names_which_edge_and_its_share():
    first, last = result_at_volume_edge_advice(0, 0.734).to_dict(), result_at_volume_edge_advice(40, 0.5).to_dict()
    assert (first["kind"], first["slice"], first["edge"], first["share"]) == ("result_at_volume_edge", 0, "first", 0.73)
    assert "first slice of the volume (0) with 73% of the painted" in first["sentence"]
    assert last["edge"] == "last" and "last slice of the volume (40)" in last["sentence"]
