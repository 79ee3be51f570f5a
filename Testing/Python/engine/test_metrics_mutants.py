"""metrics: the edge cases and definitions the hand-worked tests of test_metrics.py leave open (found by mutation
testing)."""

import numpy as np
import pytest

from gastric_propagate.metrics import dice, hausdorff95_mm, volume_error_percent, volume_ml


def test_dice_reads_any_positive_label_as_the_mask():
    """Masks are read as > 0: a label map with value 2 (or probabilities' 0.0 / 1.0) counts as the mask."""
    a = np.zeros((1, 4, 4), np.uint8); a[0, :2] = 2
    b = np.zeros((1, 4, 4), np.float32); b[0, 1:3] = 1.0
    assert dice(a, b) == pytest.approx(0.5)


def test_volume_uses_every_spacing_and_counts_voxels_above_zero():
    """Voxels x (sx x sy x sz) mm3 / 1000: 2 voxels of 2 x 3 x 5 mm are 0.06 ml; zeros and negatives are not voxels."""
    mask = np.array([[[1, 0, 3, -1]]])
    assert volume_ml(mask, (2.0, 3.0, 5.0)) == pytest.approx(0.06)


def test_volume_error_is_signed_over_an_empty_reference_it_is_refused():
    """(prediction - truth) / truth x 100: an over-segmentation is positive; no truth voxels is an error, not a
    division by zero."""
    truth = np.zeros((1, 2, 5)); truth[0, 0] = 1  # 5 voxels
    prediction = np.zeros_like(truth); prediction[0, :, :4] = 1  # 8 voxels
    assert volume_error_percent(prediction, truth) == pytest.approx(60.0)
    with pytest.raises(ValueError, match="empty"):
        volume_error_percent(prediction, np.zeros_like(truth))


def test_hausdorff_of_two_empty_masks_is_zero():
    """Two empty masks agree: 0 mm (inf only when exactly one is empty)."""
    empty = np.zeros((3, 3, 3), bool)
    assert hausdorff95_mm(empty, empty, (1.0, 1.0, 1.0)) == 0.0


def test_hausdorff_is_symmetric_and_the_95th_percentile_of_both_directions():
    """A cube and the same cube with a one-voxel spur 6 voxels long: from the spur's tip to the cube the distance
    is 6, from the cube's surface to the spur's surface at most ~1: the 95th percentile of all surface distances
    ignores the spur's few voxels, and the order of the masks does not matter."""
    a = np.zeros((20, 20, 20), bool); a[5:12, 5:12, 5:12] = True
    b = a.copy(); b[8, 8, 12:18] = True  # a spur along +x
    forward, backward = hausdorff95_mm(a, b, (1.0, 1.0, 1.0)), hausdorff95_mm(b, a, (1.0, 1.0, 1.0))
    assert forward == backward
    assert forward <= 1.0
    assert float(np.max(np.abs(np.argwhere(b) - [8, 8, 11]))) == 6  # the spur reaches 6 voxels out


def test_hausdorff_counts_distances_from_both_surfaces():
    """A small cube inside a large one: from the small cube's surface to the large one's 4 voxels, from the large one's
    surface (its corners) further; the symmetric distance takes both, so it exceeds 4 mm."""
    large = np.zeros((24, 24, 24), bool); large[2:22, 2:22, 2:22] = True
    small = np.zeros_like(large); small[6:18, 6:18, 6:18] = True
    assert hausdorff95_mm(small, large, (1.0, 1.0, 1.0)) > 4.0
    assert hausdorff95_mm(large, small, (1.0, 1.0, 1.0)) == hausdorff95_mm(small, large, (1.0, 1.0, 1.0))


def test_hausdorff_takes_the_slice_spacing_for_a_shift_along_z():
    """Arrays are (z, y, x) and spacings (x, y, z): a cube shifted by one slice at 4 mm slices is 4 mm away."""
    a = np.zeros((12, 12, 12), bool); a[3:9, 3:9, 3:9] = True
    b = np.roll(a, 1, axis=0)
    assert hausdorff95_mm(a, b, (1.0, 1.0, 4.0)) == pytest.approx(4.0)
