"""data.annotation: the painted slices, the largest cross-section a radiologist paints, and slice lists in messages."""

import numpy as np
import pytest

from gastric_propagate.data.annotation import (annotation_from_label, describe_slices, largest_cross_section_index,
                                               painted_slices, side_view, slice_areas)


def test_a_slice_holding_any_non_zero_voxel_is_painted_negative_ones_too():
    mask = np.zeros((5, 4, 4), dtype=np.int16)
    mask[1, 2, 3], mask[3, 0, 0] = 1, -1
    assert painted_slices(mask) == [1, 3]


def test_slice_areas_count_voxels_whatever_their_label_value():
    label = np.zeros((3, 4, 4), dtype=np.uint8)
    label[0, :2, :2] = 2  # 4 voxels of label 2
    label[2, :3, :1] = 1
    assert slice_areas(label).tolist() == [4, 0, 3]
    assert largest_cross_section_index(label) == 0


def test_an_empty_label_has_no_largest_cross_section():
    with pytest.raises(ValueError, match="empty"):
        largest_cross_section_index(np.zeros((3, 4, 4), np.uint8))


def test_the_annotation_is_a_binary_copy_of_the_largest_or_the_named_slice_slice_0_included():
    label = np.zeros((4, 5, 5), dtype=np.uint8)
    label[0, 1:3, 1:3] = 3  # 4 voxels
    label[2, :, :] = 2  # 25 voxels: the largest
    largest = annotation_from_label(label)
    assert largest.dtype == np.uint8 and painted_slices(largest) == [2] and (largest[2] == 1).all()
    first = annotation_from_label(label, 0)
    assert painted_slices(first) == [0] and first.sum() == 4 and first.max() == 1


def test_a_slice_list_shows_eight_slices_then_an_ellipsis():
    assert describe_slices(list(range(8))) == "0, 1, 2, 3, 4, 5, 6, 7"
    assert describe_slices(list(range(9))) == "0, 1, 2, 3, 4, 5, 6, 7, ..."
    assert describe_slices([3, 9], limit=1) == "3, ..."


AXES_LPS = np.diag([1.0, 1.0, 1.0])  # I left-right, J front-back, K head-foot
AXES_SAGITTAL_SERIES = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # K runs left-right


@pytest.mark.parametrize("axis, view", [(2, "sagittal"), (1, "coronal")])
def test_one_plane_across_several_axial_slices_is_a_side_view(axis, view):
    painted = np.zeros((10, 20, 20), np.uint8)
    plane = [slice(2, 7), slice(5, 15), slice(5, 15)]
    plane[axis] = 9
    painted[tuple(plane)] = 1
    assert side_view(painted, AXES_LPS) == view
    assert side_view(painted[3:4], AXES_LPS) is None  # one slice: an axial painting, however thin


@pytest.mark.parametrize("thickness", [2, 3])
def test_a_sphere_brush_stroke_a_few_planes_thick_across_many_slices_is_a_side_view(thickness):
    painted = np.zeros((20, 30, 30), np.uint8)
    painted[2:2 + 3 * thickness, 5:25, 9:9 + thickness] = 1  # I planes 9.., across 3x as many K slices
    assert side_view(painted, AXES_LPS) == "sagittal"
    painted[2 + 3 * thickness - 1] = 0  # one slice fewer: a thin tumour painted on a few slices, not a stroke
    assert side_view(painted, AXES_LPS) is None
    slab = np.zeros_like(painted)
    slab[2:16, 5:25, 9:13] = 1  # 4 planes thick: not a brush stroke
    assert side_view(slab, AXES_LPS) is None
    keyframes = np.zeros_like(painted)
    keyframes[[2, 8, 14, 19], 10:13, 10:13] = 1  # a small lesion's axial keyframes, far apart: no stroke
    assert side_view(keyframes, AXES_LPS) is None


def test_a_cross_section_on_two_slices_is_no_side_view_and_a_non_axial_series_names_its_planes_view():
    painted = np.zeros((10, 20, 20), np.uint8)
    painted[3:5, 5:15, 5:15] = 1  # two axial slices, each a filled cross-section
    assert side_view(painted, AXES_LPS) is None
    plane = np.zeros_like(painted)
    plane[2:7, 5:15, 9] = 1  # one I plane: an axial plane where I runs head-foot, a coronal one where front-back
    # A sagittal series painted in the axial view: said so (the CT wants reorienting), not "painted on 5 slices".
    assert side_view(plane, np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])) == "axial"
    assert side_view(plane, AXES_SAGITTAL_SERIES) == "coronal"  # I runs front-back: that plane is a coronal one
