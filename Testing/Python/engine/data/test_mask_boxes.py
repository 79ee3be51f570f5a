"""Masks written as the box that holds their voxels, and placed back on their grid: ITK's own geometry is the oracle."""

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.spatial.transform import Rotation

from gastric_propagate.data.annotation import occupied_box
from gastric_propagate.data.mask_boxes import Grid, box_image, box_on_grid, on_grid, reordered_on_grid, write_box

FORMATS = (".nrrd", ".nii.gz", ".mha")


@st.composite
def grids_and_masks(draw):
    """A grid of any spacing, origin and direction (a rotation, maybe mirrored), and a sparse mask on it (maybe
    empty)."""
    shape = draw(st.tuples(*[st.integers(1, 9)] * 3))
    spacing = tuple(draw(st.floats(0.3, 5.0)) for _ in range(3))
    origin = tuple(draw(st.floats(-1500.0, 1500.0)) for _ in range(3))
    rotation = Rotation.from_rotvec(draw(st.tuples(*[st.floats(-3.0, 3.0)] * 3))).as_matrix()
    if draw(st.booleans()):
        rotation[:, 0] *= -1.0  # a left-handed grid, as some scanners write
    grid = Grid(size=shape[::-1], spacing=spacing, origin=origin, direction=tuple(rotation.ravel()))
    mask = draw(arrays(np.uint8, shape, elements=st.sampled_from([0, 0, 0, 0, 1, 2])))
    return grid, mask


def whole(mask: np.ndarray, grid: Grid) -> sitk.Image:
    image = sitk.GetImageFromArray(mask)
    image.SetSpacing(grid.spacing)
    image.SetOrigin(grid.origin)
    image.SetDirection(grid.direction)
    return image


@settings(max_examples=60, deadline=None)
@given(grids_and_masks(), st.sampled_from(FORMATS))
def test_a_box_written_and_read_is_the_mask_on_its_grid(tmp_path_factory, drawn, suffix):
    grid, mask = drawn
    path = tmp_path_factory.mktemp("box") / f"box{suffix}"
    write_box(mask, grid, path)
    written = sitk.ReadImage(str(path))
    assert np.array_equal(on_grid(written, grid), (mask > 0).astype(np.uint8))
    held = np.argwhere(mask)
    if len(held):  # the smallest box: every face holds a voxel of the mask
        assert written.GetSize() == tuple(int(n) for n in (held.max(axis=0) - held.min(axis=0) + 1)[::-1])
    else:
        assert written.GetSize() == (1, 1, 1)


@settings(max_examples=60, deadline=None)
@given(grids_and_masks())
def test_each_voxel_of_the_box_lies_where_itk_puts_the_same_voxel_of_the_whole_grid(drawn):
    grid, mask = drawn
    box = occupied_box(mask)
    part, full = box_image(mask, box, grid), whole(mask, grid)
    corner = np.array([box[2].start, box[1].start, box[0].start])
    for index in [(0, 0, 0), tuple(int(n) - 1 for n in part.GetSize())]:
        np.testing.assert_allclose(part.TransformIndexToPhysicalPoint(index),
                                   full.TransformIndexToPhysicalPoint(tuple(int(v) for v in corner + index)),
                                   atol=1e-6)
    assert np.array_equal(sitk.GetArrayViewFromImage(part), mask[box] > 0)


@pytest.mark.parametrize("change, words", [
    (lambda part: part.SetSpacing((0.8, 0.8, 2.0)), "spacing"),
    (lambda part: part.SetDirection((0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)), "direction"),
    (lambda part: part.SetOrigin((10.0, 20.0, -1500.0 + 2.5 * 2.5)), "between the voxels"),  # half a slice off
    (lambda part: part.SetOrigin((10.0, 20.0, -1500.0 + 2.5 * 9)), "reaches outside"),  # slices 9-10 of 10
    (lambda part: part.SetOrigin((10.0 - 0.8, 20.0, -1500.0)), "reaches outside"),  # a column before the first
])
def test_a_box_off_the_grids_voxels_is_refused_with_what_differs(change, words):
    grid = Grid(size=(8, 8, 10), spacing=(0.8, 0.8, 2.5), origin=(10.0, 20.0, -1500.0))
    part = box_image(np.ones((2, 3, 3), np.uint8), (slice(0, 2), slice(0, 3), slice(0, 3)), grid)
    assert on_grid(part, grid)[:2, :3, :3].all()
    change(part)
    with pytest.raises(ValueError, match=words):
        on_grid(part, grid)


def test_a_header_rounded_to_float32_is_still_on_the_grid():
    grid = Grid(size=(8, 8, 10), spacing=(0.7, 0.7, 2.5), origin=(-200.1, 150.3, -1500.3))
    part = box_image(np.ones((10, 8, 8), np.uint8), (slice(4, 5), slice(3, 5), slice(2, 4)), grid)
    assert part.GetSize() == (2, 2, 1)
    part.SetOrigin(tuple(float(np.float32(v)) for v in part.GetOrigin()))
    assert box_on_grid(Grid.of(part), grid) == (slice(4, 5), slice(3, 5), slice(2, 4))


@settings(max_examples=60, deadline=None)
@given(grids_and_masks(), st.permutations([0, 1, 2]), st.tuples(*[st.booleans()] * 3))
def test_the_grids_own_voxels_stored_in_another_axis_order_are_put_back_in_place(drawn, order, flips):
    grid, mask = drawn
    stored = sitk.Flip(sitk.PermuteAxes(whole(mask, grid), list(order)), list(flips))  # same voxels, same places
    np.testing.assert_array_equal(reordered_on_grid(stored, grid), mask)


def test_voxels_that_are_not_the_grids_own_are_not_reordered():
    grid = Grid(size=(6, 5, 4), spacing=(0.8, 0.8, 2.5))
    mask = np.ones((4, 5, 6), np.uint8)
    rotated = whole(mask, grid)
    rotated.SetDirection(tuple(Rotation.from_rotvec([0.0, 0.0, 0.2]).as_matrix().ravel()))
    shifted = whole(mask, grid)
    shifted.SetOrigin((0.4, 0.0, 0.0))  # half a voxel
    outside = sitk.Flip(whole(mask, grid), [True, False, False], flipAboutOrigin=True)  # mirrored out of the grid
    stretched = sitk.Flip(whole(mask, grid), [False, False, True])
    stretched.SetSpacing((0.8, 0.8, 2.5 * 1.0009))  # 0.09 %: over 800 slices the last would land one further
    for image, words in ((rotated, "not the grid's"), (shifted, "between"), (outside, "of a grid of size"),
                         (stretched, "spacing")):
        with pytest.raises(ValueError, match=words):
            reordered_on_grid(image, grid)
