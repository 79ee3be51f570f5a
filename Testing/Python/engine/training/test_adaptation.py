"""training/adaptation.py: the refiner fine-tuned on the painted slice of the case at hand (``segment --adapt``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from gastric_propagate.errors import Cancelled
from gastric_propagate.inference.networks import UNet2D
from gastric_propagate.inference.refinement import refiner_input
from gastric_propagate.training.adaptation import adapt_refiner
from gastric_propagate.training.train import segmentation_loss

SIZE, DEPTH, PAINTED = 32, 7, 3


def _case():
    """A normalised crop with a bright disc on every slice, the disc painted on slice 3, and a coarse mask one pixel
    wider than the disc: what a refiner should learn to pull in."""
    rng = np.random.default_rng(1)
    ys, xs = np.mgrid[:SIZE, :SIZE]
    disc = (ys - 16) ** 2 + (xs - 15) ** 2 < 36
    image = np.where(disc, 0.3, -0.3)[None].repeat(DEPTH, axis=0) + rng.normal(0, 0.05, (DEPTH, SIZE, SIZE))
    coarse = np.repeat(ndimage.binary_dilation(disc, iterations=2)[None], DEPTH, axis=0).astype(np.float32)
    return image.astype(np.float32), coarse, {PAINTED: disc}


def _refiner() -> UNet2D:
    torch.manual_seed(0)
    return UNet2D(in_channels=6, base_channels=4, depth=2).eval()


def _painted_loss(network: UNet2D, image, coarse, anchors) -> float:
    """The loss on the painted slice read with the wider coarse mask, without augmentation."""
    inputs = torch.from_numpy(refiner_input(image, coarse, [PAINTED]))
    target = torch.from_numpy(anchors[PAINTED][None, None].astype(np.float32))
    with torch.no_grad():
        return float(segmentation_loss(network(inputs), target, torch.ones_like(target)))


def test_the_adapted_refiner_learns_the_painted_outline_and_the_trained_one_is_left_as_it_was():
    image, coarse, anchors = _case()
    trained = _refiner()
    before = {name: tensor.clone() for name, tensor in trained.state_dict().items()}
    adapted = adapt_refiner(trained, image, coarse, anchors, {}, steps=200)
    assert _painted_loss(adapted, image, coarse, anchors) < 0.8 * _painted_loss(trained, image, coarse, anchors)
    assert all(torch.equal(before[name], tensor) for name, tensor in trained.state_dict().items())
    assert not adapted.training and adapted.config == trained.config


def test_the_same_case_gives_the_same_adapted_refiner():
    image, coarse, anchors = _case()
    unadapted = {k: coarse[k] for k in range(DEPTH) if k != PAINTED}
    first, second = (adapt_refiner(_refiner(), image, coarse, anchors, unadapted, steps=5) for _ in range(2))
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


def test_distilled_slices_keep_the_refiner_near_what_it_made_of_them():
    """Half the samples are the unadapted refiner's own output elsewhere: the adapted refiner moves less on those
    slices than one taught by the painted slice alone."""
    image, coarse, anchors = _case()
    image[PAINTED + 1:] = -image[PAINTED + 1:]  # the slices above look nothing like the painted one
    trained = _refiner()
    elsewhere = [k for k in range(DEPTH) if k != PAINTED]
    with torch.no_grad():
        unadapted = {k: torch.sigmoid(trained(torch.from_numpy(refiner_input(image, coarse, [k]))))[0, 0].numpy()
                     for k in elsewhere}

    def drift(network) -> float:
        with torch.no_grad():
            return float(np.mean([np.abs(torch.sigmoid(network(torch.from_numpy(refiner_input(image, coarse, [k]))))
                                         [0, 0].numpy() - unadapted[k]).mean() for k in elsewhere]))

    painted_only = adapt_refiner(trained, image, coarse, anchors, {}, steps=40)
    with_distilled = adapt_refiner(trained, image, coarse, anchors, unadapted, steps=40)
    assert drift(with_distilled) < drift(painted_only)


def test_adapting_stops_when_asked():
    image, coarse, anchors = _case()
    with pytest.raises(Cancelled):
        adapt_refiner(_refiner(), image, coarse, anchors, {}, should_stop=lambda: True)
