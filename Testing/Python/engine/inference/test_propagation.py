"""Propagation behaviour with a known (oracle) proposer: anchors, automatic stop, limits, leaks, progress."""

import numpy as np
import pytest
import torch

from conftest import SPACING, make_volume
from gastric_propagate.data.annotation import annotation_from_label, painted_slices
from gastric_propagate.errors import Cancelled, InputError
from gastric_propagate.metrics import dice
from gastric_propagate.inference.pipeline import PropagationOptions
from gastric_propagate.inference.result import REVIEW_CONFIDENCE

# These tests are about the networks' chains and their stop rules, so they run without the vote (which would
# also stop the chains at its reach: see test_pipeline).
NETWORKS_ALONE = PropagationOptions(use_consensus=False)


def test_follows_the_tumour_and_stops_at_its_ends(oracle_segmenter, volume):
    image, label = volume
    result = oracle_segmenter.segment(image, SPACING, annotation_from_label(label), NETWORKS_ALONE)
    truth_slices = painted_slices(label)
    assert result.slice_range() == (truth_slices[0], truth_slices[-1])
    assert dice(result.mask, label) > 0.9
    assert "tumour ended" in result.stop_reasons["up"] and "tumour ended" in result.stop_reasons["down"]


def test_painted_slice_is_kept_exactly_even_where_the_network_disagrees(oracle_segmenter, volume):
    image, label = volume
    annotation = annotation_from_label(label)
    k = painted_slices(annotation)[0]
    annotation[k, 60:66, 40:50] = 1  # a stroke over dark tissue that the network would never segment
    result = oracle_segmenter.segment(image, SPACING, annotation)
    np.testing.assert_array_equal(result.mask[k], annotation[k])


def test_keyframes_are_anchors_that_never_change(oracle_segmenter, volume):
    image, label = volume
    annotation = np.zeros_like(label)
    anchors = [14, 20, 25]
    for k in anchors:
        annotation[k] = label[k]
    annotation[25, 50:54, 50:54] = 0  # a corrected slice that differs from what the network would draw
    result = oracle_segmenter.segment(image, SPACING, annotation, PropagationOptions(keyframes=True))
    assert result.anchor_slices == anchors
    for k in anchors:
        np.testing.assert_array_equal(result.mask[k], annotation[k])
    assert all(result.mask[k].any() for k in range(14, 26)), "slices between anchors are filled"


def test_several_slices_without_keyframes_is_refused_and_names_them(oracle_segmenter, volume):
    image, label = volume
    annotation = np.zeros_like(label)
    annotation[18], annotation[22] = label[18], label[22]
    with pytest.raises(InputError, match=r"18, 22.*--keyframes"):
        oracle_segmenter.segment(image, SPACING, annotation)


def test_slice_limits_and_distance_limit(oracle_segmenter, volume):
    image, label = volume
    annotation = annotation_from_label(label)
    k = painted_slices(annotation)[0]
    limited = oracle_segmenter.segment(image, SPACING, annotation, PropagationOptions(min_slice=k - 2, max_slice=k + 1))
    assert limited.slice_range() == (k - 2, k + 1)
    assert "slice limit" in limited.stop_reasons["up"]
    near = oracle_segmenter.segment(image, SPACING, annotation, PropagationOptions(max_distance_mm=5.0))
    assert near.slice_range() == (k - 2, k + 2)  # 5 mm at 2.5 mm slices
    with pytest.raises(InputError, match="outside the slice limits"):
        oracle_segmenter.segment(image, SPACING, annotation, PropagationOptions(min_slice=k + 1))


def test_a_leak_into_a_large_bright_neighbour_is_stopped(oracle_segmenter):
    image, label = make_volume()
    top = painted_slices(label)[-1]
    image[top + 1:, 20:110, 20:110] = 120  # a large bright organ touching the tumour's upper end
    # Read with 2 mm slices the tumour is flatter than it is wide, so the leak lies well within the chains' reach
    # (0.75 painted diameters): the leak rule, not the reach, ends the chain.
    result = oracle_segmenter.segment(image, SPACING[:2] + (2.0,), annotation_from_label(label), NETWORKS_ALONE)
    # The leaking slices are cut back to the tumour's last outline (three at most), then the chain ends;
    # those slices are flagged for review.
    assert result.slice_range()[1] <= top + 3
    assert all(result.mask[k].sum() <= result.mask[top].sum() for k in range(top + 1, top + 4))
    assert "leak" in result.stop_reasons["up"] and "cut back" in result.stop_reasons["up"]
    assert all(k in result.slices_to_review() for k in range(top + 1, result.slice_range()[1] + 1))
    # The cut-back slices are those above the tumour's end; their confidence, lowered, says "review" on its own.
    assert result.cut_back == list(range(top + 1, result.slice_range()[1] + 1))
    assert all(result.slice_confidence[k] < REVIEW_CONFIDENCE for k in result.cut_back)


def test_progress_reaches_the_total_and_cancel_stops(oracle_segmenter, volume):
    image, label = volume
    calls = []
    oracle_segmenter.segment(image, SPACING, annotation_from_label(label), progress=lambda d, t: calls.append((d, t)))
    assert calls and calls[-1][0] == calls[-1][1]
    assert all(d1 <= d2 for (d1, _), (d2, _) in zip(calls, calls[1:]))
    with pytest.raises(Cancelled):
        oracle_segmenter.segment(image, SPACING, annotation_from_label(label), should_stop=lambda: True)


