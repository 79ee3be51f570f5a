"""Checkpoints describe themselves, load without a network, and refuse clearly when they cannot be used."""

import pytest
import torch

from gastric_propagate.inference.checkpoints import bundled_weights, load_checkpoint, save_checkpoint
from gastric_propagate.errors import WeightsError
from gastric_propagate.inference.networks import UNet2D
from gastric_propagate.inference.pipeline import Segmenter
from gastric_propagate.inference.preprocessing import Preprocessing


def tiny(in_channels=4):
    torch.manual_seed(0)
    return UNet2D(in_channels=in_channels, base_channels=4, depth=2).eval()


def test_round_trip_keeps_architecture_preprocessing_metadata_and_outputs(tmp_path):
    network, prep = tiny(), Preprocessing(pixel_spacing_mm=1.25)
    path = save_checkpoint(tmp_path / "p.pt", stage="proposer", network=network, preprocessing=prep,
                           training={"data": "unit test"})
    loaded = load_checkpoint(path, stage="proposer")
    assert loaded.preprocessing == prep and loaded.training["data"] == "unit test"
    assert loaded.network.config == network.config
    x = torch.randn(1, 4, 32, 32)
    with torch.no_grad():  # float16 storage: equal to within half precision
        assert torch.allclose(loaded.network(x), network(x), atol=2e-2)


def test_a_value_beyond_half_precision_is_stored_whole_and_the_rest_stays_half(tmp_path):
    """A deep network's batch-norm variance passed 65504, float16's largest value, and was stored as infinity: the
    trained weights were refused as 'NaN or Inf' by the export that followed its training (stop 33, depth 4)."""
    network = tiny()
    with torch.no_grad():
        network.decoders[0][1].running_var.fill_(1.0e6)
    path = save_checkpoint(tmp_path / "p.pt", stage="proposer", network=network, preprocessing=Preprocessing(),
                           training={})
    stored = torch.load(path, weights_only=True)["state_dict"]
    assert stored["decoders.0.1.running_var"].dtype == torch.float32
    assert stored["encoders.0.0.weight"].dtype == torch.float16
    loaded = load_checkpoint(path, stage="proposer")
    assert torch.equal(loaded.network.decoders[0][1].running_var, network.decoders[0][1].running_var)
    x = torch.randn(1, 4, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded.network(x), network(x), atol=2e-2)


def test_missing_corrupt_swapped_and_foreign_files(tmp_path):
    with pytest.raises(WeightsError, match="does not exist.*gastric-propagate train"):
        load_checkpoint(tmp_path / "nope.pt", stage="proposer")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x02 not a checkpoint")  # a truncated pickle (protocol 2, as torch.save)
    with pytest.raises(WeightsError, match="corrupt"):
        load_checkpoint(corrupt, stage="proposer")
    refiner = save_checkpoint(tmp_path / "r.pt", stage="refiner", network=tiny(6), preprocessing=Preprocessing(),
                              training={})
    with pytest.raises(WeightsError, match="swapped"):
        load_checkpoint(refiner, stage="proposer")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(WeightsError, match="not a GastricPropagate checkpoint"):
        load_checkpoint(foreign, stage="proposer")


def test_a_file_this_user_may_not_read_is_said_to_be_unreadable_not_corrupt(tmp_path, monkeypatch):
    """Root reads any file, as CI runs: the refusal of open() is raised where torch opens the file."""
    path = save_checkpoint(tmp_path / "p.pt", stage="proposer", network=tiny(), preprocessing=Preprocessing(),
                           training={})

    def denied(file, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(file))

    monkeypatch.setattr(torch, "load", denied)
    with pytest.raises(WeightsError, match="cannot be opened: permission denied. Let this user read it") as refusal:
        load_checkpoint(path, stage="proposer")
    assert "corrupt" not in str(refusal.value)


def test_incompatible_weights(tmp_path):
    path = save_checkpoint(tmp_path / "p.pt", stage="proposer", network=tiny(), preprocessing=Preprocessing(),
                           training={})
    payload = torch.load(path, weights_only=True)
    payload["architecture"]["config"]["base_channels"] = 8  # the weights no longer fit
    torch.save(payload, path)
    with pytest.raises(WeightsError, match="do not fit"):
        load_checkpoint(path, stage="proposer")


