"""inference.registration, inference.refinement and inference.result: behaviour the other tests left unpinned (found by
mutation testing). Small arrays and fake networks: the whole file runs in about a second."""

import numpy as np
import pytest

from gastric_propagate.inference import registration
from gastric_propagate.inference.registration import MIN_HU_SD, WalkMemo, hu_window, median_2d
from gastric_propagate.inference.result import REVIEW_CONFIDENCE, SegmentationResult

SPACING = (0.8, 0.8, 2.5)


def _disc_volume(depth: int = 9, size: int = 48, radius: float = 9.0, seed: int = 0):
    """A static bright disc (60 HU) in noisy fat (-90 HU): every slice the same tumour."""
    _, y, x = np.mgrid[:depth, :size, :size]
    truth = ((x - size / 2) ** 2 + (y - size / 2) ** 2 <= radius ** 2).astype(np.uint8)
    image = np.where(truth > 0, 60.0, -90.0) + np.random.default_rng(seed).normal(0, 8, truth.shape)
    return image.astype(np.float32), truth


# The intensity window and its median filter

def test_hu_window_is_mean_plus_minus_multiplier_sd_with_the_sd_floored():
    """Mean ± multiplier x SD; a region more homogeneous than ``MIN_HU_SD`` gets that SD, so its window stays wide
    enough to follow."""
    values = np.array([0.0, 100.0])  # mean 50, SD 50
    assert hu_window(values, 1.5) == pytest.approx((-25.0, 125.0))
    flat = np.array([40.0, 42.0])    # SD 1: floored
    assert hu_window(flat, 2.0) == pytest.approx((41.0 - 2 * MIN_HU_SD, 41.0 + 2 * MIN_HU_SD))


def test_median_2d_removes_a_single_noisy_pixel():
    """A 3x3 median: one outlier pixel (noise) does not punch a hole in the intensity window."""
    slice_2d = np.full((7, 7), 50.0, np.float32)
    slice_2d[3, 3] = 1000.0
    np.testing.assert_array_equal(median_2d(slice_2d, SPACING), np.full((7, 7), 50.0))


def test_a_static_tumour_is_followed_both_ways_with_its_area():
    """A tumour that does not move or change: the walks go up and down from the painted slice and keep its area (the
    warped outline thresholded at 0.5, the window's rim given back)."""
    image, truth = _disc_volume()
    painted = truth[4] > 0
    mask = registration.propagate_by_registration(image, SPACING, 4, painted, transform="demons", iterations=5)
    assert mask[3].any() and mask[5].any()
    assert abs(int(mask[5].sum()) - int(painted.sum())) <= 0.05 * painted.sum()


# The walk

def test_the_registration_crop_is_margin_mm_around_the_mask_in_each_axis(monkeypatch):
    """``margin_mm`` is in mm: at 0.5 mm x 1 mm pixels, 6 mm is 12 pixels along x and 6 along y (each step's crop)."""
    image, truth = _disc_volume(depth=3, size=64)
    painted = truth[1] > 0
    ys, xs = np.nonzero(painted)
    shapes = []
    real = registration.warp_mask

    def spy(moving, fixed, moving_mask, spacing_xy, **kwargs):
        shapes.append(moving.shape)
        return real(moving, fixed, moving_mask, spacing_xy, **kwargs)

    monkeypatch.setattr(registration, "warp_mask", spy)
    registration.propagate_by_registration(image, (0.5, 1.0, 2.5), 1, painted, margin_mm=6.0, extent_factor=5.0,
                                           transform="demons", iterations=2)
    expected = (np.ptp(ys) + 1 + 2 * 6, np.ptp(xs) + 1 + 2 * 12)
    assert shapes and shapes[0] == expected


def test_a_dark_cleft_splits_off_a_part_that_is_dropped_and_a_necrotic_core_is_filled():
    """What the window keeps is reduced to its largest component (a sliver cut off by a dark cleft goes) and its
    holes are filled (a dark core inside the tumour stays tumour)."""
    image, truth = _disc_volume(depth=3, size=64, radius=14.0)
    target = image[2]
    target[:, 38:42] = -90.0          # a dark cleft: the disc's part beyond x = 42 is cut off
    target[27:37, 22:32] = -90.0      # a 10 x 10 dark core
    mask = registration.propagate_by_registration(image, SPACING, 1, truth[1] > 0, transform="demons",
                                                  iterations=2, extent_factor=5.0)
    assert mask[2].any()
    assert not mask[2][:, 44:].any(), "the part beyond the cleft is not the largest component"
    assert mask[2][30:34, 25:29].all(), "the dark core is a hole, filled"


