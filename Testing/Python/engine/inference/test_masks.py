"""inference.masks: bounding boxes, connected parts and equivalent diameters."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gastric_propagate.inference.masks import (bounding_box, bounds, equivalent_diameter_mm, keep_connected,
                                               largest_component, parts_touching, slices_for, slices_within)


@given(arrays(bool, (6, 7), elements=st.booleans()).filter(np.any), st.integers(0, 3), st.integers(0, 3))
@settings(max_examples=50, deadline=None)
def test_bounds_and_bounding_box_agree_and_hold_the_mask(mask, margin_y, margin_x):
    (y0, y1), (x0, x1) = bounds(mask, (margin_y, margin_x))
    box = bounding_box(mask, (margin_y, margin_x))
    assert box == (slice(y0, y1 + 1), slice(x0, x1 + 1))
    assert mask[box].sum() == mask.sum()
    ys, xs = np.nonzero(mask)
    assert y0 == max(0, ys.min() - margin_y) and x1 == min(mask.shape[1] - 1, xs.max() + margin_x)


def test_an_empty_mask_has_no_bounding_box():
    with pytest.raises(ValueError, match="empty"):
        bounding_box(np.zeros((3, 3), dtype=bool))


def test_largest_component_and_parts_touching():
    mask = np.zeros((8, 8), dtype=bool)
    mask[0:2, 0:2] = True  # 4 pixels
    mask[4:8, 4:8] = True  # 16 pixels
    assert largest_component(mask).sum() == 16
    seeds = np.zeros_like(mask)
    seeds[0, 0] = True
    np.testing.assert_array_equal(parts_touching(mask, seeds), mask & (np.arange(8)[:, None] < 2))
    diagonal = np.eye(3, dtype=bool)
    corner = np.zeros_like(diagonal)
    corner[0, 0] = True
    assert parts_touching(diagonal, corner).sum() == 1
    assert parts_touching(diagonal, corner, structure=np.ones((3, 3), dtype=bool)).sum() == 3


def test_keep_connected_drops_what_no_anchor_touches():
    mask = np.zeros((4, 8, 8), dtype=np.uint8)
    mask[0:3, 1:3, 1:3] = 1
    mask[2:4, 5:7, 5:7] = 1
    painted = np.zeros((8, 8), dtype=bool)
    painted[1, 1] = True
    kept = keep_connected(mask, {1: painted})
    assert kept.sum() == 12 and not kept[:, 5:, 5:].any()


def test_equivalent_diameter_and_the_slices_it_spans():
    disc = np.zeros((40, 40), dtype=bool)
    disc[10:30, 10:30] = True  # 400 mm2 at 1 mm pixels
    spacing = (1.0, 1.0, 2.0)
    assert equivalent_diameter_mm(disc, spacing) == pytest.approx(2.0 * math.sqrt(400.0 / math.pi))
    assert slices_for(11.0, spacing) == 6 and slices_for(10.9, spacing) == 5
    assert slices_within(disc, spacing, 0.5) == round(0.5 * equivalent_diameter_mm(disc, spacing) / 2.0)
