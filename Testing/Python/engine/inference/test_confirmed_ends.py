"""A "tumour ended" asked again in the other orientations (StopRule.confirm_end_views), with a proposer that is blind in
some orientations of one slice: the failure measured on small phantom tumours (rules.md, stop 50)."""

import numpy as np
import pytest

from gastric_propagate.inference.propagation import ORIENTATIONS, StopRule, propagate

SIZE, DEPTH, PAINTED = 32, 20, 10
TUMOUR = range(5, 16)       # slices that hold tumour (the image says so)
BLIND = 12                  # a slice inside the tumour where the proposer is blind in some orientations


def _image(marker_corner=(0, 0)) -> np.ndarray:
    image = np.zeros((DEPTH, SIZE, SIZE), np.float32)
    image[list(TUMOUR)] = 0.2
    image[BLIND][marker_corner] = 1.0  # where this lands after a view's turn decides whether the proposer sees
    return image


def _proposer(sees_marker_at=((-1, -1), (0, -1), (-1, 0))):
    """Copies the previous mask where the image holds tumour, unless the slice's marker (its corner pixel) lies at a
    corner outside ``sees_marker_at``: then it finds nothing."""
    def run(batch: np.ndarray) -> np.ndarray:
        out = np.zeros((len(batch), SIZE, SIZE), np.float32)
        for i, sample in enumerate(batch):
            image, previous = sample[1], sample[3]
            corners = {(0, 0), (0, -1), (-1, 0), (-1, -1)}
            marked = [c for c in corners if image[c] > 0.5]
            if image.mean() < 0.1 or (marked and marked[0] not in sees_marker_at):
                continue
            out[i] = previous
        return out
    return run


def _run(rule: StopRule, proposer=None, image=None):
    anchor = np.zeros((SIZE, SIZE), bool)
    anchor[10:20, 10:20] = True
    output = propagate(proposer or _proposer(), _image() if image is None else image, {PAINTED: anchor},
                       limits=(0, DEPTH - 1), pixel_area_mm2=1.0, pixel_mm=1.0, rule=rule)
    found = [k for k in range(DEPTH) if (output.probabilities[k] > 0.5).sum() >= rule.min_area_mm2]
    return found, output.stop_reasons, output


def test_without_it_a_blind_orientation_ends_the_chain_inside_the_tumour():
    found, reasons, output = _run(StopRule(confirm_end_views=0))
    assert found == list(range(5, BLIND)) and output.found_when_turned == []
    assert f"0 mm2 on slice {BLIND}" in reasons["up"]


@pytest.mark.parametrize("views", [2, 6])
def test_the_other_orientations_carry_the_chain_to_the_tumours_true_ends(views):
    # The marker at (0, 0) lands on a seen corner in 6 of the 8 orientations.
    assert StopRule().confirm_end_views == 2  # on by default
    found, reasons, output = _run(StopRule(confirm_end_views=views))
    assert found == list(TUMOUR)
    assert output.found_when_turned == [BLIND]  # the one slice the chain went on from on another orientation's word
    assert "tumour ended: the proposer found 0 mm2 on slice 16" in reasons["up"]
    assert "tumour ended: the proposer found 0 mm2 on slice 4" in reasons["down"]


def test_too_few_orientations_finding_it_end_the_chain():
    # Seen at one corner only: 2 of the 8 orientations find the cross-section.
    proposer = _proposer(sees_marker_at=((-1, -1),))
    assert _run(StopRule(confirm_end_views=2), proposer)[0] == list(TUMOUR)
    assert _run(StopRule(confirm_end_views=3), proposer)[0] == list(range(5, BLIND))


def test_only_the_slices_where_a_chain_would_end_are_asked_again():
    calls = []
    proposer = _proposer()

    def counting(batch):
        calls.append(len(batch))
        return proposer(batch)
    found, _, _ = _run(StopRule(), counting, image=_image(marker_corner=(-1, -1)))  # seen as given
    assert found == list(TUMOUR)
    # Both chains take 6 steps together (slices 9..4 and 11..16), the last onto a tumour-free slice; there both
    # ends are asked in the 7 other orientations, in one batch.
    assert calls == [2] * 6 + [14]


def test_the_eight_orientations_are_distinct_and_undone_by_their_inverse():
    array = np.random.default_rng(0).random((2, 5, 5))
    forwards = [forward(array) for forward, _ in ORIENTATIONS]
    assert len(ORIENTATIONS) == 8
    np.testing.assert_array_equal(forwards[0], array)
    assert len({f.tobytes() for f in forwards}) == 8
    for (forward, inverse) in ORIENTATIONS:
        np.testing.assert_array_equal(inverse(forward(array)), array)