def test_pixels_brighter_than_the_window_are_not_followed():
    """The window has an upper bound too: where the next slice is far brighter than the painted tissue (bone,
    contrast) within the warped outline, those pixels are dropped (all but the one-pixel rim given back)."""
    image, truth = _disc_volume(depth=3, size=64, radius=14.0)
    image[2][:, 36:] = 700.0  # the disc's part beyond x = 36 turned bright
    mask = registration.propagate_by_registration(image, SPACING, 1, truth[1] > 0, transform="demons",
                                                  iterations=2, extent_factor=5.0)
    assert mask[2].any() and not mask[2][:, 38:].any()


def test_a_walk_stops_where_less_than_half_the_warped_outline_is_in_the_window():
    """Where most of the warped outline left the painted tissue's HU (here 60 % of the disc turned to fat), the walk
    ends there: the 40 % still in the window is not followed on its own."""
    image, truth = _disc_volume(depth=4, size=64, radius=14.0)
    ys, xs = np.nonzero(truth[2])
    cut = np.percentile(xs, 60)
    image[2][truth[2] > 0] = np.where(xs < cut, -90.0, 60.0)
    mask = registration.propagate_by_registration(image, SPACING, 1, truth[1] > 0, transform="demons",
                                                  iterations=2, extent_factor=5.0)
    assert mask[0].any() and not mask[2:].any()