def test_confidence_for_every_visited_slice(oracle_segmenter, volume):
    image, label = volume
    result = oracle_segmenter.segment(image, SPACING, annotation_from_label(label))
    first, last = result.slice_range()
    assert set(range(first, last + 1)) <= set(result.slice_confidence)
    assert all(0.0 <= c <= 1.0 for c in result.slice_confidence.values())
    assert result.anchor_slices[0] not in result.least_confident_slices(50)


def test_a_painted_slice_smaller_than_its_neighbours_propagates_when_declared(oracle_segmenter, volume):
    image, label = volume
    first = painted_slices(label)[0]
    annotation = annotation_from_label(label, first + 1)  # near the end: the next slices are larger
    strict = oracle_segmenter.segment(image, SPACING, annotation)
    assert "leak" in strict.stop_reasons["up"]  # by default the painted slice is taken as the largest
    relaxed = oracle_segmenter.segment(image, SPACING, annotation,  # the networks' rules, without the vote
                                       PropagationOptions(painted_is_largest=False, use_consensus=False))
    assert relaxed.slice_range() == (first, painted_slices(label)[-1])
    assert dice(relaxed.mask, label) > 0.9


class CopyPrevious(torch.nn.Module):
    """A proposer that never lets go: it copies the previous slice's mask, whatever the image shows."""

    def forward(self, x):
        return torch.where(x[:, 3:4] > 0.5, 10.0, -10.0)


