"""A tiny training run: both checkpoints written, loadable, self-describing and reproducible."""

import pytest
import torch

from gastric_propagate.inference.checkpoints import load_checkpoint
from gastric_propagate.synthetic.generators import phantom_cases
from gastric_propagate.inference.pipeline import Segmenter
from gastric_propagate.training.train import TrainingConfig, train

CONFIG = TrainingConfig(proposer_steps=3, refiner_steps=2, batch_size=2, window=64, base_channels=4, depth=2,
                        crops_per_case=1, seed=7)


def small_cases():
    return [case.load() for case in phantom_cases(2, seed_start=0, size_xy=160, tumour_diameter_mm=25.0)]


def test_training_writes_two_usable_self_describing_checkpoints(tmp_path):
    cases = small_cases()
    paths = train(cases, tmp_path, config=CONFIG, device="cpu", data_description="2 test phantoms",
                  validation_cases=cases[:1], command="gastric-propagate train --test")
    proposer = load_checkpoint(paths["proposer"], stage="proposer")
    refiner = load_checkpoint(paths["refiner"], stage="refiner")
    assert proposer.network.config == {"in_channels": 4, "base_channels": 4, "depth": 2}
    assert refiner.network.config["in_channels"] == 6
    meta = proposer.training
    assert meta["data"] == "2 test phantoms" and meta["cases"] == 2 and meta["config"]["seed"] == 7
    assert meta["threads"] == torch.get_num_threads()  # what reproducing these weights bit for bit needs
    assert set(meta["validation"]) == {"proposer", "proposer+refiner", "cases"}
    Segmenter(paths["proposer"], paths["refiner"], device="cpu")  # the pair loads together


@pytest.mark.parametrize("steps", [1, 10, 11])
def test_any_number_of_steps_trains(tmp_path, steps):
    """The learning-rate schedule warms up over a tenth of the steps; at 10 steps that is one step, which
    torch's OneCycleLR cannot divide by."""
    config = TrainingConfig(**{**CONFIG.__dict__, "proposer_steps": steps, "refiner_steps": steps})
    paths = train(small_cases()[:1], tmp_path, config=config, device="cpu")
    assert load_checkpoint(paths["proposer"], stage="proposer").training["final_loss"]["proposer"] > 0


def test_same_seed_same_weights(tmp_path):
    cases = small_cases()
    first = train(cases, tmp_path / "a", config=CONFIG, device="cpu")
    second = train(cases, tmp_path / "b", config=CONFIG, device="cpu")
    a = torch.load(first["proposer"], weights_only=True)["state_dict"]
    b = torch.load(second["proposer"], weights_only=True)["state_dict"]
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_cases_given_one_by_one_train_the_same_weights_as_a_list(tmp_path):
    """The train command hands the cases over as they load (each CT let go once cropped): the same weights."""
    cases = small_cases()
    listed = train(cases, tmp_path / "a", config=CONFIG, device="cpu", sources=["x", "y"])
    streamed = train(iter(cases), tmp_path / "b", config=CONFIG, device="cpu", sources=iter(["x", "y"]))
    for stage in ("proposer", "refiner"):
        a, b = (torch.load(paths[stage], weights_only=True) for paths in (listed, streamed))
        assert all(torch.equal(a["state_dict"][name], b["state_dict"][name]) for name in a["state_dict"])
        assert b["training"]["case_names"] == [case.name for case in cases]
        assert b["training"]["cases_per_source"] == {"x": 1, "y": 1}


def test_cases_whose_tumours_vanish_on_the_networks_grid_are_refused_by_name(tmp_path):
    import numpy as np

    from gastric_propagate.data.cases import CaseData
    from gastric_propagate.errors import InputError

    label = np.zeros((8, 64, 64), np.uint8)
    label[4, 30, 30] = 1  # one voxel of 0.1 mm: nothing of it is left on 1 mm pixels
    tiny = CaseData("speck", np.full(label.shape, -50, np.int16), label, (0.1, 0.1, 1.0))
    with pytest.raises(InputError, match=r"No training crop could be cut from the 1 case\(s\) \(speck\)"):
        train([tiny], tmp_path, config=CONFIG, device="cpu")
    assert not any(tmp_path.iterdir())


