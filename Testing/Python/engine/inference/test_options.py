"""Bad option values through the engine's API (the Slicer Logic's way in) are refused as InputError in one line,
checked in one place (``inference.options``), the same values and words as the command line's."""

import math

import numpy as np
import pytest

import gastric_propagate.cli as cli
from conftest import SPACING, make_volume
from gastric_propagate.data.annotation import annotation_from_label
from gastric_propagate.errors import InputError
from gastric_propagate.inference.options import PropagationOptions
from gastric_propagate.inference.pipeline import Segmenter, segment_volume

BAD_OPTIONS = [
    ("vote_reach", 0, "vote_reach: 0 is not a finite reach above 0 painted diameters"),
    ("vote_reach", -1.5, "vote_reach: -1.5 is not a finite reach above 0"),
    ("vote_reach", math.inf, "vote_reach: inf is not a finite reach"),
    ("max_distance_mm", math.nan, "max_distance_mm: nan is not a finite distance of 0 mm or more"),
    ("max_distance_mm", math.inf, "max_distance_mm: inf is not a finite distance"),
    ("max_distance_mm", -2.0, "max_distance_mm: -2.0 is not a finite distance"),
    ("max_distance_mm", "far", "max_distance_mm: 'far' is not a number of millimetres"),
    ("min_slice", -1, "min_slice: -1 is too small for a slice index: give 0 or more"),
    ("max_slice", 2.5, "max_slice: 2.5 is not a slice index"),
    ("max_slice", math.inf, "max_slice: inf is not a slice index"),
]


@pytest.mark.parametrize("name, value, message", BAD_OPTIONS)
def test_bad_option_values_are_one_line_input_errors(name, value, message):  # issue 26: 16
    with pytest.raises(InputError) as caught:
        PropagationOptions(**{name: value})
    text = str(caught.value)
    assert text == f"PropagationOptions {message}" or text.startswith(f"PropagationOptions {message}"), text
    assert "\n" not in text and "usage:" not in text


def test_segment_volume_refuses_a_device_it_does_not_know_in_one_line(volume):  # issue 26: 16
    image, label = volume
    with pytest.raises(InputError) as caught:
        segment_volume(image, SPACING, annotation_from_label(label), device="tpu")
    assert str(caught.value) == "Device: 'tpu' is not a device: use auto, cpu, cuda or cuda:N."
    with pytest.raises(InputError, match="is not a device"):
        Segmenter.from_networks(None, None, device="cuda:x")


def test_good_values_are_kept_as_numbers_and_run(oracle_segmenter):
    options = PropagationOptions(min_slice=np.int64(2), max_slice=12.0, max_distance_mm=np.float32(20),
                                 vote_reach=1)
    assert (options.min_slice, options.max_slice, options.max_distance_mm, options.vote_reach) == (2, 12, 20.0, 1.0)
    assert type(options.min_slice) is int and type(options.max_distance_mm) is float
    image, label = make_volume(depth=16, size=64, centre_z=8, radius_mm=10.0)
    result = segment_volume(image, SPACING, annotation_from_label(label), options=options,
                            segmenter=oracle_segmenter)
    assert 2 <= result.slice_range()[0] and result.slice_range()[1] <= 12


@pytest.mark.parametrize("option, value, message", [
    ("--vote-reach", "0", "is not a finite reach above 0 painted diameters"),
    ("--max-distance-mm", "nan", "is not a finite distance of 0 mm or more"),
    ("--max-distance-mm", "inf", "is not a finite distance of 0 mm or more"),
    ("--min-slice", "-1", "is too small for a slice index"),
    ("--max-slice", "2.5", "is not a slice index"),
    ("--device", "tpu", "is not a device: use auto, cpu, cuda or cuda:N"),
])
def test_the_command_line_refuses_the_same_values_in_the_same_words(tmp_path, capsys, option, value, message):
    code = cli.main(["segment", "--image", str(tmp_path / "ct.nrrd"), "--annotation", str(tmp_path / "a.nrrd"),
                     "--output", str(tmp_path / "out.nrrd"), option, value])
    err = capsys.readouterr().err
    assert code == 2 and f"argument {option}: '{value}' {message}" in err, err


def test_a_distance_limit_typed_from_a_viewer_s_rounded_spacing_reaches_that_slice():
    from gastric_propagate.inference.options import slices_within

    assert slices_within(4.99, 4.990117918717877) == 1  # the viewer shows 4.99 mm: one slice was meant
    assert slices_within(0.0, 4.99) == 0 and slices_within(9.98, 4.99) == 2
    assert slices_within(4.9, 4.99) == 0  # 2 % short of the slice: it stays out