def test_a_walk_ends_where_opening_leaves_nothing():
    """Tissue in the window only as stripes two pixels wide (wide enough to outlive the 3x3 median, too thin for the
    opening): nothing is left, the mask vanishes and the walk ends there (nothing on that slice or beyond)."""
    image, truth = _disc_volume(depth=4, size=64, radius=14.0)
    columns = np.arange(64)
    image[2][:, (columns // 2) % 2 == 1] = -90.0  # two columns tissue, two fat, ...
    mask = registration.propagate_by_registration(image, SPACING, 1, truth[1] > 0, transform="demons",
                                                  iterations=2, extent_factor=5.0, min_inside_window=0.3)
    assert mask[0].any() and not mask[2:].any()


def test_a_bright_bone_moving_the_other_way_does_not_decide_how_the_tumour_moved():
    """The affine registration compares HU clipped to ``REGISTRATION_HU``: a small rib (1500 HU) moving 3 pixels one
    way while the tumour moves 3 pixels the other does not drag the outline with it (taken at face value, its
    squared differences outweigh the tumour's and the warped outline's Dice falls to about 0.7)."""
    from gastric_propagate.metrics import dice

    y, x = np.mgrid[:48, :48]

    def frame(tumour_dx, bone_dx):
        tumour = (x - 22 - tumour_dx) ** 2 + (y - 24) ** 2 <= 8 ** 2
        image = np.where(tumour, 60.0, -90.0)
        image[30:32, 36 + bone_dx:38 + bone_dx] = 1500.0
        return image.astype(np.float32), tumour

    (moving, moving_mask), (fixed, fixed_mask) = frame(0, 0), frame(3, -3)
    warped = registration.warp_mask(moving, fixed, moving_mask, (1.0, 1.0))
    assert dice(warped, fixed_mask) > 0.9 > dice(moving_mask, fixed_mask) + 0.1


def test_walks_reach_the_volume_s_first_and_last_slices():
    """Without limits the walks go as far as the tumour, its reach and the volume allow: a tumour through the whole
    (short) volume is followed onto slice 0 and the last slice."""
    image, truth = _disc_volume(depth=5)
    mask = registration.propagate_by_registration(image, SPACING, 3, truth[3] > 0, transform="demons", iterations=2,
                                                  extent_factor=5.0)
    assert all(mask[k].any() for k in range(5))


def test_walks_polled_to_stop_end_where_they_are():
    """``should_stop`` is polled before each step: once it says stop, no further slice is registered and the mask
    holds what was walked (here nothing beyond the painted slice)."""
    image, truth = _disc_volume()
    painted = truth[4] > 0
    mask = registration.propagate_by_registration(image, SPACING, 4, painted, transform="demons", iterations=2,
                                                  should_stop=lambda: True)
    np.testing.assert_array_equal(np.flatnonzero(mask.any(axis=(1, 2))), [4])
    np.testing.assert_array_equal(mask[4], painted)


def test_a_failed_affine_registration_keeps_the_mask_in_place(monkeypatch):
    """When SimpleITK's registration fails (too few overlapping samples after a wild step), the mask stays where it
    was, as copying the slice would."""
    import SimpleITK as sitk

    def failing(self, fixed, moving):
        raise RuntimeError("too few samples")

    monkeypatch.setattr(sitk.ImageRegistrationMethod, "Execute", failing)
    image, truth = _disc_volume(depth=2)
    moving_mask = truth[0] > 0
    warped = registration.warp_mask(image[0], image[1], moving_mask, (0.8, 0.8))
    np.testing.assert_array_equal(warped, moving_mask)


def test_warping_by_a_fraction_of_a_pixel_keeps_the_area():
    """The warped mask is the resampled mask thresholded at 0.5: a sub-pixel move neither grows nor shrinks it."""
    _, y, x = np.mgrid[:2, :48, :48]
    truth = ((x - 24 - 0.5 * np.arange(2)[:, None, None]) ** 2 + (y - 24) ** 2 <= 10 ** 2)
    image = np.where(truth, 60.0, -90.0).astype(np.float32)
    warped = registration.warp_mask(image[0], image[1], truth[0], (1.0, 1.0))
    assert abs(int(warped.sum()) - int(truth[0].sum())) <= 0.03 * truth[0].sum()


# WalkMemo

def _walk(first, last, shape=(4, 5)):
    step = 1 if last >= first else -1
    return {t: np.full(shape, t % 2 == 0) for t in range(first, last + step, step)}


def test_a_walk_stopped_at_its_limit_is_served_up_to_that_limit_and_no_further():
    """Walked up to slice 15 and stopped there by the limit: a run needing up to 13 or 15 gets slices 11..13 or
    11..15 (its limit included); one needing 16 must walk again."""
    memo = WalkMemo()
    memo.remember("up", 15, False, _walk(11, 15))
    assert sorted(memo.recall("up", 13, 1)) == [11, 12, 13]
    assert sorted(memo.recall("up", 15, 1)) == [11, 12, 13, 14, 15]
    assert memo.recall("up", 16, 1) is None
    np.testing.assert_array_equal(memo.recall("up", 15, 1)[12], np.ones((4, 5), bool))
    memo.remember("down", 5, False, _walk(9, 5))
    assert sorted(memo.recall("down", 7, -1)) == [7, 8, 9]
    assert memo.recall("down", 4, -1) is None
    assert memo.recall("unknown", 15, 1) is None


def test_a_walk_that_ended_by_itself_is_served_for_any_limit():
    """The tumour (or the volume) ended the walk: a run with a further limit gets the same slices."""
    memo = WalkMemo()
    memo.remember("up", 30, True, _walk(11, 14))
    assert sorted(memo.recall("up", 40, 1)) == [11, 12, 13, 14]


def test_the_memo_keeps_the_last_capacity_walks_most_recently_used_last():
    """``capacity`` walks are kept; the one used least recently (remembered or served) goes first."""
    memo = WalkMemo(capacity=2)
    for key in ("a", "b"):
        memo.remember(key, 5, True, _walk(1, 2))
    assert memo.recall("a", 5, 1) is not None  # a is now the most recent
    memo.remember("c", 5, True, _walk(1, 2))
    assert memo.recall("b", 5, 1) is None
    assert memo.recall("a", 5, 1) is not None and memo.recall("c", 5, 1) is not None


@pytest.mark.parametrize("change", ["multiplier", "outline"])
def test_a_walk_is_not_served_to_a_run_with_another_setting_or_outline(change):
    """A walk is known by everything it depends on: another multiplier, or another outline of the same area on the
    same slice, walks again and gives what a run without the memo gives."""
    image, truth = _disc_volume(depth=5)
    painted = truth[2] > 0
    memo = (WalkMemo(), "ct")
    registration.propagate_by_registration(image, SPACING, 2, painted, transform="demons", iterations=2, memo=memo)
    if change == "multiplier":
        kwargs, outline = {"multiplier": 0.1}, painted
    else:
        kwargs, outline = {}, np.roll(painted, 3, axis=1)
    served = registration.propagate_by_registration(image, SPACING, 2, outline, transform="demons", iterations=2,
                                                    memo=memo, **kwargs)
    plain = registration.propagate_by_registration(image, SPACING, 2, outline, transform="demons", iterations=2,
                                                   **kwargs)
    np.testing.assert_array_equal(served, plain)


# The refiner's input and batches

def test_refiner_input_is_the_three_slices_images_then_their_masks_clamped_at_the_ends():
    """Channels: image k-1, k, k+1, then coarse k-1, k, k+1; the first and last slices repeat themselves."""
    from gastric_propagate.inference.refinement import refiner_input

    image = np.arange(5, dtype=np.float32)[:, None, None] * np.ones((5, 2, 2), np.float32)
    coarse = 10 + image
    stacked = refiner_input(image, coarse, [0, 2, 4])
    np.testing.assert_array_equal(stacked[:, :, 0, 0], [[0, 0, 1, 10, 10, 11], [1, 2, 3, 11, 12, 13],
                                                        [3, 4, 4, 13, 14, 14]])


def test_refine_sees_the_coarse_mask_binarised_and_answers_only_for_its_slices():
    """The refiner is given the proposer's probabilities binarised at 0.5, every requested slice (more than one
    batch of them), and the other slices of the answer are 0."""
    from gastric_propagate.inference import refinement

    depth = refinement.BATCH_SLICES + 8
    image = np.zeros((depth, 3, 3), np.float32)
    coarse = np.full((depth, 3, 3), 0.7, np.float32)
    coarse[::2] = 0.3
    slices = list(range(1, depth))

    def network(stacked):  # answers the coarse mask of slice k, as the refiner saw it
        return stacked[:, 4]

    refined = refinement.refine(network, image, coarse, slices)
    assert refined.shape == coarse.shape
    assert (refined[0] == 0).all()
    np.testing.assert_array_equal(refined[1:, 0, 0], (coarse[1:, 0, 0] > 0.5).astype(np.float32))


# SegmentationResult

def _result(confidence, anchors=(5,), cut_back=(), mask=None, found_when_turned=()):
    mask = np.zeros((50, 4, 4), np.uint8) if mask is None else mask
    return SegmentationResult(mask=mask, proposer_mask=mask, slice_confidence=dict(confidence),
                              anchor_slices=list(anchors), stop_reasons={}, seconds=0.0, device="cpu",
                              cut_back=list(cut_back), found_when_turned=list(found_when_turned))


def test_slices_to_review_are_below_the_threshold_or_cut_back_never_the_anchor_in_slice_order():
    """Flagged: non-anchor slices strictly below ``REVIEW_CONFIDENCE`` (0.3, docs/decisions.md) and every cut-back
    slice, however confident; a painted slice never, however low its confidence; listed in slice order."""
    assert REVIEW_CONFIDENCE == 0.3
    result = _result({5: 0.0, 40: 0.1, 3: 0.29, 8: 0.2, 33: 0.05, 12: 0.3, 13: 0.4, 14: 0.9}, cut_back=[14, 40])
    assert result.slices_to_review() == [3, 8, 14, 33, 40]
    assert result.review_reasons() == {3: ["low_confidence"], 8: ["low_confidence"], 14: ["cut_back"],
                                       33: ["low_confidence"], 40: ["low_confidence", "cut_back"]}


def test_slices_only_the_proposers_other_orientations_found_are_reviewed_however_confident():
    result = _result({5: 0.0, 12: 0.3, 13: 0.9, 14: 0.95}, found_when_turned=[13])
    assert result.slices_to_review() == [13]
    assert result.review_reasons() == {13: ["found_when_turned"]}


def test_least_confident_slices_are_the_lowest_first_without_the_anchors():
    """The ``count`` least confident visited slices, least confident first; painted slices are not candidates."""
    result = _result({5: 0.0, 6: 0.5, 7: 0.2, 8: 0.9, 9: 0.1}, anchors=(5,))
    assert result.least_confident_slices(2) == [9, 7]
    assert result.least_confident_slices(10) == [9, 7, 6, 8]


def test_slice_range_is_none_for_an_empty_result():
    """An empty result has no slice range (not (0, 0), which would name slice 0)."""
    assert _result({}).slice_range() is None
    mask = np.zeros((50, 4, 4), np.uint8)
    mask[7:12, 1, 1] = 1
    assert _result({}, mask=mask).slice_range() == (7, 11)