def _crop(source: str, diameter_mm: float, free_ends=(True, True)):
    from gastric_propagate.training.train import _CropVolume
    import numpy as np

    label = np.zeros((6, 16, 16), dtype=bool)
    label[1:5, 6:10, 6:10] = True
    if not free_ends[0]:
        label[0] = label[1]
    if not free_ends[1]:
        label[5] = label[4]
    first, last = (0 if not free_ends[0] else 1), (5 if not free_ends[1] else 4)
    return _CropVolume(np.zeros(label.shape, dtype=np.float32), label, first, last, free_ends, source, diameter_mm)


def test_sampling_weights_give_each_source_its_share_and_each_size_bin_an_equal_part():
    import numpy as np
    from gastric_propagate.training.train import sampling_weights

    crops = [_crop("real", 7.0)] * 30 + [_crop("real", 80.0)] * 2 + [_crop("phantom", 30.0)] * 10
    weights = sampling_weights(crops, {"real": 0.75, "phantom": 0.25})
    assert np.isclose(weights.sum(), 1.0)
    assert np.isclose(weights[:30].sum(), 0.375) and np.isclose(weights[30:32].sum(), 0.375)
    assert np.isclose(weights[32:].sum(), 0.25)
    assert np.isclose(sampling_weights(crops, {"phantom": 1.0})[:32].sum(), 0.0)


def test_a_size_bin_of_too_few_crops_joins_its_neighbour_holding_fewer():
    """Alone in its bin, one lesion got a whole bin's share (stop 49: one sarcoma 5 % of all samples, 44 times a
    uniform draw); with ``min_bin_crops`` it joins the adjacent bin holding fewer crops. 0 keeps every bin apart."""
    import numpy as np
    from gastric_propagate.training.train import sampling_weights

    crops = [_crop("real", 7.0)] * 40 + [_crop("real", 15.0)] * 30 + [_crop("real", 30.0)] * 2 + \
        [_crop("real", 80.0)] * 10
    apart = sampling_weights(crops, {"real": 1.0})
    assert np.isclose(apart[70:72].sum(), 0.25)  # two crops, a quarter of the source
    merged = sampling_weights(crops, {"real": 1.0}, min_bin_crops=8)
    assert np.isclose(merged[70:82].sum(), 1 / 3) and np.allclose(merged[70:82], 1 / 3 / 12)  # with the 10 large ones
    assert np.isclose(merged[:40].sum(), 1 / 3) and np.isclose(merged[40:70].sum(), 1 / 3)
    np.testing.assert_allclose(sampling_weights(crops, {"real": 1.0}, min_bin_crops=0), apart)
    # Every bin too small: merged until one is left, every crop then drawn alike.
    np.testing.assert_allclose(sampling_weights(crops[:3] + crops[40:42], {"real": 1.0}, min_bin_crops=100), 0.2)


def test_proposer_never_learns_that_a_tumour_goes_on_past_a_crop_cut_at_the_lesion():
    """A crop whose lesion touches its last slice has no tumour-free slice above: no sample may ask the proposer to
    mark tumour beyond the lesion there, and the empty-target ('the tumour ended') samples come from the free end."""
    import numpy as np
    from gastric_propagate.training.train import _proposer_sample

    crop = _crop("real", 7.0, free_ends=(True, False))
    config = TrainingConfig(window=16)
    rng = np.random.default_rng(0)
    empty_targets = 0
    for _ in range(300):
        stack, target, _ = _proposer_sample(crop, config, rng)
        empty_targets += not target.any()
    # About 117 of 300 (beyond-end samples, and inner ones one step past the free end); about 66 when the
    # beyond-end samples at the cut end are not moved to the free one, where they ask for tumour past the cut.
    assert 95 < empty_targets < 140