@pytest.mark.parametrize("config", [dict(in_channels=4, base_channels=4, depth=2), dict(in_channels=6),
                                    dict(in_channels=1, base_channels=3, depth=1), dict(in_channels=4, depth=5)])
def test_parameter_count_is_that_of_the_built_network(config):
    network = UNet2D(**config)
    assert UNet2D.parameter_count(**config) == sum(p.numel() for p in network.parameters())


class _NeverBuilt(UNet2D):
    def __init__(self, **config):
        raise AssertionError(f"the network was built: {config}")


def _declaring(tmp_path, **config):
    """A tiny proposer checkpoint whose stored architecture says ``config``."""
    path = save_checkpoint(tmp_path / "p.pt", stage="proposer", network=tiny(), preprocessing=Preprocessing(),
                           training={})
    payload = torch.load(path, weights_only=True)
    payload["architecture"]["config"].update(config)
    torch.save(payload, path)
    return path


def test_a_declared_network_too_large_to_build_is_refused_before_it_is_built(tmp_path, monkeypatch):
    from gastric_propagate.inference import networks  # load_checkpoint imports the network class when it runs

    monkeypatch.setattr(networks, "UNet2D", _NeverBuilt)
    path = _declaring(tmp_path, base_channels=1792, depth=3)  # about 24 GB as float32
    with pytest.raises(WeightsError, match=r"declares a proposer network of [\d,]+ million parameters "
                                           r"\(in_channels 4, base_channels 1792, depth 3\): building it would "
                                           r"take about 2\d\.\d GB of memory.*gastric-propagate train"):
        load_checkpoint(path, stage="proposer")
    with pytest.raises(WeightsError, match="million parameters"):  # a huge depth is counted, not overflowed
        load_checkpoint(_declaring(tmp_path, depth=60), stage="proposer")


def test_a_declared_network_larger_than_its_weights_is_refused_before_it_is_built(tmp_path, monkeypatch):
    from gastric_propagate.inference import networks  # load_checkpoint imports the network class when it runs

    monkeypatch.setattr(networks, "UNet2D", _NeverBuilt)
    with pytest.raises(WeightsError, match=r"do not fit their declared architecture .*base_channels 64"):
        load_checkpoint(_declaring(tmp_path, base_channels=64), stage="proposer")


@pytest.mark.parametrize("config", [dict(base_channels=0), dict(depth=True), dict(depth="3"), dict(width=8)])
def test_a_declared_network_that_cannot_be_built_is_refused(tmp_path, config):
    with pytest.raises(WeightsError, match="declares a proposer network this version cannot build"):
        load_checkpoint(_declaring(tmp_path, **config), stage="proposer")


def test_a_file_larger_than_any_network_is_refused_before_it_is_read(tmp_path, monkeypatch):
    from gastric_propagate.inference import checkpoints

    path = save_checkpoint(tmp_path / "p.pt", stage="proposer", network=tiny(), preprocessing=Preprocessing(),
                           training={})
    monkeypatch.setattr(checkpoints, "MAX_FILE_BYTES", path.stat().st_size - 1)
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: pytest.fail("the file was read"))
    with pytest.raises(WeightsError, match="larger than any network this tool builds"):
        load_checkpoint(path, stage="proposer")


def test_segmenter_refuses_a_pair_from_different_trainings(tmp_path):
    proposer = save_checkpoint(tmp_path / "p.pt", stage="proposer", network=tiny(), preprocessing=Preprocessing(),
                               training={})
    refiner = save_checkpoint(tmp_path / "r.pt", stage="refiner", network=tiny(6),
                              preprocessing=Preprocessing(pixel_spacing_mm=2.0), training={})
    with pytest.raises(WeightsError, match="different preprocessing"):
        Segmenter(proposer, refiner, device="cpu")


def test_bundled_weights_are_small_and_say_what_they_learned():
    for stage in ("proposer", "refiner"):
        path = bundled_weights(stage)
        assert path.stat().st_size < 5 * 1024 ** 2
        checkpoint = load_checkpoint(path, stage=stage)
        assert "phantom" in checkpoint.training["data"]
        assert "train --phantoms" in checkpoint.training["command"]


