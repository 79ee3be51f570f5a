"""inference.consensus and inference.registration: the vote and its two classical opinions."""

import numpy as np
import pytest
from scipy import ndimage
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gastric_propagate.data.annotation import annotation_from_label
from gastric_propagate.inference.consensus import (copy_along_z, keep_connected, larger_neighbour, majority,
                                                   register_anchors, take_vote,
                                                   tapered_copy, vote_window)
from gastric_propagate.inference import registration
from gastric_propagate.inference.registration import propagate_by_registration, warp_mask
from gastric_propagate.metrics import dice

SPACING = (1.0, 1.0, 2.0)


def _shifting_disc(shift_per_slice: float = 1.5, depth: int = 21, size: int = 64, seed: int = 0):
    """A bright disc of radius 10 mm whose centre moves ``shift_per_slice`` mm along x per slice; noisy fat around."""
    z, y, x = np.mgrid[:depth, :size, :size]
    centre_x = size / 2 + shift_per_slice * (z - depth // 2)
    radius = 10.0 * np.sqrt(np.clip(1 - ((z - depth // 2) * SPACING[2] / 12.0) ** 2, 0, 1))
    truth = ((x - centre_x) ** 2 + (y - size / 2) ** 2 <= radius ** 2).astype(np.uint8)
    image = np.where(truth > 0, 60.0, -90.0) + np.random.default_rng(seed).normal(0, 10, truth.shape)
    return image.astype(np.float32), truth


@given(arrays(np.uint8, (3, 4, 5), elements=st.integers(0, 1)), arrays(np.uint8, (3, 4, 5), elements=st.integers(0, 1)),
       arrays(np.uint8, (3, 4, 5), elements=st.integers(0, 1)))
@settings(max_examples=50, deadline=None)
def test_majority_holds_a_voxel_exactly_when_two_of_three_do(a, b, c):
    voted = majority(a, b, c)
    assert voted.dtype == np.uint8
    np.testing.assert_array_equal(voted, ((a & b) | (a & c) | (b & c)))


def test_copy_along_z_reaches_the_given_share_of_the_equivalent_diameter():
    painted = np.zeros((40, 40), dtype=bool)
    painted[10:30, 10:30] = True  # 400 mm2 -> equivalent diameter 22.6 mm -> x 0.5 = 11.3 mm -> +-6 slices of 2 mm
    copied = copy_along_z((30, 40, 40), 12, painted, SPACING, extent_factor=0.5)
    assert [k for k in range(30) if copied[k].any()] == list(range(6, 19))
    assert all((copied[k] == painted).all() for k in range(6, 19))
    near_edge = copy_along_z((30, 40, 40), 2, painted, SPACING, extent_factor=0.5)  # clipped at the first slice
    assert [k for k in range(30) if near_edge[k].any()] == list(range(0, 9))
    longer = copy_along_z((30, 40, 40), 12, painted, SPACING, extent_factor=0.75)  # 17.0 mm -> +-8 slices
    assert [k for k in range(30) if longer[k].any()] == list(range(4, 21))


def test_the_tapered_copy_narrows_like_an_ellipsoid_towards_its_ends():
    z, y, x = np.mgrid[:1, :80, :80]
    painted = ((x[0] - 40) ** 2 + (y[0] - 40) ** 2 <= 15 ** 2)  # radius 15 mm: half-length 0.75 x 30 = 22.5 mm
    tapered = tapered_copy((41, 80, 80), 20, painted, SPACING, extent_factor=0.75)
    np.testing.assert_array_equal(tapered[20], painted)
    areas = tapered.sum(axis=(1, 2))
    assert [k for k in range(41) if areas[k]] == list(range(9, 32))  # 11 slices of 2 mm each way: 22 mm < 22.5 mm
    for d in range(1, 12):
        assert areas[20 + d] == areas[20 - d] and areas[20 + d] <= areas[20 + d - 1]
        radius = 15.0 * np.sqrt(1 - (2.0 * d / 22.5) ** 2)  # an ellipsoid's cross-section, less a pixel's shrink
        assert np.pi * (radius - 0.5) ** 2 <= areas[20 + d] <= np.pi * (radius + 1.5) ** 2
    assert (tapered <= copy_along_z((41, 80, 80), 20, painted, SPACING, extent_factor=0.75)).all()


def test_the_vote_between_two_anchors_leaves_no_gap_and_keeps_both():
    """A long bright cylinder painted on two slices 16 slices (32 mm) apart, further than one anchor's reach
    (0.75 x 22.6 mm each way): the slices between them are tumour, even where the networks found nothing."""
    z, y, x = np.mgrid[:40, :48, :48]
    truth = ((x - 24) ** 2 + (y - 24) ** 2 <= 12 ** 2).astype(np.uint8)
    image = (np.where(truth > 0, 60.0, -90.0) + np.random.default_rng(0).normal(0, 8, truth.shape)).astype(np.float32)
    anchors = {12: truth[12] > 0, 28: ndimage.binary_erosion(truth[28], iterations=2)}  # the upper one drawn tighter
    networks = np.zeros_like(truth)
    mask, (_, registered, copied) = take_vote(networks, image, SPACING, anchors, (0, 39))
    for k, painted in anchors.items():
        np.testing.assert_array_equal(mask[k], painted)
    assert all(mask[k].sum() > 0.8 * truth[k].sum() for k in range(13, 28))
    assert all((copied[k] == anchors[12]).all() for k in range(13, 28))  # the larger outline between them
    assert not mask[:4].any() and not mask[37:].any()  # beyond each outer anchor: its own reach (8 slices)


def test_a_registration_computed_beforehand_gives_the_same_vote():
    """The pipeline starts the registration beside the networks and hands it to the vote: nothing may change."""
    z, y, x = np.mgrid[:40, :48, :48]
    truth = ((x - 24) ** 2 + (y - 24) ** 2 <= (12 - 0.3 * abs(z - 20)) ** 2).astype(np.uint8)
    image = (np.where(truth > 0, 60.0, -90.0) + np.random.default_rng(1).normal(0, 8, truth.shape)).astype(np.float32)
    anchors = {14: truth[14] > 0, 26: truth[26] > 0}
    networks = ndimage.binary_erosion(truth, iterations=1).astype(np.uint8)
    chains = register_anchors(image, SPACING, anchors, registration_reach=3.0)
    assert sorted(chains) == [14, 26] and chains[14][20].any()
    given_chains = take_vote(networks, image, SPACING, anchors, (0, 39), registration_reach=3.0, chains=chains)
    computed = take_vote(networks, image, SPACING, anchors, (0, 39), registration_reach=3.0)
    np.testing.assert_array_equal(given_chains[0], computed[0])
    for given_opinion, computed_opinion in zip(given_chains[1], computed[1]):
        np.testing.assert_array_equal(given_opinion, computed_opinion)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("networks_grown", [2, -1])
def test_the_vote_in_its_box_equals_the_vote_over_the_whole_ct(seed, networks_grown):
    """The vote is worked out in the box around its opinions and pasted back; over the whole CT, by its definition
    (majority of the three on the window's slices, the slice limits, the anchor kept, the outline snapped, the parts
    apart from the anchor dropped), it is the same. Here the snap moves the outline (networks two pixels generous, or
    a pixel tight, around a bright disc in noise that the snap's median filter must read beyond the outline), and
    the networks hold voxels far from the tumour."""
    from gastric_propagate.inference.outline_snap import snap_outline

    image, truth = _shifting_disc(shift_per_slice=0.5, depth=31, size=96, seed=seed)
    image += np.random.default_rng(seed + 10).normal(0, 25, image.shape).astype(np.float32)
    k = 15
    painted = truth[k] > 0
    grow = ndimage.binary_dilation if networks_grown > 0 else ndimage.binary_erosion
    networks = grow(truth, iterations=abs(networks_grown)).astype(np.uint8)
    networks[k + 2, 2:6, 80:94] = 1  # a stray blob near the CT's edge, away from the tumour
    networks[k - 3, 40:60, 70:90] = 1  # a leak touching the tumour on one slice
    limits = (k - 20, k + 6)
    mask, (_, registered, copied) = take_vote(networks, image, SPACING, {k: painted}, limits)

    first, last = vote_window({k: painted}, SPACING)
    assert not (registered[:first].any() or registered[last + 1:].any() or copied[:first].any()
                or copied[last + 1:].any())
    whole = np.zeros_like(networks)
    whole[first:last + 1] = majority(networks, registered, copied)[first:last + 1]
    whole[limits[1] + 1:] = 0
    whole[k] = painted
    voted = keep_connected(whole, {k: painted})
    snapped = snap_outline(voted, image, SPACING, k, painted, fixed=[k])
    assert not np.array_equal(snapped, voted)  # the snap moved the outline
    np.testing.assert_array_equal(mask, keep_connected(snapped, {k: painted}))


def test_each_anchors_registration_stops_where_its_part_of_the_vote_ends_and_the_vote_is_unchanged(monkeypatch):
    """Between two anchors each registration needs to reach only the other: going further was work thrown away."""
    from gastric_propagate.inference import consensus

    z, y, x = np.mgrid[:40, :48, :48]
    truth = ((x - 24) ** 2 + (y - 24) ** 2 <= (12 - 0.3 * abs(z - 20)) ** 2).astype(np.uint8)
    image = (np.where(truth > 0, 60.0, -90.0) + np.random.default_rng(1).normal(0, 8, truth.shape)).astype(np.float32)
    anchors = {17: truth[17] > 0, 22: truth[22] > 0}
    networks = ndimage.binary_erosion(truth, iterations=1).astype(np.uint8)
    limited = register_anchors(image, SPACING, anchors)
    assert not limited[17][22:].any() and not limited[22][:18].any() and limited[17][21].any()

    def without_limits(*args, limits=None, **kwargs):
        return propagate_by_registration(*args, **kwargs)

    monkeypatch.setattr(consensus, "propagate_by_registration", without_limits)
    whole = register_anchors(image, SPACING, anchors)
    assert whole[17][23:].any() and whole[22][:17].any(), "unlimited, the walks run past the other anchor"
    for k in anchors:
        needed = slice(0, 22) if k == 17 else slice(18, 40)
        np.testing.assert_array_equal(limited[k][needed], whole[k][needed])
    votes = [take_vote(networks, image, SPACING, anchors, (0, 39), chains=chains) for chains in (limited, whole)]
    np.testing.assert_array_equal(votes[0][0], votes[1][0])
    for one, other in zip(votes[0][1], votes[1][1]):
        np.testing.assert_array_equal(one, other)


def test_a_vote_from_a_slice_that_is_not_the_largest_follows_the_tumour_beyond_the_copys_reach():
    """A cone widening along z, painted on a narrow slice; the networks are perfect here. The protocol's vote ends at
    the copy's reach (0.75 x 20 mm: 8 slices); from a slice that is not the largest, the registration reaches 3
    painted diameters (30 slices), so the networks and it carry the tumour on, wider than the painted outline."""
    z, y, x = np.mgrid[:40, :64, :64]
    truth = ((x - 32) ** 2 + (y - 32) ** 2 <= (6.0 + 0.4 * z) ** 2).astype(np.uint8)
    image = (np.where(truth > 0, 60.0, -90.0) + np.random.default_rng(0).normal(0, 8, truth.shape)).astype(np.float32)
    anchors = {10: truth[10] > 0}
    protocol, _ = take_vote(truth, image, SPACING, anchors, (0, 39))
    assert [k for k in range(40) if protocol[k].any()] == list(range(2, 19))
    wider, (_, registered, copied) = take_vote(truth, image, SPACING, anchors, (0, 39), registration_reach=3.0,
                                               taper=False)
    assert [k for k in range(40) if wider[k].any()] == list(range(40))
    assert registered[39].any() and not copied[19].any()  # the copy keeps its own reach
    assert (copied[18] == anchors[10]).all()  # straight, not tapered
    assert wider[30].sum() > 1.3 * anchors[10].sum()
    np.testing.assert_array_equal(wider[10], anchors[10])


def test_larger_neighbour_looks_half_a_painted_diameter_each_way():
    painted = np.zeros((40, 40), dtype=bool)
    painted[10:30, 10:30] = True  # 400 mm2: equivalent diameter 22.6 mm; half of it is 11.3 mm, 6 slices of 2 mm
    registered = np.zeros((30, 40, 40), dtype=np.uint8)
    registered[12] = painted
    registered[16, 8:32, 8:32] = 1  # 576 mm2, 4 slices up
    registered[4, 5:35, 5:35] = 1  # 900 mm2, but 8 slices down: out of reach
    assert larger_neighbour(registered, 12, painted, SPACING) == (16, 576 / 400)
    registered[16] = 0
    assert larger_neighbour(registered, 12, painted, SPACING) == (12, 1.0)


def test_keep_connected_drops_a_stray_blob():
    mask = np.zeros((5, 20, 20), dtype=np.uint8)
    mask[1:4, 5:10, 5:10] = 1
    mask[2, 15:18, 15:18] = 1  # not touching the painted part
    painted = mask[2].astype(bool) & (np.arange(20)[None, :] < 12)
    kept = keep_connected(mask, {2: painted})
    assert kept[1:4, 5:10, 5:10].all() and not kept[2, 15:18, 15:18].any()


def test_keep_connected_keeps_nothing_that_no_anchor_touches_one_part_or_several():
    """A part that no painted voxel touches is a stray, alone or beside others; an anchor outside the mask's slices
    touches nothing (it raised "need at least one array to concatenate")."""
    mask = np.zeros((6, 20, 20), dtype=np.uint8)
    mask[1:3, 5:10, 5:10] = 1
    painted = np.zeros((20, 20), bool)
    painted[6:9, 6:9] = True
    assert not keep_connected(mask, {4: painted}).any()  # one part, the anchor slice beside it
    assert not keep_connected(mask, {2: ~painted & (np.arange(20)[:, None] > 15)}).any()  # on its slice, not on it
    mask[1, 15:18, 15:18] = 1
    assert not keep_connected(mask, {5: painted}).any()  # two parts, the anchor past the mask's last slice
    np.testing.assert_array_equal(keep_connected(mask, {2: painted}) > 0, mask.astype(bool) & ~(
        np.arange(20)[None, :, None] >= 15))


def test_warp_mask_follows_a_shifted_disc():
    image, truth = _shifting_disc(shift_per_slice=3.0)
    k = 10
    window = (slice(8, 56), slice(4, 60))
    warped = warp_mask(image[k][window], image[k + 1][window], truth[k][window].astype(bool), (1.0, 1.0))
    copied_dice = dice(truth[k][window], truth[k + 1][window])
    assert dice(warped, truth[k + 1][window]) > copied_dice + 0.05


def test_registration_follows_a_moving_tumour_better_than_a_copy():
    image, truth = _shifting_disc()
    annotation = annotation_from_label(truth)
    k = int(np.flatnonzero(annotation.any(axis=(1, 2)))[0])
    registered = propagate_by_registration(image, SPACING, k, annotation[k] > 0)
    copied = copy_along_z(image.shape, k, annotation[k] > 0, SPACING, extent_factor=0.5)  # the registration's reach
    assert (registered[k] == annotation[k]).all()
    assert dice(registered, truth) > dice(copied, truth) + 0.05


@pytest.mark.parametrize("transform", ["affine", "demons"])
def test_registration_keeps_a_tumours_partial_volume_rim(transform):
    """A straight cylinder whose edge is blurred (partial volume): the intensity window alone would drop its rim
    (about 12 % of the area) on every propagated slice; the given-back rim keeps the painted area."""
    z, y, x = np.mgrid[:21, :64, :64]
    truth = ((x - 32) ** 2 + (y - 32) ** 2 <= 10 ** 2).astype(np.uint8)
    blurred = ndimage.gaussian_filter(np.where(truth > 0, 60.0, -90.0), (0, 1.0, 1.0))
    image = (blurred + np.random.default_rng(0).normal(0, 5, truth.shape)).astype(np.float32)
    painted = truth[10] > 0
    areas = {rim: propagate_by_registration(image, SPACING, 10, painted, transform=transform,
                                            restored_rim_px=rim).sum(axis=(1, 2))
             for rim in (0, 1)}
    propagated = [j for j in range(21) if j != 10 and areas[1][j]]
    assert len(propagated) >= 8
    assert all(abs(areas[1][j] - painted.sum()) <= 0.02 * painted.sum() for j in propagated)
    assert all(areas[0][j] < 0.95 * painted.sum() for j in propagated)  # what the rim restores


@pytest.mark.parametrize("edge", [False, True])
def test_the_painted_slices_hu_window_read_around_the_outline_gives_the_walk_of_the_whole_slice(monkeypatch, edge):
    """The registration reads the painted pixels' HU window from a 3x3 median over the outline's box and a pixel
    around it, not over the whole slice: the same window, so the same walk; also where the outline touches the
    slice's edge (where the median's boundary rule applies either way)."""
    image, truth = _shifting_disc(shift_per_slice=1.0)
    if edge:  # the tumour cut by the slice's edge
        image, truth = image[:, :, 22:], truth[:, :, 22:]
    image[10] += np.random.default_rng(1).normal(0, 40, image[10].shape).astype(np.float32)  # a noisy painted slice
    painted = truth[10] > 0
    assert painted[:, 0].any() == edge
    windows = []
    hu_window = registration.hu_window
    monkeypatch.setattr(registration, "hu_window", lambda *args: windows.append(hu_window(*args)) or windows[-1])
    boxed = propagate_by_registration(image, SPACING, 10, painted, transform="demons", iterations=10)
    monkeypatch.setattr(registration, "bounding_box", lambda mask, margin=0: (slice(None),) * mask.ndim)
    whole = propagate_by_registration(image, SPACING, 10, painted, transform="demons", iterations=10)
    assert windows[0] == windows[1]
    assert boxed[9].any() and boxed[11].any()
    np.testing.assert_array_equal(boxed, whole)


def test_registration_refuses_an_unknown_transform():
    image, truth = _shifting_disc()
    with pytest.raises(ValueError, match="affine"):
        propagate_by_registration(image, SPACING, 10, truth[10] > 0, transform="bspline")


def _counting_warps(monkeypatch):
    from gastric_propagate.inference import registration

    calls = []
    real = registration.warp_mask

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(registration, "warp_mask", counting)
    return calls


def test_walks_of_an_earlier_run_on_the_same_ct_are_served_again_exactly(monkeypatch):
    """A correction's re-propagation: the painted slice's walks are the first run's; only the corrected slice walks."""
    from gastric_propagate.inference.registration import WalkMemo

    z, y, x = np.mgrid[:40, :48, :48]
    truth = ((x - 24) ** 2 + (y - 24) ** 2 <= (12 - 0.3 * abs(z - 20)) ** 2).astype(np.uint8)
    image = (np.where(truth > 0, 60.0, -90.0) + np.random.default_rng(1).normal(0, 8, truth.shape)).astype(np.float32)
    first_run, correction = {20: truth[20] > 0}, {20: truth[20] > 0, 25: truth[25] > 0}
    from gastric_propagate.inference import consensus

    calls, memo, per_anchor = _counting_warps(monkeypatch), WalkMemo(), {}

    def counted(image, spacing, k, *args, **kwargs):  # the registration steps each anchor's walks take
        before = len(calls)
        chain = propagate_by_registration(image, spacing, k, *args, **kwargs)
        per_anchor[k] = len(calls) - before
        return chain

    monkeypatch.setattr(consensus, "propagate_by_registration", counted)

    def steps(run):
        per_anchor.clear()
        return run(), dict(per_anchor)

    plain = [steps(lambda: register_anchors(image, SPACING, anchors)) for anchors in (first_run, correction)]
    served = [steps(lambda: register_anchors(image, SPACING, anchors, memo=(memo, "ct 1")))
              for anchors in (first_run, correction)]
    assert served[0][1] == plain[0][1] and plain[1][1][20] > 0
    assert served[1][1] == {20: 0, 25: plain[1][1][25]}, "the correction walks from slice 25 only"
    for (expected, _), (got, _) in zip(plain, served):
        assert sorted(expected) == sorted(got)
        for k in expected:
            np.testing.assert_array_equal(expected[k], got[k])
    before = len(calls)
    register_anchors(image, SPACING, first_run, memo=(memo, "ct 2"))  # another CT's name: walked again
    assert len(calls) > before


def test_a_walk_stopped_by_its_limit_is_walked_again_when_a_run_needs_it_to_go_further(monkeypatch):
    from gastric_propagate.inference.registration import WalkMemo

    image, truth = _shifting_disc(shift_per_slice=1.0)
    painted = truth[10] > 0
    calls, memo = _counting_warps(monkeypatch), WalkMemo()
    short = propagate_by_registration(image, SPACING, 10, painted, limits=(8, 12), memo=(memo, "ct"))
    assert not short[:8].any() and not short[13:].any() and short[12].any()
    after_short = len(calls)
    np.testing.assert_array_equal(propagate_by_registration(image, SPACING, 10, painted, limits=(9, 11),
                                                            memo=(memo, "ct")),
                                  propagate_by_registration(image, SPACING, 10, painted, limits=(9, 11)))
    assert len(calls) == after_short + 2, "the narrower run was served (only the plain run's two steps walked)"
    longer = propagate_by_registration(image, SPACING, 10, painted, memo=(memo, "ct"))
    np.testing.assert_array_equal(longer, propagate_by_registration(image, SPACING, 10, painted))
    assert longer[:8].any() or longer[13:].any()


def _disc(radius, centre=(24, 24), size=48):
    y, x = np.mgrid[:size, :size]
    return (x - centre[1]) ** 2 + (y - centre[0]) ** 2 <= radius ** 2


def test_beyond_each_outer_anchor_the_vote_takes_that_anchor_s_registration_and_copy_and_keeps_the_limits():
    """Two anchors (slices 12 and 28) and each one's registration given as a different outline on every slice: below
    12 the registration and the tapered copy are slice 12's, above 28 slice 28's, between them either registration
    and the larger outline. The networks hold a wide disc everywhere, so the vote is registration or copy; the slice
    limits (8 and 33, inside the window 4..34) hold exactly."""
    depth = 40
    anchors = {12: _disc(10), 28: _disc(8)}
    chains = {12: np.repeat(_disc(9, (24, 21))[None], depth, 0).astype(np.uint8),
              28: np.repeat(_disc(7, (24, 27))[None], depth, 0).astype(np.uint8)}
    networks = np.repeat(_disc(14)[None], depth, 0).astype(np.uint8)
    image = np.zeros(networks.shape, np.float32)
    mask, (_, registered, copied) = take_vote(networks, image, SPACING, anchors, (8, 33), chains=chains, snap=False)
    first, last = vote_window(anchors, SPACING)
    assert (first, last) == (4, 34)
    below, above = (tapered_copy(networks.shape, k, anchors[k], SPACING) for k in (12, 28))
    for k in range(first, 12):
        np.testing.assert_array_equal(registered[k], chains[12][k])
        np.testing.assert_array_equal(copied[k], below[k])
    for k in range(13, 28):
        np.testing.assert_array_equal(registered[k], chains[12][k] | chains[28][k])
        np.testing.assert_array_equal(copied[k], anchors[12])
    for k in range(29, last + 1):
        np.testing.assert_array_equal(registered[k], chains[28][k])
        np.testing.assert_array_equal(copied[k], above[k])
    assert not registered[last + 1:].any() and not registered[:first].any()
    assert [k for k in range(depth) if mask[k].any()] == list(range(8, 34))
    np.testing.assert_array_equal(mask[20], registered[20] | copied[20])


def test_larger_neighbour_reaches_exactly_half_a_painted_diameter_each_way():
    """400 mm2 painted: half its equivalent diameter (22.6 mm) is 6 slices of 2 mm. A 576 mm2 slice 6 slices away is
    seen, either way; 7 slices away it is not."""
    painted = np.zeros((40, 40), dtype=bool)
    painted[10:30, 10:30] = True
    for offset, seen in ((6, True), (-6, True), (7, False), (-7, False)):
        registered = np.zeros((30, 40, 40), dtype=np.uint8)
        registered[12] = painted
        registered[12 + offset, 8:32, 8:32] = 1
        expected = (12 + offset, 576 / 400) if seen else (12, 1.0)
        assert larger_neighbour(registered, 12, painted, SPACING) == expected, offset


def test_the_outline_is_snapped_to_the_edge_level_of_the_largest_anchor():
    """A blurred cylinder painted on two slices: on slice 8 far out in the blur (the larger outline), on slice 14
    tight. The result's outline on the other slices follows the larger anchor's level: the generous one."""
    z, y, x = np.mgrid[:24, :64, :64]
    inside = (x - 32) ** 2 + (y - 32) ** 2 <= 12 ** 2
    image = ndimage.gaussian_filter(np.where(inside, 60.0, -90.0), (0, 1.2, 1.2))
    image = (image + np.random.default_rng(0).normal(0, 4, image.shape)).astype(np.float32)
    generous, tight = image > -60.0, image > 30.0
    anchors = {8: generous[8], 14: tight[14]}
    assert anchors[8].sum() > anchors[14].sum()
    networks = inside.astype(np.uint8)
    mask, _ = take_vote(networks, image, SPACING, anchors, (0, 23), chains={8: networks, 14: networks})
    np.testing.assert_array_equal(mask[14], tight[14])
    for k in (2, 4, 11, 18, 20):
        assert dice(mask[k], generous[k]) > 0.98, k


def test_between_two_anchors_further_apart_than_their_reach_each_registration_walks_to_the_other():
    """Anchors 16 slices apart, each reaching 9 slices (0.75 x 23.9 mm): between them the vote asks both
    registrations, so each walks the whole way to the other anchor (and no further), beyond them its own reach."""
    z, y, x = np.mgrid[:40, :48, :48]
    truth = ((x - 24) ** 2 + (y - 24) ** 2 <= 12 ** 2).astype(np.uint8)
    image = (np.where(truth > 0, 60.0, -90.0) + np.random.default_rng(0).normal(0, 8, truth.shape)).astype(np.float32)
    chains = register_anchors(image, SPACING, {12: truth[12] > 0, 28: truth[28] > 0})
    assert vote_window({12: truth[12], 28: truth[28]}, SPACING) == (3, 37)
    assert [k for k in range(40) if chains[12][k].any()] == list(range(3, 28))
    assert [k for k in range(40) if chains[28][k].any()] == list(range(13, 38))
