"""The crop grid: it covers the painted region with margin, and pasting back lands on the same voxels."""

import numpy as np
import pytest

from conftest import SPACING
from gastric_propagate.data.annotation import annotation_from_label
from gastric_propagate.metrics import dice
from gastric_propagate.inference.preprocessing import (CropGrid, Preprocessing, crop_grid_for, mask_from_crop,
                                                       normalise, normalise_hu, to_crop, with_working_slices)


def test_round_trip_through_the_crop_keeps_the_mask(volume):
    _, label = volume
    grid = crop_grid_for(annotation_from_label(label), SPACING, Preprocessing())
    crop = to_crop(label.astype(np.float32), grid, default_value=0.0)
    assert crop.shape == (label.shape[0], grid.size, grid.size)
    back = mask_from_crop(crop, grid, label.shape)
    assert back.dtype == np.uint8 and back.shape == label.shape
    assert dice(back, label) > 0.97


def test_crop_is_at_the_fixed_spacing_with_margin_and_a_multiple_of_16():
    label = np.zeros((5, 400, 300), np.uint8)
    label[2, 200:260, 100:130] = 1  # 60 x 30 pixels
    spacing = (0.6, 0.9, 3.0)       # anisotropic in-plane spacing: 18 mm x 54 mm
    prep = Preprocessing(pixel_spacing_mm=1.0)
    grid = crop_grid_for(label, spacing, prep)
    assert grid.size % 16 == 0
    assert grid.size * prep.pixel_spacing_mm >= 54 + 2 * prep.min_margin_mm
    assert np.allclose(grid.step_xy, (1.0 / 0.6, 1.0 / 0.9))
    crop = to_crop(label.astype(np.float32), grid, default_value=0.0)[2] > 0.5
    ys, xs = np.nonzero(crop)
    assert 50 <= np.ptp(ys) + 1 <= 58 and 15 <= np.ptp(xs) + 1 <= 21  # 54 mm and 18 mm at 1 mm pixels


def test_crop_beyond_the_image_is_filled_with_air():
    image = np.full((3, 64, 64), 40, np.int16)
    annotation = np.zeros_like(image, dtype=np.uint8)
    annotation[1, 2:10, 2:10] = 1  # near the corner: the crop reaches outside the image
    grid = crop_grid_for(annotation, (1.0, 1.0, 1.0), Preprocessing())
    crop = to_crop(image, grid)
    assert crop.min() == -1024 and crop.max() == 40


def test_hu_window_maps_to_minus_one_one():
    values = normalise_hu(np.array([-1000, -250, 50, 350, 3000]), (-250, 350))
    np.testing.assert_allclose(values, [-1, -1, 0, 1, 1])


def test_prompt_normalisation_centres_the_painted_tissue():
    prep = Preprocessing()  # prompt: 100 HU per unit, saturating at 3 units, scaled to [-1, 1]
    values = normalise(np.array([-1000.0, 40.0, 70.0, 340.0, 3000.0]), prep, centre_hu=40.0)
    np.testing.assert_allclose(values, [-1.0, 0.0, 0.1, 1.0, 1.0], atol=1e-6)


def test_checkpoints_from_before_the_prompt_normalisation_keep_the_fixed_window():
    old = Preprocessing.from_dict({"pixel_spacing_mm": 1.0, "margin_fraction": 0.35, "min_margin_mm": 16.0,
                                   "size_multiple": 16, "min_size": 64, "hu_window": [-250, 350]})
    assert old.intensity == "window" and old.slice_step_mm is None
    assert Preprocessing.from_dict(Preprocessing().to_dict()) == Preprocessing()


def test_thin_slices_are_worked_on_at_the_fixed_step_and_mapped_back_exactly():
    spacing = (0.8, 0.8, 0.6)
    z, y, x = np.mgrid[:121, :96, :96]
    label = ((((z - 60) * 0.6) ** 2 + ((y - 48) * 0.8) ** 2 + ((x - 48) * 0.8) ** 2) < 20.0 ** 2).astype(np.uint8)
    prep = Preprocessing(slice_step_mm=2.0)
    grid = with_working_slices(crop_grid_for(label[60][None], spacing, prep), [60], label.shape[0], spacing[2], prep)
    assert np.isclose(grid.step_z * spacing[2], 2.0) and grid.working_index(60) * grid.step_z + grid.origin_z == 60
    crop = to_crop(label.astype(np.float32), grid, default_value=0.0)
    assert crop.shape[0] == grid.depth and grid.depth < label.shape[0] / 3 + 2
    np.testing.assert_array_equal(crop[grid.working_index(60)] > 0.5,
                                  to_crop(label[60:61].astype(np.float32), grid.in_plane(), default_value=0.0)[0] > 0.5)
    back = mask_from_crop(crop, grid, label.shape)
    assert dice(back, label) > 0.95
    # Thick slices and several anchors keep the CT's own slices.
    assert with_working_slices(grid, [60], 121, 3.0, prep).step_z == 1.0
    assert with_working_slices(grid, [50, 60], 121, 0.6, prep).step_z == 1.0


@pytest.mark.parametrize("step", [2.0, 4.0])
def test_each_ct_slice_goes_with_its_nearest_working_slices_alike_on_either_side(step):
    """A flag on a working slice (cut back, found when turned) marks the CT slices nearest to it: the same count on
    every working slice, a CT slice halfway between two with both, and every CT slice with at least one."""
    grid = CropGrid((0, 0), (1, 1), 64, origin_z=3.0, step_z=step)
    marked = {w: [k for k in range(60) if w in grid.nearest_working(k)] for w in range(1, 12)}
    widths = {w: ks[-1] - ks[0] for w, ks in marked.items()}
    assert len(set(widths.values())) == 1 and widths[1] >= step - 1
    for w, ks in marked.items():
        assert all(abs(k - grid.slice_position(w)) <= step / 2 + 1e-9 for k in ks)
    assert all(grid.nearest_working(k) for k in range(60))
    assert grid.nearest_working(3.0 + 2 * step) == {2}  # on a working slice: that one alone