def _column(depth=40, size=96, radius_px=10, painted=20):
    """A soft-tissue (40 HU) cylinder along z in fat (-100 HU), painted on one slice."""
    z, y, x = np.mgrid[:depth, :size, :size]
    label = (((y - size // 2) ** 2 + (x - size // 2) ** 2) < radius_px ** 2).astype(np.uint8)
    image = np.where(label > 0, 40, -100).astype(np.int16)
    annotation = np.zeros_like(label)
    annotation[painted] = label[painted]
    return image, label, annotation


def test_a_chain_that_runs_into_contrast_filled_lumen_stops_there():
    from gastric_propagate.inference.pipeline import Segmenter
    from gastric_propagate.inference.preprocessing import Preprocessing
    from conftest import CopyCoarseRefiner

    image, label, annotation = _column()
    image[25:][label[25:] > 0] = 400  # above slice 24 the same place holds positive oral contrast
    segmenter = Segmenter.from_networks(CopyPrevious(), CopyCoarseRefiner(), Preprocessing(), device="cpu")
    result = segmenter.segment(image, (1.0, 1.0, 2.0), annotation, NETWORKS_ALONE)
    assert result.slice_range()[1] == 24
    assert "outside the painted region's intensities" in result.stop_reasons["up"]


def test_a_chain_without_the_vote_ends_at_the_votes_reach():
    from gastric_propagate.inference.pipeline import Segmenter
    from gastric_propagate.inference.preprocessing import Preprocessing
    from conftest import CopyCoarseRefiner

    # 20 mm wide, 2 mm slices: 0.75 painted diameters (the vote's reach, stop 45) = 7.5 slices
    image, label, annotation = _column(depth=60, painted=30)
    segmenter = Segmenter.from_networks(CopyPrevious(), CopyCoarseRefiner(), Preprocessing(), device="cpu")
    result = segmenter.segment(image, (1.0, 1.0, 2.0), annotation, NETWORKS_ALONE)
    first, last = result.slice_range()
    assert 6 <= last - 30 <= 8 and 30 - first == last - 30
    assert "painted diameter" in result.stop_reasons["up"] and "painted diameter" in result.stop_reasons["down"]



@pytest.mark.parametrize("limits", [(3, 97), (1, 98)])
def test_on_thin_slices_a_slice_limit_next_to_the_volumes_edge_is_named_as_the_limit(limits):
    """1 mm slices are read on working slices 2 mm apart: a limit whose enclosing working slice is the crop's first
    or last is still the user's limit, not the edge of the volume (slices 0 and 99 lie beyond it)."""
    from gastric_propagate.inference.pipeline import Segmenter
    from gastric_propagate.inference.preprocessing import Preprocessing
    from conftest import CopyCoarseRefiner

    image, _, annotation = _column(depth=100, painted=50)
    segmenter = Segmenter.from_networks(CopyPrevious(), CopyCoarseRefiner(), Preprocessing(), device="cpu")
    options = PropagationOptions(use_consensus=False, painted_is_largest=False, min_slice=limits[0],
                                 max_slice=limits[1])
    result = segmenter.segment(image, (1.0, 1.0, 1.0), annotation, options)
    assert result.slice_range() == limits
    assert result.stop_reasons == {"down": f"reached the slice limit ({limits[0]})",
                                   "up": f"reached the slice limit ({limits[1]})"}


def test_the_last_slice_of_the_votes_reach_is_not_given_confidence_zero_for_the_copys_taper():
    """A 19.7 mm column on 5 mm slices: the vote reaches 3 slices each way (0.75 x 19.7 mm = 14.8 mm, rounded), but the
    tapered copy ends at 14.8 mm, before the third slice. The networks and the registration hold the column there, so
    the result does; the copy, empty by construction, is not asked (its empty slice made the confidence 0)."""
    from gastric_propagate.inference.pipeline import Segmenter
    from gastric_propagate.inference.preprocessing import Preprocessing
    from conftest import CopyCoarseRefiner

    image, _, annotation = _column(depth=20, painted=10)
    segmenter = Segmenter.from_networks(CopyPrevious(), CopyCoarseRefiner(), Preprocessing(), device="cpu")
    result = segmenter.segment(image, (1.0, 1.0, 5.0), annotation)
    assert result.slice_range() == (7, 13)
    for k in (7, 13):
        assert result.mask[k].sum() > 0.9 * annotation[10].sum()
        assert result.slice_confidence[k] > 0.1, (k, result.slice_confidence)

class Grower(torch.nn.Module):
    """A proposer that always leaks: the previous mask grown by 12 pixels on every slice."""

    def forward(self, x):
        return torch.where(torch.nn.functional.max_pool2d(x[:, 3:4], 25, stride=1, padding=12) > 0.5, 10.0, -10.0)


def test_a_leaking_slice_is_cut_back_to_the_previous_outline_three_times_at_most():
    from gastric_propagate.inference.pipeline import Segmenter
    from gastric_propagate.inference.preprocessing import Preprocessing
    from conftest import CopyCoarseRefiner

    image, label, annotation = _column(depth=40, painted=20)
    segmenter = Segmenter.from_networks(Grower(), CopyCoarseRefiner(), Preprocessing(), device="cpu")
    result = segmenter.segment(image, (1.0, 1.0, 2.0), annotation, NETWORKS_ALONE)
    assert result.slice_range() == (17, 23)
    for k in range(17, 24):
        assert dice(result.mask[k], label[20]) > 0.9  # cut back: never grown (up to resampling)
    for direction in ("up", "down"):
        assert "3 slice(s) before it were cut back" in result.stop_reasons[direction]
    # A cut-back slice keeps the previous outline, so its own confidence can stay high: it is listed all the same.
    assert sorted(result.cut_back) == [17, 18, 19, 21, 22, 23]
    assert set(result.cut_back) <= set(result.slices_to_review())


def test_a_cut_back_slice_s_confidence_is_four_tenths_of_what_its_outline_earns(monkeypatch):
    """The same run with the factor at 1 gives the unlowered confidences: the mask and the cut-back slices are the
    same, each cut-back slice's confidence is 0.4 times (to 4 decimals) what it is there, the others unchanged."""
    from gastric_propagate.inference import pipeline
    from gastric_propagate.inference.preprocessing import Preprocessing
    from conftest import CopyCoarseRefiner

    image, label, annotation = _column(depth=40, painted=20)
    segmenter = pipeline.Segmenter.from_networks(Grower(), CopyCoarseRefiner(), Preprocessing(), device="cpu")
    lowered = segmenter.segment(image, (1.0, 1.0, 2.0), annotation, NETWORKS_ALONE)
    monkeypatch.setattr(pipeline, "CUT_BACK_CONFIDENCE_FACTOR", 1.0)
    unlowered = segmenter.segment(image, (1.0, 1.0, 2.0), annotation, NETWORKS_ALONE)
    assert np.array_equal(lowered.mask, unlowered.mask)
    assert lowered.cut_back == unlowered.cut_back == [17, 18, 19, 21, 22, 23]
    assert set(lowered.slice_confidence) == set(unlowered.slice_confidence) == set(range(17, 24))
    # A cut-back slice keeps the painted outline: on its own it would be trusted (0.7 and more).
    assert all(unlowered.slice_confidence[k] > 0.7 for k in unlowered.cut_back)
    for k, value in unlowered.slice_confidence.items():
        assert lowered.slice_confidence[k] == (round(value * 0.4, 4) if k in lowered.cut_back else value), k
    assert lowered.slice_confidence[20] == 1.0


class Recorder(torch.nn.Module):
    """A proposer that copies the previous mask and keeps every batch it was given."""

    def __init__(self, in_channels):
        super().__init__()
        self.config, self.batches = {"in_channels": in_channels, "base_channels": 1, "depth": 1}, []

    def forward(self, x):
        self.batches.append(x.clone())
        return torch.where(x[:, 3:4] > 0.5, 10.0, -10.0)


def test_a_proposer_with_the_prompt_channel_reads_the_mask_its_chain_started_from_at_every_step():
    from gastric_propagate.inference.networks import TorchRunner
    from gastric_propagate.inference.propagation import propagate

    image = np.zeros((12, 32, 32), dtype=np.float32)
    low, high = np.zeros((32, 32), dtype=bool), np.zeros((32, 32), dtype=bool)
    low[10:20, 10:20], high[12:18, 12:18] = True, True
    anchors = {3: low, 8: high}
    for prompt, channels in ((False, 4), (True, 5)):
        recorder = Recorder(channels)
        propagate(TorchRunner(recorder), image, anchors, limits=(0, 11), pixel_area_mm2=1.0, pixel_mm=1.0,
                  prompt=prompt)
        assert {batch.shape[1] for batch in recorder.batches} == {channels}
        if prompt:
            # Each step's chains in the order propagate keeps them: down from 3, up from 8, then between the two.
            seen = [tuple(sample[4].bool().numpy().tobytes() for sample in batch) for batch in recorder.batches]
            first = seen[0]
            assert first == (low.tobytes(), high.tobytes(), low.tobytes(), high.tobytes())
            assert all(set(step) <= {low.tobytes(), high.tobytes()} for step in seen)


def test_a_segmenter_runs_a_prompt_reading_proposer_and_one_with_a_new_channel_at_zero_gives_the_same_mask(volume):
    from conftest import CopyCoarseRefiner
    from gastric_propagate.inference.networks import UNet2D, with_input_channels
    from gastric_propagate.inference.pipeline import Segmenter
    from gastric_propagate.inference.preprocessing import Preprocessing

    image, label = volume
    torch.manual_seed(0)
    network = UNet2D(in_channels=4, base_channels=4, depth=2).eval()
    with torch.no_grad():
        network.head.bias.fill_(3.0)  # an untrained network that says "tumour" almost everywhere
    masks = {}
    for channels, proposer in ((4, network), (5, with_input_channels(network, 5))):
        batches = []
        segmenter = Segmenter.from_networks(proposer, CopyCoarseRefiner(), Preprocessing(), device="cpu")
        wrapped = segmenter._proposer

        def recording(batch, wrapped=wrapped, batches=batches):
            batches.append(batch)
            return wrapped(batch)

        segmenter._proposer = recording
        masks[channels] = segmenter.segment(image, SPACING, annotation_from_label(label), NETWORKS_ALONE).mask
        assert {batch.shape[1] for batch in batches} == {channels}
    np.testing.assert_array_equal(masks[4], masks[5])


# The stop rules one by one, at their thresholds, with ``propagate`` itself and a scripted proposer: crop pixels of
# 1 x 1 mm, so that a pixel count is an area in mm2 (docs/method.md, "Automatic stop and leak safety").
SIZE = 48


def _rect(rows, cols):
    """A (SIZE, SIZE) mask holding rows ``rows`` and columns ``cols`` (ranges, end excluded)."""
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[rows[0]:rows[1], cols[0]:cols[1]] = True
    return mask


def _numbered_image(depth=24):
    """A flat crop (0 everywhere, like the painted tissue) whose slice k holds k in pixel (0, 0), which no mask
    covers: the scripted proposer reads which slice it is asked about there."""
    image = np.zeros((depth, SIZE, SIZE), dtype=np.float32)
    image[:, 0, 0] = np.arange(depth)
    return image


def _scripted(masks):
    """A proposer that answers slice k with ``masks[k]`` (nothing where none is scripted), whatever it is shown."""
    def run(batch):
        return np.stack([masks.get(int(round(float(sample[1, 0, 0]))), np.zeros((SIZE, SIZE), bool))
                         for sample in batch]).astype(np.float32)
    return run


def _copy_previous(batch):
    """A proposer that never lets go: the previous slice's mask, whatever the image shows."""
    return (batch[:, 3] > 0.5).astype(np.float32)


def _propagate(masks, anchor, *, k=10, image=None, **kwargs):
    from gastric_propagate.inference.propagation import propagate

    image = _numbered_image() if image is None else image
    return propagate(_scripted(masks), image, {k: anchor}, limits=(0, image.shape[0] - 1), pixel_area_mm2=1.0,
                     pixel_mm=1.0, **kwargs)


PAINTED = _rect((19, 29), (19, 29))  # 100 mm2


def test_a_chain_ends_where_the_cross_section_falls_below_12_mm2():
    """12 mm2 is still tumour, 11 mm2 is its end; the slice where it ended is visited (it gets a confidence)."""
    out = _propagate({11: _rect((20, 26), (20, 25)), 12: _rect((20, 23), (20, 24)), 13: _rect((20, 21), (20, 31))},
                     PAINTED)
    assert out.stop_reasons["up"] == "tumour ended: the proposer found 11 mm2 on slice 13"
    assert out.probabilities[12].sum() == 12 and 13 in out.visited and 14 not in out.visited


def test_a_cross_section_above_1_2_times_the_painted_one_is_cut_back_to_the_previous_outline():
    """120 mm2 next to a 100 mm2 painted slice is kept as it is; 121 mm2 is cut back to the painted outline (and
    listed), and the chain goes on."""
    out = _propagate({11: _rect((19, 29), (19, 31)), 9: _rect((18, 29), (18, 29)), 8: PAINTED}, PAINTED)
    assert out.probabilities[11].sum() == 120
    assert out.cut_back == [9]
    np.testing.assert_array_equal(out.probabilities[9] > 0.5, PAINTED)
    assert out.probabilities[8].any() and "slice 7" in out.stop_reasons["down"]


def test_growth_above_1_6_times_the_previous_slice_plus_40_mm2_is_cut_back():
    """Painted 400 mm2, so the 1.2x rule allows 480: from a 100 mm2 slice, 200 mm2 (1.6 x 100 + 40) is kept and
    201 mm2 is cut back to the 100 mm2 outline."""
    painted = _rect((14, 34), (14, 34))
    small = _rect((19, 29), (19, 29))
    grown = _rect((19, 29), (14, 34))
    leaked = grown.copy()
    leaked[29, 14] = True
    out = _propagate({11: small, 12: grown, 9: small, 8: leaked}, painted)
    assert out.probabilities[12].sum() == 200
    assert out.cut_back == [8]
    np.testing.assert_array_equal(out.probabilities[8] > 0.5, small)


def test_a_cross_section_with_less_than_half_of_it_near_the_previous_one_has_jumped_and_ends_the_chain():
    """Near means within 6 mm of the previous outline. Up: half of it near (the rest far away), kept; down: 49% near,
    dropped, the chain ends. Then a 12 mm2 line 6 mm beside the previous outline is near, 7 mm beside it is not."""
    painted = _rect((19, 29), (10, 20))
    far = _rect((19, 29), (35, 40))  # 16 mm and more from the painted outline
    half = _rect((19, 29), (10, 15)) | far
    less = half.copy()
    less[19, 10], less[30, 35] = False, True
    out = _propagate({11: half, 9: less}, painted)
    assert out.probabilities[11].sum() == 100 and "found 0 mm2 on slice 12" in out.stop_reasons["up"]
    assert out.stop_reasons["down"] == "ended before slice 9: the mask jumped away from the previous slice"
    assert 9 not in out.visited
    beside = _propagate({11: _rect((19, 31), (25, 26)), 9: _rect((19, 31), (26, 27))}, painted)
    assert beside.probabilities[11].sum() == 12 and "jumped" not in beside.stop_reasons["up"]
    assert "jumped away" in beside.stop_reasons["down"]


def test_a_cross_section_reaching_two_pixels_from_the_crops_edge_is_cut_back_and_the_chain_goes_on():
    painted = _rect((14, 34), (14, 34))
    up, down = painted | _rect((2, 14), (23, 24)), painted | _rect((1, 14), (23, 24))  # a strip up to row 2, row 1
    out = _propagate({11: up, 9: down, 8: painted}, painted)
    np.testing.assert_array_equal(out.probabilities[11] > 0.5, up)  # two pixels away: kept
    assert out.cut_back == [9]
    np.testing.assert_array_equal(out.probabilities[9] > 0.5, painted)
    assert out.probabilities[8].any()


def test_a_cross_section_with_over_40_percent_outside_the_painted_intensities_ends_the_chain():
    """The painted pixels hold 0.00 to 0.99: their 2nd-98th percentiles (0.0198, 0.9702) widened by a quarter of
    that spread plus 0.05 reach 1.2578. Up: 40% at 1.27, then everything at 1.25: kept; down: 41% at 1.27: a leak,
    the chain ends."""
    image = _numbered_image()
    image[10, 19:29, 19:29] = np.arange(100).reshape(10, 10) / 100.0
    image[11, 19:23, 19:29] = 1.27  # 40 of the 100 pixels
    image[12, 19:29, 19:29] = 1.25
    image[9, 19:23, 19:29] = 1.27
    image[9, 23, 19] = 1.27  # 41
    out = _propagate({11: PAINTED, 12: PAINTED, 9: PAINTED}, PAINTED, image=image)
    assert out.probabilities[11].any() and out.probabilities[12].any()
    assert "found 0 mm2 on slice 13" in out.stop_reasons["up"]
    assert out.stop_reasons["down"].startswith("ended before slice 9: 41% of its pixels lie outside the painted")


def test_a_leak_cut_back_to_less_than_12_mm2_ends_the_chain():
    """130 mm2 (over 1.2x the painted 100) of which 10 mm2 lie in the previous outline: cut back, nothing is left."""
    leak = _rect((19, 29), (28, 41))
    out = _propagate({11: leak, 12: PAINTED}, PAINTED)
    assert out.stop_reasons["up"] == "tumour ended on slice 11 after a leak was cut back"
    assert out.cut_back == [11] and 12 not in out.visited


def test_three_cut_back_slices_end_the_chain_only_in_a_row():
    """Two leaks, a plausible slice, three leaks: the count starts again after the plausible slice, so the chain
    ends at the fourth leak in a row."""
    leak = PAINTED | _rect((19, 29), (29, 39))  # 200 mm2
    out = _propagate({11: leak, 12: leak, 13: PAINTED, 14: leak, 15: leak, 16: leak, 17: leak}, PAINTED)
    assert out.cut_back == [11, 12, 14, 15, 16]
    assert out.stop_reasons["up"].startswith("stopped before slice 17: its cross-section (200 mm2) is 2.0x")
    assert out.stop_reasons["up"].endswith("3 slice(s) before it were cut back to the previous outline")


def test_a_chain_ends_at_its_extent_in_painted_diameters():
    """0.75 x the painted 100 mm2's equivalent diameter (11.28 mm) is 8.46 mm: 4 slices of 2 mm each way."""
    from gastric_propagate.inference.propagation import StopRule, propagate

    image = _numbered_image(depth=30)
    out = propagate(_copy_previous, image, {20: PAINTED}, limits=(0, 29), pixel_area_mm2=1.0, pixel_mm=1.0,
                    slice_mm=2.0, rule=StopRule(max_extent_diameters=0.75))
    assert out.visited == list(range(16, 25))
    assert out.stop_reasons["up"].startswith("stopped after slice 24: 0.75x the painted diameter")
    assert out.stop_reasons["down"].startswith("stopped after slice 16: 0.75x the painted diameter")


def test_between_two_anchors_each_chain_weighs_by_its_closeness_to_the_anchor_it_started_from():
    """Each chain copies its anchor's outline (A from slice 10, B from 14): one slice from A, A weighs 1 and B 1/3."""
    from gastric_propagate.inference.propagation import propagate

    a, b = _rect((5, 15), (5, 15)), _rect((25, 35), (25, 35))
    out = propagate(_copy_previous, _numbered_image(), {10: a, 14: b}, limits=(0, 23), pixel_area_mm2=1.0,
                    pixel_mm=1.0)
    for k, weight_a in ((11, 0.75), (12, 0.5), (13, 0.25)):
        np.testing.assert_allclose(out.probabilities[k][a], weight_a)
        np.testing.assert_allclose(out.probabilities[k][b], 1.0 - weight_a)


def test_the_proposer_is_shown_the_slice_behind_it_the_slice_and_the_slice_ahead_clamped_at_the_volumes_ends():
    from gastric_propagate.inference.propagation import StopRule, propagate

    seen = []
    rule = StopRule(confirm_end_views=0)  # the ends are not asked again in other orientations: only what a step sees

    def recording(batch):
        seen.extend([float(sample[c, 5, 5]) for c in range(3)] for sample in batch)
        return np.zeros((len(batch), SIZE, SIZE), np.float32)

    image = np.broadcast_to(np.arange(24, dtype=np.float32)[:, None, None], (24, SIZE, SIZE)).copy()
    propagate(recording, image, {10: PAINTED}, limits=(0, 23), pixel_area_mm2=1.0, pixel_mm=1.0, rule=rule)
    assert seen == [[10.0, 9.0, 8.0], [10.0, 11.0, 12.0]]  # the chain down, then the chain up
    seen.clear()
    propagate(recording, image, {1: PAINTED}, limits=(0, 23), pixel_area_mm2=1.0, pixel_mm=1.0, rule=rule)
    assert seen[0] == [1.0, 0.0, 0.0]


def test_a_tumour_cut_by_the_votes_reach_is_named_in_the_advice_and_a_round_one_is_not(oracle_segmenter, volume):
    """A soft-tissue column runs the whole scan: the vote's reach (0.75 painted diameters each way: 15 mm, 7 slices
    of 2 mm) ends the result while it still covers the whole painted cross-section, and the advice says so on both
    sides, naming the slice to look beyond. The round phantom tumour ends well inside the reach: no such advice."""
    from gastric_propagate.inference.advice import CUT_AT_REACH
    from gastric_propagate.inference.pipeline import CUT_AT_REACH_SHARE

    image, label, annotation = _column(depth=60, painted=30)
    result = oracle_segmenter.segment(image, (1.0, 1.0, 2.0), annotation)
    first, last = result.slice_range()
    assert (first, last) == (23, 37)
    cut = [a for a in result.advice if a.kind == CUT_AT_REACH]
    assert [(a.values["direction"], a.values["slice"]) for a in cut] == [("down", first), ("up", last)]
    assert all(a.values["share"] >= CUT_AT_REACH_SHARE and a.values["painted_slice"] == 30 for a in cut)
    assert f"Check the slices beyond slice {last} (K > {last})" in cut[1].sentence and "--keyframes" in cut[1].sentence
    assert f"Check the slices beyond slice {first} (K < {first})" in cut[0].sentence
    round_tumour = oracle_segmenter.segment(*volume[:1], SPACING, annotation_from_label(volume[1]))
    assert not [a for a in round_tumour.advice if a.kind == CUT_AT_REACH]


def test_a_tumour_that_has_thinned_to_a_fifth_of_the_painted_area_at_the_reach_gets_no_such_advice(oracle_segmenter):
    """The same reach, but the column tapers from a radius of 10 pixels at the painted slice to 4.5 at the reach's
    slices (0.2 of the painted area, below ``CUT_AT_REACH_SHARE``) and goes on thin: the result is cut there as
    before, and the advice stays silent."""
    from gastric_propagate.inference.advice import CUT_AT_REACH

    depth, size, painted = 60, 96, 30
    z, y, x = np.mgrid[:depth, :size, :size]
    radius = np.maximum(10.0 - np.abs(z - painted) * 5.5 / 7, 4.5)
    label = (((y - size // 2) ** 2 + (x - size // 2) ** 2) < radius ** 2).astype(np.uint8)
    image = np.where(label > 0, 40, -100).astype(np.int16)
    result = oracle_segmenter.segment(image, (1.0, 1.0, 2.0), annotation_from_label(label, painted))
    assert result.slice_range() == (23, 37)
    assert not [a for a in result.advice if a.kind == CUT_AT_REACH]


def test_the_cut_at_reach_advice_also_reads_the_registration_where_the_result_has_shrunk_away():
    """The networks shrank away and the copy tapers to its end at the reach, so the result's last slice there covers
    little of the painted cross-section; the registration, which follows the image, still finds most of it (CR2):
    the advice fires and names the registration. Below ``CUT_AT_REACH_REGISTRATION_SHARE`` it stays silent, and
    without the vote (no registration) only the result's own share counts."""
    from types import SimpleNamespace

    from gastric_propagate.inference import pipeline
    from gastric_propagate.inference.advice import CUT_AT_REACH

    depth, size = 30, 20
    painted = np.zeros((size, size), np.uint8)
    painted[5:15, 5:15] = 1  # 100 pixels
    run = SimpleNamespace(reach_limited={"up": 20}, limits=(10, 20), anchor_slices=[10], anchor_masks={10: painted},
                          window_factor=0.75)
    mask = np.zeros((depth, size, size), np.uint8)
    mask[10:21, 8:11, 8:11] = 1  # 9 % of the painted area on its last slice, 20: the reach's
    registered = np.zeros_like(mask)
    registered[10:21, 5:15, 5:13] = 1  # 80 %
    [advice] = pipeline._ends_advice(run, mask, registered)
    assert advice.kind == CUT_AT_REACH and advice.values["slice"] == 20 and advice.values["direction"] == "up"
    assert advice.values["share"] == 0.09 and advice.values["registration_share"] == 0.8
    assert "the registration still follows a cross-section of 80% of the painted one" in advice.sentence
    registered[20, :, 9:] = 0  # 40 %: below the registration's share
    assert pipeline._ends_advice(run, mask, registered) == []
    assert pipeline._ends_advice(run, mask, None) == []
    mask[20] = 0
    mask[20, 5:15, 5:10] = 1  # the result's own half: the first rule, whatever the registration says
    [advice] = pipeline._ends_advice(run, mask, None)
    assert advice.values["registration_share"] is None and "still covers 50% of the painted" in advice.sentence


def test_where_the_networks_find_nothing_the_registration_tells_the_reader_the_column_goes_on():
    """Through the whole pipeline: a proposer that finds nothing beyond the painted slice, on a column through the
    scan. The vote (registration and the tapered copy against the networks) reaches 7 slices each way, its last
    slices covering 0.19 of the painted cross-section (below CR's 0.3), while the registration follows all of it
    there: the cut-at-reach advice names both slices and the registration (CR2)."""
    import torch
    from torch import nn

    from conftest import CopyCoarseRefiner
    from gastric_propagate.inference.advice import CUT_AT_REACH
    from gastric_propagate.inference.pipeline import Segmenter
    from gastric_propagate.inference.preprocessing import Preprocessing

    class FindsNothing(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.full_like(x[:, :1], -10.0)

    segmenter = Segmenter.from_networks(FindsNothing(), CopyCoarseRefiner(), Preprocessing(), device="cpu")
    image, _, annotation = _column(depth=60, painted=30)
    result = segmenter.segment(image, (1.0, 1.0, 2.0), annotation)
    assert result.slice_range() == (23, 37)
    cut = [a.values for a in result.advice if a.kind == CUT_AT_REACH]
    assert [(v["direction"], v["slice"]) for v in cut] == [("down", 23), ("up", 37)]
    assert all(v["share"] < 0.3 and v["registration_share"] == 1.0 for v in cut)

def test_a_result_that_ends_inside_the_reach_where_the_registration_still_follows_gets_advice():
    """The result ends at slice 16, inside the vote's reach (20): where the registration still covers 0.5 of the
    painted cross-section there (CE2) the reader is told the tumour may go on; where it covers less, or at a user's
    limit or the volume's edge, nothing is said."""
    from types import SimpleNamespace

    from gastric_propagate.inference import pipeline
    from gastric_propagate.inference.advice import ENDED_WHILE_FOLLOWED

    painted = np.zeros((20, 20), np.uint8)
    painted[5:15, 5:15] = 1
    run = SimpleNamespace(reach_limited={"up": 20}, limits=(10, 20), anchor_slices=[10], anchor_masks={10: painted},
                          window_factor=0.75)
    mask = np.zeros((30, 20, 20), np.uint8)
    mask[10:17, 6:14, 6:14] = 1
    registered = np.zeros_like(mask)
    registered[10:21, 5:15, 5:11] = 1  # 60 % on every slice
    [advice] = pipeline._ends_advice(run, mask, registered)
    assert advice.kind == ENDED_WHILE_FOLLOWED
    assert (advice.values["slice"], advice.values["direction"], advice.values["registration_share"]) == (16, "up", 0.6)
    assert advice.sentence.startswith("The result ends at slice 16, but the registration still follows a "
                                      "cross-section of 60% of the painted one there")
    registered[16, :, 9:] = 0  # 40 %
    assert pipeline._ends_advice(run, mask, registered) == []
    registered[16, 5:15, 5:11] = 1
    at_a_limit = SimpleNamespace(**{**vars(run), "reach_limited": {}, "limits": (10, 16)})
    assert pipeline._ends_advice(at_a_limit, mask, registered) == []
    assert pipeline._ends_advice(run, mask, None) == []
    # Going down the same: the result ends at slice 4, the vote's window reaches slice 0 (up: nothing followed).
    down = SimpleNamespace(**{**vars(run), "limits": (0, 20), "reach_limited": {}})
    mask[4:10, 6:14, 6:14] = 1
    registered[16] = 0
    registered[0:10, 5:15, 5:12] = 1  # 70 %
    [advice] = pipeline._ends_advice(down, mask, registered)
    assert (advice.kind, advice.values["slice"], advice.values["direction"]) == (ENDED_WHILE_FOLLOWED, 4, "down")
    assert advice.values["registration_share"] == 0.7 and advice.values["painted_slice"] == 10


def test_a_result_that_ends_on_a_painted_slice_gets_no_ended_while_followed_advice():
    """On an anchor the vote's registration opinion is the painting itself (all of the painted cross-section): a
    result that ends there, a tiny nodule's or one that ends on a corrected slice, says nothing of what lies beyond."""
    from types import SimpleNamespace

    from gastric_propagate.inference import pipeline

    painted = np.zeros((20, 20), np.uint8)
    painted[5:15, 5:15] = 1
    mask = np.zeros((30, 20, 20), np.uint8)
    mask[10:17] = painted  # from the painted slice 10 to the corrected slice 16
    registered = mask.copy()  # the vote's registration opinion equals the painting on both anchors
    run = SimpleNamespace(reach_limited={}, limits=(0, 29), anchor_slices=[10, 16],
                          anchor_masks={10: painted, 16: painted}, window_factor=0.75)
    assert pipeline._ends_advice(run, mask, registered) == []


def test_between_two_anchors_a_chain_that_lost_the_tumour_gives_way_to_the_other():
    """The upward chain from slice 2 loses the tumour on slice 4 (fed its own empty mask, it stays empty): slices
    4-6 come from the downward chain alone, not halved towards nothing; before slice 4 both are weighed as before;
    where both lost it, both are weighed as before."""
    from gastric_propagate.inference.propagation import _blend_between, _Chain

    shape = (8, 4, 4)
    tumour = np.full(shape[1:], 0.9, np.float32)
    empty = np.zeros(shape[1:], np.float32)
    up = _Chain(position=6, direction=1, stop_before=8, mask=empty > 0, outward=False, origin=2,
                probabilities={3: tumour * 0.8, 4: empty, 5: empty, 6: empty})
    down = _Chain(position=3, direction=-1, stop_before=2, mask=tumour > 0, outward=False, origin=7,
                  probabilities={6: tumour, 5: tumour, 4: tumour, 3: empty})
    probabilities = np.zeros(shape, np.float32)
    _blend_between(probabilities, [up, down], 2, 7)
    for k in (4, 5, 6):
        np.testing.assert_allclose(probabilities[k], tumour)
    # Slice 3: the downward chain lost it there (coming from 7, it is empty from 3 on), the upward one has it.
    np.testing.assert_allclose(probabilities[3], tumour * 0.8)
    both_lost = _Chain(position=6, direction=-1, stop_before=2, mask=empty > 0, outward=False, origin=7,
                       probabilities={k: empty for k in range(3, 7)})
    _blend_between(probabilities, [up, both_lost], 2, 7)
    np.testing.assert_allclose(probabilities[5], empty)  # nobody has it: nothing is made up
    np.testing.assert_allclose(probabilities[3], tumour * 0.8)


def test_a_batch_of_large_crops_runs_in_chunks_of_bounded_pixels_with_each_samples_own_output():
    """ONNX Runtime keeps the memory of its largest call: a 1.4 L sarcoma's 32 refiner slices of 272 pixels at once
    took the peak from 1.4 to 2.4 GB. Chunks keep each call within the budget; small crops still run in one call."""
    from gastric_propagate.inference.propagation import MAX_BATCH_PIXELS, InChunks

    calls = []

    def network(batch):
        calls.append(batch.shape)
        return batch[:, 0] * 2.0 + batch[:, 1]  # each sample's own output

    rng = np.random.default_rng(0)
    large = rng.random((32, 2, 272, 272), dtype=np.float32)
    out = InChunks(network)(large)
    np.testing.assert_array_equal(out, large[:, 0] * 2.0 + large[:, 1])
    assert all(n * h * w <= MAX_BATCH_PIXELS for n, _, h, w in calls) and len(calls) == 4, calls
    calls.clear()
    small = rng.random((32, 2, 80, 80), dtype=np.float32)
    np.testing.assert_array_equal(InChunks(network)(small), small[:, 0] * 2.0 + small[:, 1])
    assert calls == [(32, 2, 80, 80)], "the benchmark's crops: one call, as before"
    calls.clear()
    huge = rng.random((3, 2, 1024, 1024), dtype=np.float32)  # one sample over the budget: one at a time
    np.testing.assert_array_equal(InChunks(network)(huge), huge[:, 0] * 2.0 + huge[:, 1])
    assert [shape[0] for shape in calls] == [1, 1, 1]


def test_the_segmenter_runs_both_networks_in_bounded_chunks(monkeypatch):
    from conftest import CopyCoarseRefiner, OracleProposer
    from gastric_propagate.inference import pipeline
    from gastric_propagate.inference.preprocessing import Preprocessing

    wrapped = []
    monkeypatch.setattr(pipeline, "InChunks", lambda network: wrapped.append(network) or network)
    pipeline.Segmenter.from_networks(OracleProposer(), CopyCoarseRefiner(), Preprocessing(), device="cpu")
    assert len(wrapped) == 2, "the proposer's runner and the refiner's"


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_the_loaded_networks_run_in_bounded_chunks_on_each_backend(backend):
    """ONNX Runtime, the CPU's default, is the one that keeps its largest call's memory."""
    from gastric_propagate.inference.pipeline import Segmenter
    from gastric_propagate.inference.propagation import InChunks

    segmenter = Segmenter(device="cpu", backend=backend)
    assert isinstance(segmenter._proposer, InChunks) and isinstance(segmenter._refiner, InChunks)