def test_zoom_changes_the_lesion_scale_the_networks_see():
    import numpy as np
    from gastric_propagate.training.train import _make_crops

    case = small_cases()[0]
    plain = _make_crops(case, CONFIG, np.random.default_rng(1))
    zoomed = _make_crops(case, TrainingConfig(crops_per_case=1, zoom_range=(2.0, 2.0)), np.random.default_rng(1))
    area = lambda crop: crop.label.sum(axis=(1, 2)).max()  # noqa: E731
    assert 3.0 < area(zoomed[0]) / area(plain[0]) < 5.0  # twice the scale in-plane: four times the area
    assert zoomed[0].free_ends == (True, True) and zoomed[0].diameter_mm == plain[0].diameter_mm
    # The rollouts' stop rules measure areas in the crop's own pixels: half a millimetre when zoomed twice.
    assert zoomed[0].pixel_mm == CONFIG.preprocessing.pixel_spacing_mm / 2.0
    assert plain[0].pixel_mm == CONFIG.preprocessing.pixel_spacing_mm


def test_the_refiners_pixel_weights_are_one_plus_the_hard_and_boundary_weights_the_config_gives():
    """A pixel the coarse mask gets wrong weighs 1 + hard, one on the true outline 1 + boundary, both 1 + the sum."""
    import numpy as np
    from gastric_propagate.training.train import _refiner_sample

    crop = _crop("real", 20.0)
    coarse = crop.label.astype(np.float32)
    coarse[:, 6:10, 9] = 0  # the coarse mask misses the square's last column on every slice
    for hard, boundary in ((4.0, 2.0), (8.0, 4.0), (0.0, 0.0)):
        config = TrainingConfig(window=16, hard_pixel_weight=hard, boundary_weight=boundary)
        seen = set()
        for seed in range(20):
            _, _, weight = _refiner_sample(crop, coarse, config, np.random.default_rng(seed))
            seen |= set(np.unique(weight).round(3).tolist())
        assert seen <= {1.0, 1.0 + hard, 1.0 + boundary, 1.0 + hard + boundary}
        assert max(seen) == 1.0 + hard + boundary  # the missed column lies on the outline


def test_the_proposers_pixel_weights_are_one_and_one_plus_the_boundary_weight_on_the_true_outline():
    import numpy as np
    from scipy import ndimage
    from gastric_propagate.training.train import _proposer_sample

    crop = _crop("real", 20.0)
    for boundary in (0.0, 3.0):
        config = TrainingConfig(window=16, proposer_boundary_weight=boundary)
        for seed in range(10):
            _, target, weight = _proposer_sample(crop, config, np.random.default_rng(seed))
            inside = target[0] > 0.5
            outline = ndimage.binary_dilation(inside) & ~ndimage.binary_erosion(inside)
            np.testing.assert_array_equal(weight[0], 1.0 + boundary * outline)
            assert outline.any() or not inside.any()


def test_a_simulated_leak_runs_only_into_connected_tissue_of_the_tumours_density_on_the_slices_the_refiner_reads():
    """Beside the tumour (0: its median) a band of the same density (0.1) on its right, bone-like tissue (2.0) on its
    left and below, and on the right beyond the band a patch of the same density that does not touch it."""
    import numpy as np
    from gastric_propagate.training.train import LEAK_REACH_PX, _leaked

    crop = _crop("real", 20.0)  # truth: slices 1-4, rows and columns 6-9
    crop.image[:] = 2.0
    crop.image[:, 6:10, 6:10] = 0.0
    crop.image[:, 4:12, 10:13] = 0.1   # same density, touching the tumour on its right
    crop.image[:, 0:3, 14:16] = 0.0    # same density, apart from it
    rng = np.random.default_rng(0)
    grew = 0
    for _ in range(200):
        k = int(rng.integers(0, 6))
        coarse = _leaked(crop, k, rng)
        read = {min(max(k + offset, 0), 5) for offset in (-1, 0, 1)}
        for m in range(6):
            leaked = coarse[m] > 0.5
            assert np.array_equal(leaked, crop.label[m]) or m in read  # only the slices the refiner reads change
            assert (leaked | ~crop.label[m]).all()  # the truth is always kept
            beyond = leaked & ~crop.label[m]
            assert not beyond[:, :10].any() and not beyond[:, 13:].any()  # only into the touching band
            assert not beyond.any() or crop.label[m].any()  # nothing on a slice without tumour
            grew += bool(beyond.any())
    assert grew > 50  # it does leak, into the band, often
    assert LEAK_REACH_PX[0] >= 1


