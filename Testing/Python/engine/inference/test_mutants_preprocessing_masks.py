"""inference.preprocessing and inference.masks: behaviour the other tests left unpinned (found by mutation testing).

Each test names the documented behaviour it holds; the figures are worked out by hand.
"""

import math

import numpy as np
import pytest

from gastric_propagate.inference.preprocessing import (CropGrid, Preprocessing, crop_grid_for, mask_from_crop,
                                                       prompt_centre, to_crop, with_working_slices)


def _square_mask(width_px: int, shape=(1, 200, 200), at=(50, 50)) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[0, at[0]:at[0] + width_px, at[1]:at[1] + width_px] = 1
    return mask


@pytest.mark.parametrize("width_px, size", [(5, 64), (32, 64), (33, 80), (60, 112)])
def test_crop_side_is_the_inclusive_extent_plus_the_margin_each_side_rounded_up_to_16(width_px, size):
    """At 1 mm pixels a W-pixel box spans W mm (pixels counted inclusively); the margin is max(16 mm, 0.35 W) each
    side; the side is rounded up to a multiple of 16 and is at least 64: 5 -> 64 (the minimum), 32 -> 32 + 32 = 64,
    33 -> 65 -> 80, 60 -> 60 + 2 x 21 = 102 -> 112."""
    grid = crop_grid_for(_square_mask(width_px), (1.0, 1.0, 1.0), Preprocessing())
    assert grid.size == size


def test_crop_is_centred_on_the_painted_box_and_the_training_shift_moves_it_along_plus_x():
    """The crop's middle pixel (continuous) is the painted box's centre in index space; ``centre_shift_mm`` moves it
    by that many mm (here 2 voxels at 0.5 mm) towards +x, +y."""
    mask = np.zeros((1, 120, 100), np.uint8)
    mask[0, 40:61, 30:51] = 1  # box centre (y, x) = (50, 40)
    spacing = (0.5, 0.5, 1.0)
    for shift, centre in (((0.0, 0.0), (40.0, 50.0)), ((1.0, -1.0), (42.0, 48.0))):
        grid = crop_grid_for(mask, spacing, Preprocessing(), centre_shift_mm=shift)
        middle = [grid.origin_xy[i] + grid.step_xy[i] * (grid.size - 1) / 2.0 for i in (0, 1)]
        np.testing.assert_allclose(middle, centre, atol=1e-9)


def test_prompt_centre_is_the_median_of_the_painted_voxels_not_their_mean():
    """The prompt normalisation maps the painted region's median HU to 0: a few bright voxels (calcification,
    contrast) inside the outline must not move it."""
    image = np.array([[30.0, 40.0, 50.0, 1000.0, -500.0]])
    painted = np.array([[True, True, True, True, False]])
    assert prompt_centre(image, painted) == 45.0


@pytest.mark.parametrize("anchor", [0, 3, 10, 31, 59])
def test_working_slices_start_within_the_ct_and_reach_its_last_slice(anchor):
    """Thin slices (0.5 mm, step 2 mm: 4 CT slices) give working slices through the anchor that cover the CT's
    whole z range: the first lies in [0, step), the last within one step of the last CT slice, none outside."""
    n = 60
    prep = Preprocessing(slice_step_mm=2.0)
    grid = with_working_slices(CropGrid((0.0, 0.0), (1.0, 1.0), 64), [anchor], n, 0.5, prep)
    assert grid.step_z == 4.0
    assert 0.0 <= grid.origin_z < grid.step_z
    last = grid.slice_position(grid.depth - 1)
    assert last <= n - 1 < last + grid.step_z
    assert grid.slice_position(grid.working_index(anchor)) == anchor


def test_working_index_is_the_nearest_working_slice():
    """``working_index`` rounds to the nearest working slice (an anchor computed in floating point may fall a hair
    short of its slice): 2.6 steps is slice 3, 2.4 steps slice 2."""
    grid = CropGrid((0.0, 0.0), (1.0, 1.0), 64, origin_z=1.0, step_z=4.0)
    assert grid.working_index(1.0 + 4.0 * 2.6) == 3
    assert grid.working_index(1.0 + 4.0 * 3 - 1e-9) == 3
    assert grid.working_index(1.0 + 4.0 * 2.4) == 2


def test_in_plane_grid_reads_every_ct_slice():
    """``CropGrid.in_plane`` is the same crop on the CT's own slices: one working slice per CT slice."""
    grid = CropGrid((0.0, 0.0), (1.0, 1.0), 16, origin_z=1.5, step_z=3.0, depth=4)
    flat = grid.in_plane()
    assert (flat.origin_z, flat.step_z, flat.depth) == (0.0, 1.0, None)
    volume = np.arange(10, dtype=np.float32)[:, None, None] * np.ones((10, 16, 16), np.float32)
    np.testing.assert_allclose(to_crop(volume, flat)[:, 8, 8], np.arange(10))


def test_a_crop_near_the_far_x_edge_of_a_wide_image_round_trips():
    """A CT wider than it is tall (x 220, y 80): the crop near the far x edge reads and writes x beyond the image's
    height (the covered box clips x to the width, y to the height)."""
    label = np.zeros((3, 80, 220), np.uint8)
    label[:, 30:50, 180:200] = 1
    grid = crop_grid_for(label[1:2], (1.0, 1.0, 1.0), Preprocessing())
    crop = to_crop(label.astype(np.float32), grid, default_value=0.0)
    assert crop.sum() == pytest.approx(label.sum(), rel=0.02)
    np.testing.assert_array_equal(mask_from_crop(crop, grid, label.shape), label)


