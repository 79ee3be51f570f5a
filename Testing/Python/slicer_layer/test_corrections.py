"""GastricPropagateLib.corrections: telling the reader's corrections from what the module wrote (pure numpy)."""

from __future__ import annotations

import numpy as np
import pytest

import scene_helpers  # noqa: F401  (skips without slicer-core; puts GastricPropagate/ on sys.path)
from GastricPropagateLib.corrections import (
    changedSlices,
    formatGeometry,
    formatLimits,
    formatSliceList,
    parseLimits,
    parseSliceList,
    planCorrections,
    sliceDigests,
    writtenOnOtherGeometry,
)

pytestmark = pytest.mark.slicer


def _written():
    mask = np.zeros((12, 8, 8), dtype=np.uint8)
    mask[3:10, 2:6, 2:6] = 1  # slices 3..9
    return mask


def test_unchanged_mask_has_no_changed_slices():
    mask = _written()
    assert changedSlices(sliceDigests(mask), mask.copy()) == ([], [])


def test_edited_new_and_erased_slices_are_told_apart():
    mask = _written()
    written = sliceDigests(mask)
    current = mask.copy()
    current[4, 2, 2] = 0       # edited
    current[10, 3:5, 3:5] = 1  # drawn on a slice the module left empty
    current[9] = 0             # erased
    assert changedSlices(written, current) == ([4, 10], [9])


def test_a_mask_on_another_grid_is_refused():
    with pytest.raises(ValueError, match="grid"):
        changedSlices(sliceDigests(_written()), np.zeros((12, 8, 9)))


def test_plan_keeps_earlier_corrections_and_turns_end_erasures_into_limits():
    mask = _written()
    current = mask.copy()
    current[6, 2, 2] = 0            # corrected now
    current[8:10] = 0               # erased at the top: the tumour ends at 7
    current[3] = 0                  # erased at the bottom: it starts at 4
    plan = planCorrections([5], current, sliceDigests(mask), previouslyCorrected=[4, 9])
    assert plan.anchors == [4, 6]   # 9 was corrected before but is now erased: no anchor
    assert plan.newlyCorrected == [6]
    assert (plan.minSlice, plan.maxSlice) == (4, 7)
    assert plan.erasedBetweenAnchors == [] and plan.changesAnything()


def test_erasure_between_anchors_is_reported_not_used():
    mask = _written()
    current = mask.copy()
    current[7] = 0
    current[9, 2, 2] = 0
    plan = planCorrections([5], current, sliceDigests(mask))
    assert plan.anchors == [9] and plan.erasedBetweenAnchors == [7]
    assert (plan.minSlice, plan.maxSlice) == (None, 9), "9, the result's last slice, trimmed: the end"


def test_limits_set_by_erasing_hold_in_later_rounds_until_the_reader_draws_beyond_them():
    mask = _written()
    plan = planCorrections([5], mask, sliceDigests(mask), previousLimits=(4, 7))
    assert (plan.minSlice, plan.maxSlice) == (4, 7) and not plan.changesAnything((4, 7))
    current = mask.copy()
    current[7] = 0  # erased further in this round: the tighter limit
    plan = planCorrections([5], current, sliceDigests(mask), previousLimits=(4, 7))
    assert (plan.minSlice, plan.maxSlice) == (4, 6) and plan.changesAnything((4, 7))
    beyond = np.zeros_like(mask)
    beyond[8, 1:3, 1:3] = 1  # the reader drew slice 8, beyond the old upper limit: that side's limit goes
    plan = planCorrections([5], mask | beyond, sliceDigests(mask), previousLimits=(4, 7))
    assert plan.anchors == [8] and (plan.minSlice, plan.maxSlice) == (4, None)
    assert parseLimits(formatLimits(None, 7)) == (None, 7) and parseLimits("") == (None, None)
    assert parseLimits("x,3") == (None, None)


def test_an_edited_end_slice_stays_the_end_until_the_reader_draws_beyond_it():
    """The reader corrected the result's first or last slice and drew nothing beyond: the tumour ends there.
    Re-propagated, the result went on past such slices (6 of 12 in a probe on real lesions, never rightly)."""
    mask = _written()  # slices 3..9
    written = sliceDigests(mask)
    ends = mask.copy()
    ends[9] = 0
    ends[9, 3:5, 3:5] = 1  # the top end redrawn smaller
    ends[3, 1:7, 1:7] = 1  # the bottom end redrawn larger: it ends there all the same
    plan = planCorrections([5], ends, written)
    assert plan.anchors == [3, 9] and (plan.minSlice, plan.maxSlice) == (3, 9)
    beyond = ends.copy()
    beyond[10, 3:5, 3:5] = 1  # a slice drawn beyond the top end: it goes on from there
    plan = planCorrections([5], beyond, written)
    assert plan.anchors == [3, 9, 10] and (plan.minSlice, plan.maxSlice) == (3, None)
    inner = mask.copy()
    inner[6, 2, 2] = 0  # a slice inside the tumour: no end
    plan = planCorrections([5], inner, written)
    assert (plan.minSlice, plan.maxSlice) == (None, None)


def test_nothing_corrected_changes_nothing():
    mask = _written()
    assert not planCorrections([5], mask, sliceDigests(mask), previouslyCorrected=[6]).changesAnything()


def test_slice_lists_round_trip():
    assert parseSliceList(formatSliceList([9, 4, 4])) == [4, 9]
    assert parseSliceList("") == []


def test_the_written_geometry_is_told_apart_from_another_volume_s_and_an_old_or_unreadable_record_is_not_held():
    ijkToRas = np.array([[-0.95, 0.2, 0.0, -102.14], [-0.2, -0.95, 0.1, -100.44], [0.0, 0.08, 1.23, -230.75],
                         [0.0, 0.0, 0.0, 1.0]])
    written = formatGeometry(ijkToRas)
    assert not writtenOnOtherGeometry(written, ijkToRas + 4e-4)  # what a save and reload may round
    shifted = ijkToRas.copy()
    shifted[:3, 3] += 3 * shifted[:3, 2]  # the same grid, three slices further on
    assert writtenOnOtherGeometry(written, shifted)
    assert not writtenOnOtherGeometry("", shifted) and not writtenOnOtherGeometry("1 2 x", shifted)
    assert not writtenOnOtherGeometry("1 2 3", shifted)


def test_the_record_matches_when_either_the_local_or_the_world_geometry_still_does():
    local, world = np.eye(4), np.eye(4)
    world[0, 3] = 40.0  # under a transform
    written = formatGeometry(local, world)
    moved = world.copy()
    moved[0, 3] = 45.0  # the transform edited: the local geometry holds
    hardened = world  # hardened: the node's own matrix is now the world one
    resampled = np.diag([2.0, 2.0, 2.0, 1.0])
    assert not writtenOnOtherGeometry(written, local, moved)
    assert not writtenOnOtherGeometry(written, hardened, hardened)
    assert writtenOnOtherGeometry(written, resampled, resampled)