def test_refiner_leaks_share_trains_and_is_recorded_and_zero_draws_nothing_more(tmp_path):
    import numpy as np
    from gastric_propagate.training.train import _refiner_sample

    crop = _crop("real", 20.0)
    coarse = crop.label.astype(np.float32)
    plain = [_refiner_sample(crop, coarse, TrainingConfig(window=16), np.random.default_rng(s)) for s in range(5)]
    same = [_refiner_sample(crop, coarse, TrainingConfig(window=16, refiner_leaks=0.0), np.random.default_rng(s))
            for s in range(5)]
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(plain, same))
    cases = small_cases()
    config = TrainingConfig(**{**CONFIG.__dict__, "refiner_leaks": 0.5})
    paths = train(cases, tmp_path, config=config, device="cpu")
    assert load_checkpoint(paths["refiner"], stage="refiner").training["config"]["refiner_leaks"] == 0.5


def test_self_fed_samples_carry_the_proposers_own_leak_and_ask_for_the_true_outline():
    """The proposer's rollout leaked (the whole slice beyond the tumour): a self-fed sample's previous mask is that
    leak, and its target the truth of the next slice, never the leak copied on."""
    import numpy as np
    from gastric_propagate.training.train import _self_fed_sample

    crop = _crop("real", 20.0)  # truth: slices 1-4, a 4x4 square; largest (argmax) slice 1
    rollout = np.zeros(crop.label.shape, dtype=bool)
    rollout[1:] = True  # a leak over every slice above the start
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(100):
        stack, target, _ = _self_fed_sample(crop, rollout, TrainingConfig(window=16), rng)
        assert stack[3].sum() >= 12 * 12  # the leaked previous mask (the window's jitter cuts at most 4 rows)
        assert target.sum() in (16, 0)  # the truth: the square inside the tumour, nothing beyond its end
        seen.add(int(target.sum()))
    assert seen == {0, 16}


def test_self_fed_sample_falls_back_to_the_true_previous_mask_where_the_rollout_is_empty():
    import numpy as np
    from gastric_propagate.training.train import _self_fed_sample

    crop = _crop("real", 20.0)
    stack, target, _ = _self_fed_sample(crop, np.zeros(crop.label.shape, dtype=bool), TrainingConfig(window=16),
                                        np.random.default_rng(0))
    assert stack[3].sum() > 0 and stack[3].sum() < 16 * 16  # a (perturbed) true mask, not the empty rollout


def test_self_fed_training_from_scratch_and_fine_tuning_both_run_and_record_the_share(tmp_path):
    cases = small_cases()
    config = TrainingConfig(**{**CONFIG.__dict__, "proposer_steps": 4, "self_fed": 0.5})
    fresh = train(cases, tmp_path / "fresh", config=config, device="cpu")
    tuned = train(cases, tmp_path / "tuned", config=config, device="cpu",
                  init=tuple(load_checkpoint(fresh[s], stage=s).network for s in ("proposer", "refiner")))
    meta = load_checkpoint(tuned["proposer"], stage="proposer").training
    assert meta["config"]["self_fed"] == 0.5
    a = torch.load(fresh["proposer"], weights_only=True)["state_dict"]
    b = torch.load(tuned["proposer"], weights_only=True)["state_dict"]
    assert any(not torch.equal(a[name], b[name]) for name in a)


