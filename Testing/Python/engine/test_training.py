"""A tiny training run: both checkpoints written, loadable, self-describing and reproducible."""

import torch

from gastric_propagate.inference.checkpoints import load_checkpoint
from gastric_propagate.data.cases import phantom_cases
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
    assert set(meta["validation"]) == {"proposer", "proposer+refiner", "cases"}
    Segmenter(paths["proposer"], paths["refiner"], device="cpu")  # the pair loads together


def test_same_seed_same_weights(tmp_path):
    cases = small_cases()
    first = train(cases, tmp_path / "a", config=CONFIG, device="cpu")
    second = train(cases, tmp_path / "b", config=CONFIG, device="cpu")
    a = torch.load(first["proposer"], weights_only=True)["state_dict"]
    b = torch.load(second["proposer"], weights_only=True)["state_dict"]
    assert all(torch.equal(a[name], b[name]) for name in a)
