"""Annotation variants: one painted slice, nested outlines, deterministic, inside the tumour."""

import numpy as np
import pytest
from scipy import ndimage

from gastric_propagate.data.annotation import largest_cross_section_index
from gastric_propagate.evaluation.annotations import PAINTED_NOT_LARGEST, VARIANTS, make_annotation

SPACING = (0.8, 0.8, 2.5)


@pytest.fixture(scope="module")
def label():
    z, y, x = np.mgrid[:24, :64, :64]
    ellipsoid = ((x - 30) * 0.8 / 16) ** 2 + ((y - 34) * 0.8 / 11) ** 2 + ((z - 11) * 2.5 / 22) ** 2 <= 1
    return ellipsoid.astype(np.uint8)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_one_slice_deterministic(label, variant):
    first = make_annotation(label, SPACING, variant, seed=7)
    assert first.dtype == np.uint8 and first.shape == label.shape
    assert np.count_nonzero(first.any(axis=(1, 2))) == 1
    np.testing.assert_array_equal(first, make_annotation(label, SPACING, variant, seed=7))


def test_the_ticked_random_slice_is_the_random_slice(label):
    for seed in range(5):
        np.testing.assert_array_equal(make_annotation(label, SPACING, "random_slice_ticked", seed=seed),
                                      make_annotation(label, SPACING, "random_slice", seed=seed))


def test_only_another_slice_is_run_as_not_the_largest():
    # next_slice stands for a reader who believes the slice is the largest, and leaves the box ticked.
    assert PAINTED_NOT_LARGEST == {"random_slice"} and PAINTED_NOT_LARGEST <= set(VARIANTS)


def test_eroded_inside_original_inside_dilated(label):
    original = make_annotation(label, SPACING, "largest")
    eroded = make_annotation(label, SPACING, "eroded", seed=3)
    dilated = make_annotation(label, SPACING, "dilated", seed=3)
    k = largest_cross_section_index(label)
    np.testing.assert_array_equal(original[k], label[k])
    assert eroded.sum() < original.sum() < dilated.sum()
    assert not np.any(eroded & ~original) and not np.any(original & ~dilated)
    # every added pixel lies within 2 mm of the outline, every removed one within 2 mm of the outside
    sampling = (SPACING[1], SPACING[0])
    assert ndimage.distance_transform_edt(~original[k].astype(bool), sampling=sampling)[dilated[k] > 0].max() <= 2.0
    assert ndimage.distance_transform_edt(original[k], sampling=sampling)[(original[k] > eroded[k])].max() <= 2.0


def test_random_slice_lies_in_the_tumour_and_varies_with_the_seed(label):
    chosen = set()
    for seed in range(12):
        annotation = make_annotation(label, SPACING, "random_slice", seed=seed)
        k = int(np.flatnonzero(annotation.any(axis=(1, 2)))[0])
        np.testing.assert_array_equal(annotation[k], label[k])
        assert label[k].sum() >= 0.25 * label.sum(axis=(1, 2)).max()
        chosen.add(k)
    assert len(chosen) > 2


def test_next_slice_is_a_neighbour_of_the_largest_and_takes_both_sides(label):
    largest = int(np.argmax(label.sum(axis=(1, 2))))
    chosen = set()
    for seed in range(12):
        annotation = make_annotation(label, SPACING, "next_slice", seed=seed)
        k = int(np.flatnonzero(annotation.any(axis=(1, 2)))[0])
        np.testing.assert_array_equal(annotation[k], label[k])
        chosen.add(k)
    assert chosen == {largest - 1, largest + 1}


def test_next_slice_of_a_one_slice_tumour_is_that_slice():
    flat = np.zeros((5, 16, 16), np.uint8)
    flat[2, 4:12, 4:12] = 1
    np.testing.assert_array_equal(make_annotation(flat, SPACING, "next_slice", seed=0), flat)


def test_erosion_never_empties_a_thin_outline():
    label = np.zeros((5, 20, 20), np.uint8)
    label[2, 9:11, 5:15] = 1
    assert make_annotation(label, (1.0, 1.0, 1.0), "eroded", seed=0).sum() > 0


def test_unknown_variant_and_empty_label():
    with pytest.raises(ValueError, match="unknown annotation variant"):
        make_annotation(np.ones((3, 4, 4), np.uint8), (1, 1, 1), "scribble")
    with pytest.raises(ValueError, match="empty"):
        make_annotation(np.zeros((3, 4, 4), np.uint8), (1, 1, 1))