def test_refreshed_self_fed_rollouts_come_from_the_proposer_being_trained(tmp_path, monkeypatch):
    """With self_fed_refresh 2 over 6 self-fed steps the rollouts are computed from the starting network, then again
    before steps 2 and 4 from the proposer as trained so far; training goes on in training mode after each."""
    import gastric_propagate.training.train as train_module

    real_rollouts, real_loss = train_module._rollouts, train_module._loss
    seen = []  # (proposer, a copy of its weights) at each rollout
    modes = []  # the proposer's training mode at each loss once it has rolled out (its 6 steps, then the refiner's)

    def recording_rollouts(proposer, crops, config, device):
        seen.append((proposer, [p.detach().clone() for p in proposer.parameters()]))
        return real_rollouts(proposer, crops, config, device)

    def checking_loss(*args, **kwargs):
        if seen:
            modes.append(seen[0][0].training)
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train_module, "_rollouts", recording_rollouts)
    monkeypatch.setattr(train_module, "_loss", checking_loss)
    cases = small_cases()
    start = train(cases, tmp_path / "start", config=CONFIG, device="cpu")
    init = tuple(load_checkpoint(start[s], stage=s).network for s in ("proposer", "refiner"))
    config = TrainingConfig(**{**CONFIG.__dict__, "proposer_steps": 6, "self_fed": 0.5, "self_fed_refresh": 2})
    tuned = train(cases, tmp_path / "tuned", config=config, device="cpu", init=init)
    assert len(seen) == 3 and all(proposer is init[0] for proposer, _ in seen)
    assert modes[:6] == [True] * 6  # never trained in eval mode after a rollout
    weights = [w for _, w in seen]
    assert all(torch.equal(a, b) for a, b in zip(weights[0], [p for p in load_checkpoint(
        start["proposer"], stage="proposer").network.parameters()]))  # the first: the starting network's
    for earlier, later in zip(weights, weights[1:]):  # each later one: the network after more steps
        assert any(not torch.equal(a, b) for a, b in zip(earlier, later))
    assert load_checkpoint(tuned["proposer"], stage="proposer").training["config"]["self_fed_refresh"] == 2


def test_with_the_prompt_channel_every_proposer_sample_also_holds_the_largest_true_cross_section():
    import numpy as np
    from gastric_propagate.training.train import _proposer_sample, _self_fed_sample

    crop = _crop("real", 20.0)  # truth: slices 1-4, a 4x4 square (the window's jitter never cuts it)
    rollout = np.zeros(crop.label.shape, dtype=bool)
    rollout[1:] = True
    rng = np.random.default_rng(0)
    for config in (TrainingConfig(window=16), TrainingConfig(window=16, prompt_channel=True)):
        for _ in range(20):
            for stack, target, _ in (_proposer_sample(crop, config, rng), _self_fed_sample(crop, rollout, config, rng)):
                assert stack.shape == ((5 if config.prompt_channel else 4), 16, 16)
                if config.prompt_channel:
                    assert stack[4].sum() == 16 and set(np.unique(stack[4])) == {0.0, 1.0}


def test_the_prompt_channel_from_scratch_from_a_four_channel_proposer_and_kept_when_fine_tuned_again(tmp_path):
    from gastric_propagate.inference.onnx_networks import export_pair

    cases = small_cases()
    prompted = TrainingConfig(**{**CONFIG.__dict__, "prompt_channel": True, "self_fed": 0.5})
    fresh = train(cases, tmp_path / "fresh", config=prompted, device="cpu")
    plain = train(cases, tmp_path / "plain", config=CONFIG, device="cpu")

    def pair(paths):
        return tuple(load_checkpoint(paths[s], stage=s).network for s in ("proposer", "refiner"))

    widened = train(cases, tmp_path / "widened", config=prompted, device="cpu", init=pair(plain))
    again = train(cases, tmp_path / "again", config=CONFIG, device="cpu", init=pair(widened))  # no flag: kept
    export_pair(again, overwrite=False)  # ONNX Runtime reads the fifth channel too
    for paths in (fresh, widened, again):
        proposer = load_checkpoint(paths["proposer"], stage="proposer")
        assert proposer.in_channels == 5 and proposer.training["config"]["prompt_channel"] is True
        Segmenter(paths["proposer"], paths["refiner"], device="cpu", backend="onnx" if paths is again else "torch")
    assert load_checkpoint(plain["proposer"], stage="proposer").training["config"]["prompt_channel"] is False


