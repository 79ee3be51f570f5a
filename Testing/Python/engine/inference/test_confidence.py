"""Per-slice confidence: 1 on painted slices, lower far away and where the shape changes abruptly."""

import numpy as np

from gastric_propagate.inference.confidence import slice_confidence


def _disc(size, radius, centre=(16, 16)):
    y, x = np.mgrid[:size, :size]
    return ((y - centre[0]) ** 2 + (x - centre[1]) ** 2 < radius ** 2).astype(np.uint8)


def test_confidence_falls_with_distance_and_with_abrupt_change():
    mask = np.zeros((9, 32, 32), np.uint8)
    for k in range(9):
        mask[k] = _disc(32, 8)
    mask[8] = _disc(32, 8, centre=(16, 24))  # the outline jumps sideways on the last slice
    confidence = slice_confidence(mask, [4], range(9), (1.0, 1.0, 2.0))
    assert confidence[4] == 1.0
    assert confidence[5] > confidence[6] > confidence[7]  # same shape, further away
    assert confidence[3] == confidence[5]                 # symmetric about the painted slice
    assert confidence[8] < 0.5 * confidence[7]            # the jump
    assert all(0.0 <= c <= 1.0 for c in confidence.values())


def test_an_empty_slice_after_a_full_one_is_not_trusted():
    mask = np.zeros((3, 32, 32), np.uint8)
    mask[0] = mask[1] = _disc(32, 8)
    assert slice_confidence(mask, [0], range(3), (1.0, 1.0, 1.0))[2] == 0.0


def test_where_the_votes_opinions_part_the_confidence_falls():
    from gastric_propagate.inference.consensus import agreement

    mask = np.zeros((5, 32, 32), np.uint8)
    for k in range(5):
        mask[k] = _disc(32, 8)
    other = mask.copy()
    other[3] = _disc(32, 8, centre=(16, 22))  # one opinion moves sideways on slice 3
    shares = agreement((mask, mask, other), range(5))
    assert shares[1] == 1.0 and 0.0 < shares[3] < 0.6
    alone = slice_confidence(mask, [2], range(5), (1.0, 1.0, 2.0))
    voted = slice_confidence(mask, [2], range(5), (1.0, 1.0, 2.0), agreement=shares)
    assert voted[2] == 1.0
    assert voted[1] == round(np.sqrt(alone[1]), 4)  # unanimous: the geometric mean with 1
    assert voted[3] < voted[1] and voted[3] < np.sqrt(alone[3])
    assert agreement((mask * 0, mask * 0), [0]) == {0: 0.0}  # nothing marked: no agreement to speak of


def test_an_opinion_beyond_its_reach_is_not_counted_as_disagreeing():
    from gastric_propagate.inference.consensus import agreement

    mask = np.zeros((5, 32, 32), np.uint8)
    for k in range(5):
        mask[k] = _disc(32, 8)
    short = mask.copy()
    short[4] = 0  # the third opinion stops at slice 3 by design
    assert agreement((mask, mask, short), range(5))[4] == 0.0
    shares = agreement((mask, mask, short), range(5), reaches=(None, None, (0, 3)))
    assert shares[4] == 1.0 and shares[3] == 1.0
    other = mask.copy()
    other[4] = _disc(32, 8, centre=(16, 22))  # the two opinions that reach slice 4 part there: still counted
    assert 0.0 < agreement((mask, other, short), range(5), reaches=(None, None, (0, 3)))[4] < 0.6


def test_confidence_in_millimetres_on_anisotropic_voxels_from_the_largest_painted_slice():
    """Worked by hand. Voxels 0.5 x 0.5 mm in plane, 3 mm apart; painted slices 0 (10 x 10 voxels = 25 mm2) and
    5 (4 x 4 voxels = 4 mm2). The diameter is the largest painted slice's: 2 sqrt(25 / pi) = 10 / sqrt(pi) mm, so a
    slice 3 mm away is 0.3 sqrt(pi) diameters away, one 6 mm away 0.6 sqrt(pi)."""
    mask = np.zeros((6, 20, 20), np.uint8)
    mask[0, :10, :10] = 1  # painted: 100 voxels
    mask[1, :10, :8] = 1   # 80 voxels inside slice 0's: Dice 2 x 80 / 180 = 8/9, 3 mm from slice 0
    mask[2, :10, :6] = 1   # 60 inside slice 1's: Dice 120 / 140 = 6/7, 6 mm from slice 0 (nearer than slice 5)
    mask[3, :4, :2] = 1    # 8 inside slice 4's: Dice 16 / 20 = 4/5, 6 mm from slice 5 (nearer than slice 0)
    mask[4, :4, :3] = 1    # 12 inside slice 5's: Dice 24 / 28 = 6/7, 3 mm from slice 5
    mask[5, :4, :4] = 1    # painted: 16 voxels
    confidence = slice_confidence(mask, [0, 5], range(6), (0.5, 0.5, 3.0))
    # 8/9 e^(-0.3 sqrt(pi)) = 0.52230, 6/7 e^(-0.6 sqrt(pi)) = 0.29593, 4/5 e^(-0.6 sqrt(pi)) = 0.27620,
    # 6/7 e^(-0.3 sqrt(pi)) = 0.50364
    assert confidence == {0: 1.0, 1: 0.5223, 2: 0.2959, 3: 0.2762, 4: 0.5036, 5: 1.0}


def test_with_several_painted_slices_each_slice_is_measured_from_the_nearest():
    """Painted slices 2 and 8 of 11, the mask symmetric about slice 5: slice 7 (next to painted 8) reads as slice 3
    (next to painted 2), slice 9 as slice 1, slice 10 as slice 0; 1 on both painted slices."""
    widths = [4, 6, 10, 8, 6, 6, 6, 8, 10, 6, 4]  # symmetric: widths[k] == widths[10 - k]
    mask = np.zeros((11, 10, 12), np.uint8)
    for k, width in enumerate(widths):
        mask[k, :, :width] = 1  # 10 rows: nested rectangles, so the overlap is the smaller one
    confidence = slice_confidence(mask, [2, 8], range(11), (1.0, 1.0, 2.0))
    assert confidence[2] == confidence[8] == 1.0
    assert confidence[7] == confidence[3] and confidence[9] == confidence[1] and confidence[10] == confidence[0]
    assert confidence[6] == confidence[4]
    # Slice 7: 80 voxels inside painted slice 8's 100: Dice 160 / 180 = 8/9; 2 mm away, the diameter
    # 2 sqrt(100 / pi) = 20 / sqrt(pi) mm: 8/9 e^(-0.1 sqrt(pi)) = 0.74451.
    assert confidence[7] == 0.7445


def test_an_opinion_is_asked_on_both_end_slices_of_its_reach():
    """Reach (1, 3): the opinion's disagreement counts on slices 1 and 3; its emptiness on 0 and 4 does not."""
    from gastric_propagate.inference.consensus import agreement

    mask = np.zeros((5, 32, 32), np.uint8)
    for k in range(5):
        mask[k] = _disc(32, 8)
    short = mask.copy()
    short[0] = short[4] = 0
    short[1] = short[3] = _disc(32, 8, centre=(16, 22))
    shares = agreement((mask, mask, short), range(5), reaches=(None, None, (1, 3)))
    assert shares[0] == shares[2] == shares[4] == 1.0
    assert shares[1] < 0.6 and shares[3] < 0.6
