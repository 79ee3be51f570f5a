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