def _disc_crop(radius: int, side: int = 160):
    """Slices 1-4 of 6 hold a disc of ``radius`` pixels in the middle of a ``side`` x ``side`` crop."""
    import numpy as np
    from gastric_propagate.training.train import _CropVolume

    y, x = np.mgrid[:side, :side]
    disc = (y - side // 2) ** 2 + (x - side // 2) ** 2 < radius ** 2
    label = np.zeros((6, side, side), dtype=bool)
    label[1:5] = disc
    return _CropVolume(np.zeros(label.shape, dtype=np.float32), label, 1, 4, (True, True), "real", 2.0 * radius)


def test_outline_windows_centre_a_wide_lesions_windows_on_its_true_outline_and_leave_small_ones_alone():
    import numpy as np
    from gastric_propagate.training.train import _window_centre

    wide, small = _disc_crop(60).label[2], _disc_crop(15).label[2]
    rng = np.random.default_rng(0)
    off = TrainingConfig(window=96)
    assert _window_centre(wide, wide, off, rng) == (80, 80)
    assert rng.random() == np.random.default_rng(0).random()  # without the option: no draw, the same samples
    on = TrainingConfig(window=96, outline_windows=1.0)
    centres = {_window_centre(wide, wide, on, rng) for _ in range(50)}
    radii = [np.hypot(y - 80, x - 80) for y, x in centres]
    assert len(centres) > 20 and all(58 <= r <= 62 for r in radii)  # points all round the outline
    assert _window_centre(small, small, on, rng) == (80, 80)  # 30 pixels across: fits half the window
    empty = np.zeros_like(wide)
    assert 58 <= np.hypot(*np.subtract(_window_centre(wide, empty, on, rng), 80)) <= 62  # past the end: the previous


def test_with_outline_windows_every_sample_of_a_wide_lesion_shows_its_outline():
    """Centred on its centre, a 120-pixel disc fills 86 % of a 96-pixel window on average (its outline only in the
    corners); centred on the outline, the window holds tumour and tissue beside it alike, for both networks."""
    import numpy as np
    from gastric_propagate.training.train import _proposer_sample, _refiner_sample

    crop, rng = _disc_crop(60), np.random.default_rng(1)
    coarse = crop.label.astype(np.float32)

    def tumour_shares(config):
        targets = [sample(crop, config, rng)[1] for _ in range(60) for sample in (
            lambda c, cf, r: _proposer_sample(c, cf, r), lambda c, cf, r: _refiner_sample(c, coarse, cf, r))]
        return [t.mean() for t in targets if t.any()]

    centred, on_outline = tumour_shares(TrainingConfig(window=96)), tumour_shares(
        TrainingConfig(window=96, outline_windows=1.0))
    assert np.mean(centred) > 0.8 and min(centred) > 0.6
    assert 0.3 < np.mean(on_outline) < 0.6 and all(0.1 < share < 0.8 for share in on_outline)


def test_torchio_augmentation_moves_the_masks_with_the_image_and_keeps_them_binary():
    """The previous mask and the target are the same square: whatever TorchIO's elastic deformation does, it does
    to both (they stay equal and binary), while the image alone gets blur, resolution loss and noise."""
    import numpy as np
    from gastric_propagate.training.train import _torchio_augment

    torch.manual_seed(0)
    square = np.zeros((1, 48, 48), dtype=np.float32)
    square[0, 14:34, 16:30] = 1.0
    image = np.random.default_rng(0).random((3, 48, 48)).astype(np.float32)
    changed_image = changed_mask = 0
    for _ in range(40):
        stack, target = _torchio_augment([np.concatenate([image, square]), square.copy()], image_channels=3)
        assert stack.shape == (4, 48, 48) and target.shape == (1, 48, 48)
        assert np.array_equal(stack[3:], target) and set(np.unique(target)) <= {0.0, 1.0}
        changed_image += not np.allclose(stack[:3], image)
        changed_mask += not np.array_equal(target, square)
    assert changed_image >= 10 and changed_mask >= 3


def test_outward_samples_walk_from_the_largest_cross_section_towards_the_ends_and_zero_draws_nothing_more():
    """With --outward-share 1 no sample asks for the largest slice from a smaller one before it (the inference chains
    walk from the painted largest slice outward, where the outline shrinks); 0 gives today's samples exactly."""
    import numpy as np
    from gastric_propagate.training.train import _largest_slice, _proposer_sample

    crop = _crop("real", 20.0)
    crop.label[2, 5:11, 5:11] = True  # slice 2 is the largest (36 pixels): 16 on slices 1, 3 and 4
    assert _largest_slice(crop) == 2
    plain = [_proposer_sample(crop, TrainingConfig(window=16), np.random.default_rng(s)) for s in range(60)]
    zero = [_proposer_sample(crop, TrainingConfig(window=16, outward_share=0.0), np.random.default_rng(s))
            for s in range(60)]
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(plain, zero))
    asks_for_the_largest = lambda sample: int(sample[1].sum()) == 36  # noqa: E731
    assert sum(map(asks_for_the_largest, plain)) > 5, "today's samples walk towards the largest slice too"
    outward = [_proposer_sample(crop, TrainingConfig(window=16, outward_share=1.0), np.random.default_rng(s))
               for s in range(200)]
    assert not any(map(asks_for_the_largest, outward))
    assert sum(not sample[1].any() for sample in outward) > 40, "the stops beyond the ends are still drawn"