def test_the_slice_takes_the_mean_of_the_orientations_that_found_it_and_the_count_is_checked():
    from gastric_propagate.inference.propagation import _confirm_ends

    def faint_where_seen(batch):  # 0.8 x the previous mask in the orientations that see the marker, else nothing
        return 0.8 * _proposer()(batch)

    inputs = np.zeros((1, 4, SIZE, SIZE), np.float32)
    inputs[0, :3] = _image()[[BLIND - 1, BLIND, BLIND + 1]]
    inputs[0, 3, 10:20, 10:20] = 1.0
    predicted = faint_where_seen(inputs)
    assert not predicted.any()  # blind as given
    confirmed, turned = _confirm_ends(faint_where_seen, inputs, predicted, [True], StopRule(), pixel_area_mm2=1.0)
    np.testing.assert_allclose(confirmed[0], 0.8 * inputs[0, 3])
    assert turned == {0: 6}  # 6 of the 8 orientations see the marker
    inward, turned = _confirm_ends(faint_where_seen, inputs, predicted, [False], StopRule(), 1.0)
    assert not inward.any() and turned == {}  # inward: as is
    with pytest.raises(ValueError, match="0 \\(off\\) to 7"):
        StopRule(confirm_end_views=8)


def test_orientations_that_find_the_tumour_in_different_places_end_the_chain_and_say_so():
    """Each orientation that sees the marker finds a cross-section in its own top-left corner: turned back, the 6
    land in different corners, their mean is below 0.5 everywhere, and the chain ends naming the disagreement, not
    "the proposer found 0 mm2"."""
    copying = _proposer()

    def corner_on_blind(batch):
        out = copying(batch)
        for i, sample in enumerate(batch):
            if sample[1].max() > 0.5 and out[i].any():  # the blind slice, seen in this orientation
                out[i] = 0.0
                out[i, :6, :6] = 1.0
        return out

    found, reasons, output = _run(StopRule(), corner_on_blind)
    assert found == list(range(5, BLIND))
    assert reasons["up"] == (f"tumour ended on slice {BLIND}: 6 of the proposer's 8 orientations found a "
                             "cross-section there, but not in the same place")
    assert output.found_when_turned == []


def test_a_slice_found_only_when_turned_is_listed_for_review_in_the_result():
    """Through the pipeline: a copying proposer blind on CT slice 23 as given (a bright marker in its top-left
    quadrant) and transposed, seeing in the 6 other orientations; the chain goes on, and slice 23 is flagged."""
    import torch

    from conftest import CopyCoarseRefiner
    from gastric_propagate.inference.pipeline import PropagationOptions, Segmenter
    from gastric_propagate.inference.preprocessing import Preprocessing

    class BlindCopier(torch.nn.Module):
        def forward(self, x):
            half = x.shape[-1] // 2
            blind = x[:, 1, :half, :half].amax(dim=(1, 2)) > 0.9
            copied = torch.where(x[:, 3] > 0.5, 10.0, -10.0)
            return torch.where(blind[:, None, None], torch.full_like(copied, -10.0), copied)[:, None]

    depth, size = 40, 96
    z, y, x = np.mgrid[:depth, :size, :size]
    label = (((y - size // 2) ** 2 + (x - size // 2) ** 2) < 100).astype(np.uint8)
    image = np.where(label > 0, 40, -100).astype(np.int16)
    image[23, 30:33, 30:33] = 400  # the marker, inside the crop, beside the tumour
    annotation = np.zeros_like(label)
    annotation[20] = label[20]
    segmenter = Segmenter.from_networks(BlindCopier(), CopyCoarseRefiner(), Preprocessing(), device="cpu")
    result = segmenter.segment(image, (1.0, 1.0, 2.0), annotation, PropagationOptions(use_consensus=False))
    assert result.slice_range()[1] > 23  # the chain went on past the slice it was blind on
    assert result.found_when_turned == [23] and 23 in result.slices_to_review()
    image[23] = image[22]  # no marker: nothing found only when turned
    plain = segmenter.segment(image, (1.0, 1.0, 2.0), annotation, PropagationOptions(use_consensus=False))
    assert plain.found_when_turned == [] and plain.slice_range() == result.slice_range()
