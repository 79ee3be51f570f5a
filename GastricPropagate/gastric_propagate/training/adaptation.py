"""The refiner adapted to the case at hand (``segment --adapt``): fine-tuned on the painted slice before it runs.

The painted slice is a true outline of this tumour, in this patient, on this scanner: video object segmentation's
one-shot methods fine-tune on the first frame's mask for that reason (OSVOS, MaskTrack). The refiner is the network
adapted, not the proposer: the proposer decides how far the tumour reaches and how large each next slice is, and
fine-tuned on the painted (largest) slice it learned "as large as this" (stop 45's TTA,
docs/evaluation/real-ct-training/rules.md); the refiner only corrects each slice's outline.

Half of each batch is the painted slice, read as the refiner reads any slice (image and coarse masks on k-1, k,
k+1: the proposer's masks beside it, the painted outline perturbed as in training in the middle), with the painted
outline as target; the other half is the unadapted refiner's own output on a slice the chains visited (distilled),
so that what it does elsewhere holds. Batch norms keep their statistics (one case is too little to estimate them).
"""

from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import torch

from gastric_propagate.errors import Cancelled
from gastric_propagate.inference.networks import UNet2D
from gastric_propagate.inference.refinement import refiner_input
from gastric_propagate.training.train import augment, perturb_mask, segmentation_loss

STEPS = 20
LEARNING_RATE = 3e-4
BATCH_SIZE = 8
DISTILLED_SHARE = 0.5
MAX_PERTURBATIONS = 2  # the painted outline is perturbed by one or two of training's draws
SEED = 0  # the same case and options give the same adapted refiner


def adapt_refiner(network: UNet2D, image: np.ndarray, coarse: np.ndarray, anchors: dict[int, np.ndarray],
                  unadapted: dict[int, np.ndarray], *, steps: int = STEPS,
                  should_stop: Callable[[], bool] | None = None) -> UNet2D:
    """A copy of the refiner ``network`` fine-tuned on this case; ``network`` itself is left as it is.

    Args:
        network: the trained refiner (with its batch norms).
        image: (Z, S, S) normalised crop, float32, as the pipeline gives the networks.
        coarse: (Z, S, S) the proposer's probabilities on it.
        anchors: working slice -> painted cross-section (bool, S x S) on the crop.
        unadapted: slice -> the unadapted refiner's probabilities there (the slices to distil from; may be empty).
        steps: optimiser steps.
        should_stop: polled before each step; True raises Cancelled.
    """
    device = next(network.parameters()).device
    adapted = copy.deepcopy(network).eval()  # eval: batch norms keep their statistics
    optimiser = torch.optim.Adam(adapted.parameters(), lr=LEARNING_RATE)
    rng = np.random.default_rng(SEED)
    coarse_mask = (coarse > 0.5).astype(np.float32)
    painted, distilled = sorted(anchors), sorted(unadapted)
    with torch.enable_grad():
        for _ in range(steps):
            if should_stop is not None and should_stop():
                raise Cancelled("cancelled while the refiner was adapted to this CT")
            pairs = [_distilled(image, coarse_mask, unadapted, distilled, rng)
                     if distilled and rng.random() < DISTILLED_SHARE
                     else _painted(image, coarse_mask, anchors, painted, rng) for _ in range(BATCH_SIZE)]
            inputs, targets = (torch.from_numpy(np.stack(part)).to(device) for part in zip(*pairs))
            loss = segmentation_loss(adapted(inputs), targets, torch.ones_like(targets))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    return adapted.eval()


def _painted(image, coarse_mask, anchors, painted, rng):
    """(input, target): a painted slice, its coarse mask the painted outline perturbed; the target the outline."""
    k = painted[0] if len(painted) == 1 else painted[int(rng.integers(len(painted)))]  # keyframes: any of them
    outline = anchors[k]
    for _ in range(int(rng.integers(1, MAX_PERTURBATIONS + 1))):
        outline = perturb_mask(outline, rng)
    masks = coarse_mask.copy()
    masks[k] = outline
    return _augmented(refiner_input(image, masks, [k])[0], anchors[k], rng)


def _distilled(image, coarse_mask, unadapted, distilled, rng):
    """(input, target): a visited slice as the refiner reads it; the target what the unadapted refiner made of it."""
    k = distilled[int(rng.integers(len(distilled)))]
    return _augmented(refiner_input(image, coarse_mask, [k])[0], unadapted[k], rng)


def _augmented(stack: np.ndarray, target: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    stack, target = augment([stack.astype(np.float32), target[None].astype(np.float32)], rng, image_channels=3)
    return stack, target