def test_refiner_overshoot_draws_the_slices_a_coarse_mask_marks_past_the_tumour():
    import numpy as np
    from gastric_propagate.training.train import _CropVolume, _refiner_slice

    label = np.zeros((9, 16, 16), dtype=bool)
    label[2:5, 6:10, 6:10] = True  # the tumour on slices 2-4
    crop = _CropVolume(np.zeros(label.shape, np.float32), label, 2, 4, (True, True), "real", 20.0)
    coarse = label.astype(np.float32)
    coarse[5:8] = coarse[4]  # the chain ran on three slices past the end
    usual = {_refiner_slice(crop, coarse, TrainingConfig(), np.random.default_rng(s)) for s in range(100)}
    overshoot = {_refiner_slice(crop, coarse, TrainingConfig(refiner_overshoot=True), np.random.default_rng(s))
                 for s in range(100)}
    assert usual == {1, 2, 3, 4, 5} and overshoot == {1, 2, 3, 4, 5, 6, 7}


def test_the_rollouts_stop_rules_read_each_crop_s_own_pixel_size(monkeypatch):
    import numpy as np
    from gastric_propagate.inference.networks import UNet2D
    from gastric_propagate.training import train as training

    seen = []

    def record(runner, image, anchors, **kwargs):
        seen.append((kwargs["pixel_mm"], kwargs["pixel_area_mm2"]))
        return type("Output", (), {"probabilities": np.zeros(image.shape, np.float32)})()

    monkeypatch.setattr(training, "propagate", record)
    crops = [_crop("real", 20.0), training._CropVolume(**{**_crop("real", 20.0).__dict__, "pixel_mm": 0.5})]
    training._coarse_masks(UNet2D(in_channels=4, base_channels=4, depth=2), crops, TrainingConfig(), "cpu")
    assert seen == [(1.0, 1.0), (0.5, 0.25)]


