"""Shared fixtures for the engine tests: a synthetic volume and networks whose behaviour is known exactly."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gastric_propagate.inference.checkpoints import bundled_weights
from gastric_propagate.inference.pipeline import Segmenter
from gastric_propagate.inference.preprocessing import Preprocessing

SPACING = (0.8, 0.8, 2.5)
SCRIPTS = Path(__file__).resolve().parents[3] / "scripts"


def load_script(name: str):
    """The module of ``scripts/<name>.py`` (the scripts are not a package), to test its functions."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class OracleProposer(nn.Module):
    """Follows the painted tissue: tumour = pixels of slice k within 75 HU of the painted region's median
    (|x| < 0.25 under the default prompt normalisation, 300 HU per unit) near the previous slice's mask."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        near_previous = F.max_pool2d(x[:, 3:4], 7, stride=1, padding=3) > 0.5
        like_painted = x[:, 1:2].abs() < 0.25
        return torch.where(near_previous & like_painted, 10.0, -10.0)


class CopyCoarseRefiner(nn.Module):
    """Returns the coarse mask of slice k unchanged (channel 4 of the refiner's input)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x[:, 4:5] > 0.5, 10.0, -10.0)


def make_volume(depth: int = 40, size: int = 128, centre_z: int = 20, radius_mm: float = 16.0, seed: int = 0):
    """A CT-like volume (HU) with a bright sphere-ish tumour; returns (image int16, label uint8)."""
    z, y, x = np.mgrid[:depth, :size, :size]
    distance = np.sqrt(((z - centre_z) * SPACING[2]) ** 2 + ((y - size / 2) * SPACING[1]) ** 2
                       + ((x - size / 2 + 4) * SPACING[0]) ** 2)
    label = (distance < radius_mm).astype(np.uint8)
    rng = np.random.default_rng(seed)
    image = np.where(label > 0, 120.0, -60.0) + rng.normal(0, 8, label.shape)
    image[:, :6, :] = -1000.0  # air in front of the body, as in any abdominal CT
    return image.astype(np.int16), label


def segment_demo_phantom(*backends: str):
    """The demo phantom's label and its results with the bundled networks under each backend: (label, {backend:
    SegmentationResult})."""
    from gastric_propagate.data.annotation import annotation_from_label
    from gastric_propagate.demo import DEMO_SEED
    from gastric_propagate.synthetic.phantom import make_phantom

    phantom = make_phantom(DEMO_SEED)
    image, label = phantom.arrays()
    annotation = annotation_from_label(label)
    return label, {backend: Segmenter(device="cpu", backend=backend).segment(image, phantom.spacing, annotation)
                   for backend in backends}


def write_cases_folder(folder, count: int):
    """``count`` small labelled cases (``make_volume``) in the <case>_image / <case>_label NRRD layout."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        image, label = make_volume(depth=16, size=64, centre_z=8, radius_mm=10.0, seed=index)
        for kind, array in (("image", image), ("label", label)):
            written = sitk.GetImageFromArray(array)
            written.SetSpacing(SPACING)
            sitk.WriteImage(written, str(folder / f"case{index}_{kind}.nrrd"))
    return folder


@pytest.fixture
def volume():
    return make_volume()


@pytest.fixture
def oracle_segmenter() -> Segmenter:
    return Segmenter.from_networks(OracleProposer(), CopyCoarseRefiner(), Preprocessing(), device="cpu")


@pytest.fixture(scope="session")
def bundled_segmenter() -> Segmenter:
    """The shipped weights; these tests fail (not skip) when the weights are missing: they are part of the product."""
    assert bundled_weights("proposer").is_file(), "the bundled proposer weights are missing"
    return Segmenter(device="cpu")