@pytest.mark.parametrize("stage, wrong", [("proposer", 6), ("refiner", 4), ("refiner", 5), ("proposer", 1)])
def test_a_network_reading_the_wrong_number_of_channels_is_refused_at_load(tmp_path, stage, wrong):
    path = save_checkpoint(tmp_path / f"{stage}.pt", stage=stage, network=tiny(wrong), preprocessing=Preprocessing(),
                           training={})
    with pytest.raises(WeightsError, match=f"reading {wrong} channels.*gastric-propagate train"):
        load_checkpoint(path, stage=stage)


def test_weights_holding_nan_are_refused_at_load(tmp_path):  # issue 26: 5
    network = tiny()
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.fill_(float("nan"))
    path = save_checkpoint(tmp_path / "p.pt", stage="proposer", network=network, preprocessing=Preprocessing(),
                           training={})
    with pytest.raises(WeightsError, match=r"hold NaN or Inf values \(\d+ of \d+ tensors.*gastric-propagate train"):
        load_checkpoint(path, stage="proposer")


def test_one_infinite_weight_is_enough_to_refuse(tmp_path):
    network = tiny()
    with torch.no_grad():
        next(network.parameters()).view(-1)[3] = float("inf")
    path = save_checkpoint(tmp_path / "p.pt", stage="proposer", network=network, preprocessing=Preprocessing(),
                           training={})
    with pytest.raises(WeightsError, match="NaN or Inf"):
        load_checkpoint(path, stage="proposer")


@pytest.mark.parametrize("values, named", [
    ({"pixel_spacing_mm": 0.01}, "pixel_spacing_mm 0.01"), ({"pixel_spacing_mm": 0}, "pixel_spacing_mm 0"),
    ({"pixel_spacing_mm": float("nan")}, "pixel_spacing_mm nan"), ({"size_multiple": 0}, "size_multiple 0"),
    ({"size_multiple": 16.5}, "size_multiple 16.5"), ({"min_size": 100_000}, "min_size 100000"),
    ({"intensity": "zscore"}, "intensity must be 'prompt' or 'window'"), ({"slice_step_mm": -2.0}, "slice_step_mm"),
    ({"prompt_scale_hu": 0.0}, "prompt_scale_hu 0.0"), ({"hu_window": [350.0, -250.0]}, "hu_window"),
    ({"margin_fraction": float("inf")}, "margin_fraction inf"), ({"colour": "red"}, "colour"),
])
def test_insane_preprocessing_values_are_refused_at_load(tmp_path, values, named):  # issue 26: 11
    path = save_checkpoint(tmp_path / "p.pt", stage="proposer", network=tiny(), preprocessing=Preprocessing(),
                           training={})
    payload = torch.load(path, weights_only=True)
    payload["preprocessing"].update(values)
    torch.save(payload, path)
    with pytest.raises(WeightsError, match=f"declares proposer preprocessing this version cannot use .*{named}.*"
                                           "gastric-propagate train"):
        load_checkpoint(path, stage="proposer")


def test_the_bundled_preprocessing_is_within_the_accepted_ranges():
    from gastric_propagate.inference.checkpoints import _preprocessing_problem

    assert _preprocessing_problem(Preprocessing()) is None
    assert _preprocessing_problem(Preprocessing(slice_step_mm=None)) is None


def test_a_proposer_and_refiner_of_two_trainings_are_warned_about(tmp_path, caplog):
    """Both given, from two `train` runs (the refiner learned its own proposer's output): said before the run."""
    paths = {}
    for run, date in (("a", "2026-12-01T10:00:00+00:00"), ("b", "2026-12-02T10:00:00+00:00")):
        for stage, channels in (("proposer", 4), ("refiner", 6)):
            paths[run, stage] = save_checkpoint(tmp_path / run / f"{stage}.pt", stage=stage, network=tiny(channels),
                                                preprocessing=Preprocessing(), training={"date": date})
    with caplog.at_level("WARNING", logger="gastric_propagate.inference.pipeline"):
        Segmenter(paths["a", "proposer"], paths["a", "refiner"], device="cpu", backend="torch")
    assert "different 'gastric-propagate train' runs" not in caplog.text, "one run's pair is no mix"
    with caplog.at_level("WARNING", logger="gastric_propagate.inference.pipeline"):
        Segmenter(paths["a", "proposer"], paths["b", "refiner"], device="cpu", backend="torch")
    assert "different 'gastric-propagate train' runs" in caplog.text
    assert "2026-12-01T10:00:00+00:00" in caplog.text and "2026-12-02T10:00:00+00:00" in caplog.text