def test_the_rollouts_stop_without_the_confirmed_end_the_shipped_weights_were_trained_with(monkeypatch):
    """Training's rollouts keep the stop rule RB learned from (inference asks an end again since stop 50): the
    training command writes the shipped weights bit for bit only so."""
    import numpy as np
    from gastric_propagate.inference.networks import UNet2D
    from gastric_propagate.inference.propagation import StopRule
    from gastric_propagate.training import train as training

    rules = []

    def record(runner, image, anchors, **kwargs):
        rules.append(kwargs["rule"])
        return type("Output", (), {"probabilities": np.zeros(image.shape, np.float32)})()

    monkeypatch.setattr(training, "propagate", record)
    training._coarse_masks(UNet2D(in_channels=4, base_channels=4, depth=2), [_crop("real", 20.0)], TrainingConfig(),
                           "cpu")
    assert StopRule().confirm_end_views == 2 and [rule.confirm_end_views for rule in rules] == [0]


def test_without_empty_target_dice_a_sample_whose_tumour_ended_learns_from_the_cross_entropy_alone():
    from gastric_propagate.training.train import _loss

    logits = torch.full((2, 1, 8, 8), -2.0)
    logits[:, :, 2:4, 2:4] = 3.0  # a faint guess on both samples
    target = torch.zeros(2, 1, 8, 8)
    target[0, :, 2:5, 2:5] = 1.0  # the first holds tumour, the second is past the tumour's end
    weight = torch.ones_like(target)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    probability = torch.sigmoid(logits)
    dice_first = 1 - (2 * (probability[0] * target[0]).sum() + 1) / (probability[0].sum() + target[0].sum() + 1)
    torch.testing.assert_close(_loss(logits, target, weight, empty_target_dice=False), bce + dice_first)
    dice_empty = 1 - 1 / (probability[1].sum() + 1)
    assert dice_empty > 0.8  # as much as a missed tumour, for a guess of a few pixels
    torch.testing.assert_close(_loss(logits, target, weight), bce + (dice_first + dice_empty) / 2)
    empty = torch.zeros_like(target)
    torch.testing.assert_close(_loss(logits, empty, weight, empty_target_dice=False),
                               torch.nn.functional.binary_cross_entropy_with_logits(logits, empty))


def test_no_empty_target_dice_trains_and_is_recorded(tmp_path):
    config = TrainingConfig(**{**CONFIG.__dict__, "empty_target_dice": False})
    paths = train(small_cases(), tmp_path, config=config, device="cpu")
    assert load_checkpoint(paths["proposer"], stage="proposer").training["config"]["empty_target_dice"] is False


def test_hypodense_phantoms_are_a_source_of_their_own_with_their_own_seeds(tmp_path):
    from gastric_propagate import cli

    out = tmp_path / "weights"
    assert cli.main(["train", "--phantoms", "1", "--hypodense", "1", "--mix", "phantom=0.5", "hypodense=0.5",
                     "--init", "bundled", "--proposer-steps", "0", "--refiner-steps", "0", "--validation-phantoms",
                     "0", "--workers", "1", "--device", "cpu", "--out", str(out)]) == 0
    data = load_checkpoint(out / "proposer.pt", stage="proposer").training["data"]
    assert "1 synthetic 'phantom' cases (seeds 0-0)" in data
    assert "1 synthetic 'hypodense' cases (seeds 50000-50000)" in data
    assert "phantom 50%, hypodense 50%" in data


def test_a_training_that_diverges_stops_saying_so_and_writes_nothing(tmp_path):
    """A learning rate far too high: NaN weights would replace good ones and be blamed on the ONNX export."""
    from gastric_propagate.errors import InputError

    (tmp_path / "proposer.pt").write_text("the user's earlier weights")
    config = TrainingConfig(**{**CONFIG.__dict__, "learning_rate": 1e6})
    with pytest.raises(InputError, match=r"The proposer training diverged: .* Lower --learning-rate \(it is 1e\+06\) "
                                         r"and run again; nothing was written\."):
        train(small_cases()[:1], tmp_path, config=config, device="cpu")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["proposer.pt"]
    assert (tmp_path / "proposer.pt").read_text() == "the user's earlier weights"