def test_crop_default_value_fills_a_crop_wholly_outside_the_image():
    """A crop that covers no CT pixel is filled with ``default_value`` (air by default), not left 0."""
    grid = CropGrid(origin_xy=(500.0, 500.0), step_xy=(1.0, 1.0), size=16)
    crop = to_crop(np.zeros((2, 32, 32), np.float32), grid)
    assert crop.shape == (2, 16, 16) and (crop == -1024.0).all()


def test_pasting_back_part_of_the_working_slices_lands_on_their_ct_slices():
    """``slices`` says which working slices ``crop`` holds: crop[0] is working slice slices.start, so a crop of working
    slices 2..3 (step 4 CT slices, origin 1: CT slices 9 and 13) fills CT slices 9..13 only; the CT slices beyond the
    span of the working slices stay 0 even where they lie within half a working step."""
    grid = CropGrid(origin_xy=(0.0, 0.0), step_xy=(1.0, 1.0), size=16, origin_z=1.0, step_z=4.0, depth=5)
    crop = np.ones((2, 16, 16), np.float32)
    out = mask_from_crop(crop, grid, (20, 16, 16), slices=slice(2, 4))
    np.testing.assert_array_equal(np.flatnonzero(out.any(axis=(1, 2))), np.arange(9, 14))
    whole = mask_from_crop(np.ones((5, 16, 16), np.float32), grid, (20, 16, 16))
    np.testing.assert_array_equal(np.flatnonzero(whole.any(axis=(1, 2))), np.arange(1, 18))


def test_pasting_back_thresholds_the_interpolated_probability_at_one_half():
    """Probabilities, not masks, are resampled and thresholded at 0.5: 0.45 everywhere is background, 0.55 tumour."""
    grid = CropGrid(origin_xy=(0.0, 0.0), step_xy=(1.0, 1.0), size=16)
    for p, expected in ((0.45, 0), (0.55, 1)):
        out = mask_from_crop(np.full((3, 16, 16), p, np.float32), grid, (3, 16, 16))
        assert (out == expected).all()


def test_crop_resampling_is_linear_between_ct_pixels():
    """``to_crop`` interpolates linearly (its default): half-pixel steps on a ramp read the midpoints."""
    ramp = np.tile(np.arange(16, dtype=np.float32) * 10.0, (1, 16, 1))
    grid = CropGrid(origin_xy=(0.0, 0.0), step_xy=(0.5, 0.5), size=16)
    np.testing.assert_allclose(to_crop(ramp, grid)[0, 4, :6], [0, 5, 10, 15, 20, 25])


def test_equivalent_thin_slice_step_keeps_the_ct_slices():
    """Slices exactly ``slice_step_mm`` thick are kept as acquired (one working slice per CT slice)."""
    grid = with_working_slices(CropGrid((0.0, 0.0), (1.0, 1.0), 64), [7], 20, 2.0, Preprocessing(slice_step_mm=2.0))
    assert (grid.origin_z, grid.step_z, grid.depth) == (0.0, 1.0, 20)
    assert math.isclose(grid.slice_position(19), 19.0)


# inference.masks

def test_in_plane_box_holds_the_window_s_voxels_and_the_outlines_only():
    """``in_plane_box`` is where work on the window's slices need look: the volumes' voxels on those slices (not on
    other slices) and every outline pixel, widened by ``margin``."""
    from gastric_propagate.inference.masks import in_plane_box

    volume = np.zeros((6, 20, 20), np.uint8)
    volume[2, 5:7, 5:7] = 1     # in the window
    volume[5, 15:18, 15:18] = 1  # outside it: ignored
    other = np.zeros_like(volume)
    other[3, 8, 9] = 1
    outline = np.zeros((20, 20), np.uint8)
    outline[1, 12] = 1
    assert in_plane_box([volume, other], slice(1, 4)) == (slice(5, 9), slice(5, 10))
    assert in_plane_box([volume, other], slice(1, 4), [outline]) == (slice(1, 9), slice(5, 13))
    assert in_plane_box([volume], slice(1, 4), [outline], margin=2) == (slice(0, 9), slice(3, 15))


def test_keep_connected_reads_the_anchor_s_own_slice_when_the_mask_starts_above_slice_zero():
    """The anchors' painted voxels are looked up on their own slices, also when the mask's box does not start at
    slice 0 and the anchor is the box's first slice: the part through the anchor is kept, the stray dropped."""
    from gastric_propagate.inference.masks import keep_connected

    mask = np.zeros((10, 12, 12), np.uint8)
    mask[4:8, 1:4, 1:4] = 1    # through the anchor (slice 4, the box's first)
    mask[5:9, 8:11, 8:11] = 1  # a stray: touches no painted voxel
    painted = np.zeros((12, 12), bool)
    painted[2, 2] = True
    kept = keep_connected(mask, {4: painted})
    np.testing.assert_array_equal(kept[4:8, 1:4, 1:4], 1)
    assert kept.sum() == 36
    # Painted voxels beyond the mask on the anchor's slice keep nothing more: what is kept is always part of the mask.
    wide = np.zeros((12, 12), bool)
    wide[0:5, 0:5] = True
    kept = keep_connected(mask, {4: wide})
    assert kept.sum() == 36 and not (kept & (mask == 0)).any()


def test_equivalent_diameter_uses_both_in_plane_spacings():
    """The area is pixels x spacing x x spacing y (not z): 100 pixels at 0.5 x 2 mm are 100 mm2."""
    from gastric_propagate.inference.masks import equivalent_diameter_mm

    mask = np.ones((10, 10), bool)
    assert equivalent_diameter_mm(mask, (0.5, 2.0, 7.0)) == pytest.approx(2.0 * math.sqrt(100.0 / math.pi))
