"""Training both stages on image/label pairs: the proposer first, then the refiner on its output.

Both stages train on fixed-size windows of the same crops the pipeline makes at inference time
(``preprocessing.crop_grid_for`` around the largest cross-section, jittered), so what the networks
learn is what they will see.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import logging
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from tqdm import tqdm

from gastric_propagate import __version__
from gastric_propagate.data.annotation import annotation_from_label, largest_cross_section_index
from gastric_propagate.data.cases import CaseData
from gastric_propagate.data.outputs import OutputBatch
from gastric_propagate.errors import InputError
from gastric_propagate.inference.backends import resolve_device
from gastric_propagate.inference.checkpoints import INPUT_CHANNELS, PROMPT_CHANNELS, save_checkpoint
from gastric_propagate.inference.masks import equivalent_diameter_mm
from gastric_propagate.inference.networks import TorchRunner, UNet2D, with_input_channels
from gastric_propagate.inference.pipeline import PropagationOptions, Segmenter
from gastric_propagate.inference.preprocessing import (Preprocessing, crop_grid_for, normalise, prompt_centre, to_crop,
                                                       with_working_slices)
from gastric_propagate.inference.propagation import StopRule, propagate
from gastric_propagate.inference.refinement import refiner_input

log = logging.getLogger(__name__)

# Working slices kept beyond each end of the tumour: where the proposer learns to stop.
END_MARGIN = 4
# Spread (HU) of the shift applied to the prompt's median in training: painted outlines vary (tight, generous),
# and so does the median of what they hold.
PROMPT_JITTER_HU = 10.0
# A simulated leak (``_leaked``): how far beyond the true outline it may run (crop pixels, about 1 mm each), and how
# close to the painted tumour's median the tissue it runs into is (the crop's units: the median is 0, and 300 HU is 1,
# 100 HU per unit clipped at 3 units and scaled to [-1, 1]; 0.3 is 90 HU).
LEAK_REACH_PX = (3, 12)
LEAK_SIMILARITY = 0.3


@dataclass(frozen=True)
class TrainingConfig:
    """Everything that decides a training run; stored in the checkpoints it produces."""

    proposer_steps: int = 1500
    refiner_steps: int = 800
    batch_size: int = 16
    window: int = 96
    learning_rate: float = 2e-3
    base_channels: int = 16
    depth: int = 3
    crops_per_case: int = 2
    hard_pixel_weight: float = 4.0
    boundary_weight: float = 2.0
    seed: int = 0
    threads: int | None = None
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    init: str = ""  # checkpoints the networks started from (fine-tuning), or "" for a fresh start
    # Share of the samples each source gets ((name, weight) pairs; see ``sampling_weights``); () draws crops uniformly.
    mix: tuple[tuple[str, float], ...] = ()
    # In-plane zoom drawn per crop (the crop's pixel spacing divided by it): lesions of other sizes than the data's.
    zoom_range: tuple[float, float] = (1.0, 1.0)
    # Share of the proposer's samples whose previous mask is the proposer's own propagation on the crop (its
    # rollout) instead of the perturbed truth (``_self_fed_sample``); 0: none.
    self_fed: float = 0.0
    # How many times those rollouts are recomputed from the proposer being trained, evenly over its self-fed steps
    # (DAgger: it learns from its own current errors); 0: computed once (``_fit_proposer``).
    self_fed_refresh: int = 0
    # "basic": flips, turns and intensity jitter (``_augment``); "torchio": those, then TorchIO's elastic
    # deformation, coarser in-plane resolution, blur and noise (``_torchio_augment``).
    augment: str = "basic"
    # The proposer also reads the painted slice's mask (the crop's largest true cross-section in training) at every
    # step, not only as the first step's previous mask: a fifth input channel (``checkpoints.PROMPT_CHANNELS``).
    prompt_channel: bool = False
    # Share of the refiner's samples whose coarse mask is the truth run into the same-density tissue beside it
    # (``_leaked``), the proposer's error on unseen lesions that its own training crops rarely show; 0: none.
    refiner_leaks: float = 0.0
    # Extra weight of the proposer's loss on the true outline (one pixel either side); 0: every pixel counts 1.
    proposer_boundary_weight: float = 0.0
    # Share of the proposer's samples inside the tumour drawn on the outward side of its largest cross-section, the
    # way the inference chains walk (from the painted largest slice towards the ends, where the outline shrinks); the
    # others anywhere from end to end, half of them towards the largest slice (the outline grows); 0: none.
    outward_share: float = 0.0
    # The refiner's slices are drawn also where the coarse mask runs past the tumour's ends (a chain's overshoot, up to
    # ``END_MARGIN`` slices), not only within one slice of them, so that it learns to clear an overshoot.
    refiner_overshoot: bool = False
    # ``sampling_weights``: a size bin of a source holding fewer crops than this joins a neighbour; 0: every bin on
    # its own, however few crops it holds.
    min_bin_crops: int = 0
    # The soft Dice also on the samples whose target is empty (the tumour ended): there it is 1 for any positive output
    # however faint, a push towards "nothing" wherever the network is unsure; False: those samples learn from the
    # cross-entropy alone.
    empty_target_dice: bool = True
    # Share of both networks' samples of a lesion wider than half the window (``_window_centre``) whose window is
    # centred on a point of the true outline instead of the mask's centre: a large lesion's outline with tissue on
    # both sides, as the networks read it on the whole crop at inference; 0: always the centre.
    outline_windows: float = 0.0

    def describe(self) -> dict:
        values = asdict(self)
        values["preprocessing"] = self.preprocessing.to_dict()
        values["mix"] = dict(self.mix)
        values["zoom_range"] = list(self.zoom_range)
        return values


@dataclass
class _CropVolume:
    """One case on the networks' grid (working slices), restricted to the tumour and ``END_MARGIN`` beyond."""

    image: np.ndarray   # (z, S, S) normalised
    label: np.ndarray   # (z, S, S) bool
    first: int          # first tumour slice in this crop's z
    last: int
    # Whether tumour-free slices lie before ``first`` / after ``last``: crops cut at the lesion have none, and the
    # proposer must not learn from them that a tumour goes on past the end of the scan.
    free_ends: tuple[bool, bool] = (True, True)
    source: str = ""
    diameter_mm: float = 0.0  # equivalent diameter of the largest cross-section
    pixel_mm: float = 0.0  # the crop's pixel size (the preprocessing's divided by its zoom); 0: the preprocessing's


# Size bins (equivalent diameter of the largest cross-section, mm) that ``sampling_weights`` balances.
SIZE_BIN_EDGES_MM = (10.0, 20.0, 40.0)


def sampling_weights(crops: list[_CropVolume], mix: dict[str, float], min_bin_crops: int = 0) -> np.ndarray:
    """The probability of drawing each crop: each source its share of ``mix``, and inside a source every size bin
    (``SIZE_BIN_EDGES_MM``) an equal part, so that a few large lesions are not drowned by many small ones. A bin of
    fewer than ``min_bin_crops`` crops joins a neighbour (``_merge_sparse_bins``): alone in its bin, one lesion would
    get as many samples as hundreds in the next."""
    weights = np.zeros(len(crops))
    for source, share in mix.items():
        members = [i for i, crop in enumerate(crops) if crop.source == source]
        bins = {}
        for i in members:
            bins.setdefault(int(np.searchsorted(SIZE_BIN_EDGES_MM, crops[i].diameter_mm)), []).append(i)
        bins = _merge_sparse_bins([bins[key] for key in sorted(bins)], min_bin_crops)
        for indices in bins:
            weights[indices] = share / len(bins) / len(indices)
    if weights.sum() <= 0:
        raise ValueError("the mix gives no weight to any training case")
    return weights / weights.sum()


def _merge_sparse_bins(bins: list[list[int]], min_crops: int) -> list[list[int]]:
    """Size bins (smallest lesions first) with each bin of fewer than ``min_crops`` crops merged, smallest first, into
    the adjacent bin that holds fewer (the larger lesions' on a tie), until every bin holds enough or one is left."""
    bins = [list(b) for b in bins]
    while len(bins) > 1:
        sparse = [i for i, b in enumerate(bins) if len(b) < min_crops]
        if not sparse:
            break
        i = min(sparse, key=lambda j: len(bins[j]))
        neighbours = [j for j in (i - 1, i + 1) if 0 <= j < len(bins)]
        target = min(neighbours, key=lambda j: (len(bins[j]), -j))
        bins[target] = sorted(bins[target] + bins[i])
        del bins[i]
    return bins


def _make_crops(case: CaseData, config: TrainingConfig, rng: np.random.Generator,
                source: str = "") -> list[_CropVolume]:
    crops = []
    label = case.label > 0
    areas = label.reshape(label.shape[0], -1).sum(axis=1)
    tumour_slices = np.flatnonzero(areas)
    if tumour_slices.size == 0:
        log.warning("case %s has an empty label: skipped", case.name)
        return crops
    largest = largest_cross_section_index(label)
    centre = prompt_centre(case.image[largest], label[largest])
    diameter = equivalent_diameter_mm(label[largest], case.spacing_xyz)
    for _ in range(config.crops_per_case):
        prep = config.preprocessing
        if config.zoom_range != (1.0, 1.0):
            zoom = float(np.exp(rng.uniform(*np.log(config.zoom_range))))
            prep = dataclasses.replace(prep, pixel_spacing_mm=prep.pixel_spacing_mm / zoom)
        grid = crop_grid_for(label[largest][None], case.spacing_xyz, prep,
                             centre_shift_mm=tuple(rng.uniform(-6, 6, size=2)),
                             extra_margin_mm=float(rng.uniform(0, 8)))
        grid = with_working_slices(grid, [largest], label.shape[0], case.spacing_xyz[2], prep)
        mask = to_crop(label.astype(np.float32), grid, default_value=0.0) > 0.5
        working = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
        if working.size == 0:
            continue
        z0, z1 = max(0, working[0] - END_MARGIN), min(mask.shape[0], working[-1] + END_MARGIN + 1)
        # Only the working slices kept are resampled from the CT.
        window = dataclasses.replace(grid, origin_z=grid.slice_position(int(z0)), depth=int(z1 - z0))
        image = normalise(to_crop(case.image, window), prep, centre + rng.normal(0.0, PROMPT_JITTER_HU))
        free_ends = (bool(working[0] > 0), bool(working[-1] < mask.shape[0] - 1))
        crops.append(_CropVolume(image, mask[z0:z1], working[0] - z0, working[-1] - z0, free_ends, source,
                                 diameter, prep.pixel_spacing_mm))
    if not crops:
        log.warning("case %s: no tumour voxel is left on the networks' grid (%g mm pixels): it is not learned from",
                    case.name, config.preprocessing.pixel_spacing_mm)
    return crops


def _window(arrays: list[np.ndarray], centre: tuple[int, int], size: int, pads: list[float],
            rng: np.random.Generator) -> list[np.ndarray]:
    """The same ``size`` x ``size`` window of each (c, S, S) array, around ``centre`` with jitter, padded."""
    side = arrays[0].shape[-1]
    jitter = size // 4
    top = int(np.clip(centre[0] - size // 2 + rng.integers(-jitter, jitter + 1), -size // 4, side - size + size // 4))
    left = int(np.clip(centre[1] - size // 2 + rng.integers(-jitter, jitter + 1), -size // 4, side - size + size // 4))
    out = []
    for array, pad in zip(arrays, pads):
        window = np.full(array.shape[:-2] + (size, size), pad, dtype=np.float32)
        ys, xs = slice(max(top, 0), min(top + size, side)), slice(max(left, 0), min(left + size, side))
        window[..., ys.start - top:ys.stop - top, xs.start - left:xs.stop - left] = array[..., ys, xs]
        out.append(window)
    return out


def _perturb_mask(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Simulates the errors a propagated mask carries: grown, shrunk, shifted, or left as it is."""
    choice = rng.random()
    iterations = int(rng.integers(1, 3))
    if choice < 0.25:
        mask = ndimage.binary_dilation(mask, iterations=iterations)
    elif choice < 0.5:
        eroded = ndimage.binary_erosion(mask, iterations=iterations)
        mask = eroded if eroded.any() else mask
    if rng.random() < 0.4:
        mask = np.roll(mask, tuple(rng.integers(-2, 3, size=2)), axis=(0, 1))
    return mask


def _outline(mask: np.ndarray) -> np.ndarray:
    """The pixels within one of a mask's outline, either side: where both networks' losses weigh more."""
    return ndimage.binary_dilation(mask) & ~ndimage.binary_erosion(mask)


def _leaked(crop: _CropVolume, k: int, rng: np.random.Generator) -> np.ndarray:
    """The crop's true masks, on slices k-1, k and k+1 (all the refiner reads) run into the tissue beside them that is
    close to the tumour's intensity: towards one side (drawn once), up to a reach (drawn once), the pixels within
    ``LEAK_SIMILARITY`` of the tumour's median that connect to the truth. A slice without tumour stays empty; one
    with nothing of the tumour's density beside it (a nodule in air) keeps the truth."""
    reach = float(rng.integers(LEAK_REACH_PX[0], LEAK_REACH_PX[1] + 1))
    towards = rng.uniform(-np.pi, np.pi)
    half_width = rng.uniform(np.pi / 4, np.pi)  # a narrow tongue up to all round
    coarse = crop.label.astype(np.float32)
    for m in sorted({int(np.clip(k + offset, 0, crop.image.shape[0] - 1)) for offset in (-1, 0, 1)}):
        truth = crop.label[m]
        if not truth.any():
            continue
        cy, cx = _centre(truth)
        ys, xs = np.mgrid[:truth.shape[0], :truth.shape[1]]
        off_side = np.angle(np.exp(1j * (np.arctan2(ys - cy, xs - cx) - towards)))  # wrapped to [-pi, pi]
        grown = truth | ((ndimage.distance_transform_edt(~truth) <= reach) & (np.abs(off_side) <= half_width)
                         & (np.abs(crop.image[m]) <= LEAK_SIMILARITY))
        regions, _ = ndimage.label(grown)
        coarse[m] = np.isin(regions, np.unique(regions[truth]))
    return coarse


def _augment(arrays: list[np.ndarray], rng: np.random.Generator, image_channels: int) -> list[np.ndarray]:
    """Flips, 90-degree turns (scans come in every orientation) and intensity jitter on the image channels."""
    turns = int(rng.integers(0, 4))
    flip = rng.random() < 0.5
    out = []
    for array in arrays:
        array = np.rot90(array, turns, axes=(-2, -1))
        out.append(np.ascontiguousarray(array[..., ::-1] if flip else array))
    stack = out[0]
    stack[:image_channels] = stack[:image_channels] * rng.uniform(0.9, 1.1) + rng.uniform(-0.08, 0.08)
    stack[:image_channels] += rng.normal(0, rng.uniform(0, 0.04), size=stack[:image_channels].shape)
    return out


@functools.cache  # built once, on first use: TorchIO is imported only when asked for
def _torchio_transform():
    """TorchIO's transforms for one 2D sample (a (C, W, W, 1) volume): an elastic deformation of image and masks
    together, and on the image alone a coarser in-plane resolution, blur and noise (other scanners and kernels)."""
    import torchio as tio  # training-only dependency (the "train" extra)

    image_only = {"include": ["image"]}
    return tio.Compose([
        tio.RandomElasticDeformation(num_control_points=(7, 7, 5), max_displacement=(4, 4, 0), locked_borders=2,
                                     p=0.3),
        tio.RandomAnisotropy(axes=(0, 1), downsampling=(1.2, 2.5), p=0.25, **image_only),
        tio.RandomBlur(std=(0, 1.0), p=0.25, **image_only),
        tio.RandomNoise(std=(0, 0.04), p=0.3, **image_only),
    ])


def _torchio_augment(arrays: list[np.ndarray], image_channels: int) -> list[np.ndarray]:
    """``arrays[0]``'s first ``image_channels`` are the image; its other channels and the other arrays (target,
    pixel weights) are maps that move with it, resampled by nearest neighbour. Draws from torch's generator."""
    import torch
    import torchio as tio

    stack = arrays[0]
    maps = [stack[image_channels:]] + list(arrays[1:])
    subject = tio.Subject(image=tio.ScalarImage(tensor=torch.from_numpy(stack[:image_channels, ..., None].copy())),
                          **{f"map{i}": tio.LabelMap(tensor=torch.from_numpy(m[..., None].copy()))
                             for i, m in enumerate(maps)})
    out = _torchio_transform()(subject)
    moved = [out[f"map{i}"].data[..., 0].numpy() for i in range(len(maps))]
    return [np.concatenate([out["image"].data[..., 0].numpy(), moved[0]]).astype(np.float32)] + [
        m.astype(np.float32) for m in moved[1:]]


def _centre(mask: np.ndarray) -> tuple[int, int]:
    ys, xs = np.nonzero(mask)
    return (int(ys.mean()), int(xs.mean())) if ys.size else (mask.shape[0] // 2, mask.shape[1] // 2)


def _window_centre(centred_on: np.ndarray, truth: np.ndarray, config: TrainingConfig,
                   rng: np.random.Generator) -> tuple[int, int]:
    """Where a sample's window is centred: ``centred_on``'s centre; or, with ``config.outline_windows``, for that
    share of the lesions wider than half the window (the joint bounding box of ``centred_on`` and ``truth``), a
    point drawn on the true outline (``centred_on``'s where ``truth`` is empty). No draw without the option: the
    same samples as before it."""
    if not config.outline_windows:
        return _centre(centred_on)
    both = centred_on | truth
    ys, xs = np.nonzero(both)
    wide = ys.size and max(np.ptp(ys), np.ptp(xs)) + 1 > config.window // 2
    if not (wide and rng.random() < config.outline_windows):
        return _centre(centred_on)
    oy, ox = np.nonzero(_outline(truth if truth.any() else centred_on))
    i = int(rng.integers(oy.size))
    return int(oy[i]), int(ox[i])


def _proposer_sample(crop: _CropVolume, config: TrainingConfig, rng: np.random.Generator):
    """Input (4, W, W): slices k-d, k, k+d and the (perturbed) mask of k-d (and, with ``config.prompt_channel``, a
    fifth: the painted mask); target: the true mask of k.

    A third of the samples lie beyond the tumour's end: the previous mask is the end's cross-section
    (what a propagation that overshot carries along) over tissue that is not tumour, and the target is
    empty. Without them the network learns to copy the previous mask and never stops. They are drawn only
    beyond an end with tumour-free slices (the other end, or inside the tumour, when the crop is cut there).
    """
    depth = crop.image.shape[0]
    direction = 1 if rng.random() < 0.5 else -1
    beyond = rng.random() < 1 / 3
    if beyond and not crop.free_ends[direction == 1]:
        direction = -direction
        beyond = crop.free_ends[direction == 1]
    end = crop.last if direction == 1 else crop.first
    if beyond:
        k = int(np.clip(end + direction * rng.integers(1, END_MARGIN + 1), 0, depth - 1))
        previous = crop.label[end]
    elif config.outward_share and rng.random() < config.outward_share:  # no draw without it: the same weights
        largest = _largest_slice(crop)  # from the slice after the largest to the first beyond the end
        k = int(np.clip(largest + direction * rng.integers(1, (end - largest) * direction + 2), 0, depth - 1))
        previous = crop.label[int(np.clip(k - direction, 0, depth - 1))]
    else:
        start = crop.first if direction == 1 else crop.last
        k = int(start + direction * rng.integers(1, crop.last - crop.first + 2))
        k = int(np.clip(k, 0, depth - 1))
        previous = crop.label[int(np.clip(k - direction, 0, depth - 1))]
        if not previous.any():
            previous = crop.label[end]
    source = int(np.clip(k - direction, 0, depth - 1))
    following = int(np.clip(k + direction, 0, depth - 1))
    return _proposer_window(crop.image[[source, k, following]], _perturb_mask(previous, rng), crop.label[k],
                            config, rng, _prompt(crop, config))


def _prompt(crop: _CropVolume, config: TrainingConfig) -> np.ndarray | None:
    """What the proposer reads as the painted mask (``config.prompt_channel``): the crop's largest true cross-section,
    where its inference chain starts; None without the prompt channel."""
    return crop.label[_largest_slice(crop)] if config.prompt_channel else None


def _proposer_window(images: np.ndarray, previous: np.ndarray, truth: np.ndarray, config: TrainingConfig,
                     rng: np.random.Generator, prompt: np.ndarray | None = None):
    """The proposer's sample from three slices, the previous mask (and the painted mask, ``prompt``) and the truth:
    windowed around the previous mask, augmented; (input (4 or 5, W, W), target (1, W, W), pixel weights: 1, and
    1 + ``config.proposer_boundary_weight`` on the true outline)."""
    masks = [previous] if prompt is None else [previous, prompt]
    stack = np.concatenate([images] + [mask[None].astype(np.float32) for mask in masks])
    stack, target = _window([stack, truth[None].astype(np.float32)], _window_centre(previous, truth, config, rng),
                            config.window, [-1.0, 0.0], rng)
    stack[3:][stack[3:] == -1.0] = 0.0  # the mask channels pad with 0, not the image's -1
    stack, target = _augment([stack, target], rng, image_channels=3)
    if config.augment == "torchio":
        stack, target = _torchio_augment([stack, target], image_channels=3)
    weight = np.ones_like(target)
    if config.proposer_boundary_weight:
        weight[0] += config.proposer_boundary_weight * _outline(target[0] > 0.5)
    return stack, target, weight


def _self_fed_sample(crop: _CropVolume, rollout: np.ndarray, config: TrainingConfig, rng: np.random.Generator):
    """As ``_proposer_sample``, but the previous mask is the proposer's own mask on slice k-d, from its propagation
    over the crop from the largest cross-section (``rollout``, as at inference); the target is still the truth of k.

    At inference the proposer reads its own output: a chain that leaks into same-density tissue carries the leak to
    the next slice, and a proposer that only ever saw true masks copies it on (sarcomas: the area stays while the
    tumour shrinks). Fed its own masks, it learns to come back to the tumour (the remedy for the drift of a model fed
    its own outputs: DAgger, scheduled sampling). Falls back to ``_proposer_sample`` where the rollout is empty.
    """
    depth = crop.image.shape[0]
    start = _largest_slice(crop)  # where ``_coarse_masks`` starts
    marked = rollout.reshape(depth, -1).any(axis=1)
    first_direction = 1 if rng.random() < 0.5 else -1
    for direction in (first_direction, -first_direction):
        # Targets two or more slices from the start: one slice away, the previous mask is the true anchor.
        targets = [k for k in range(start + 2 * direction, -1 if direction < 0 else depth, direction)
                   if marked[k - direction]]
        if targets:
            break
    else:
        return _proposer_sample(crop, config, rng)
    k = int(targets[rng.integers(len(targets))])
    images = crop.image[[k - direction, k, int(np.clip(k + direction, 0, depth - 1))]]
    return _proposer_window(images, rollout[k - direction], crop.label[k], config, rng, _prompt(crop, config))


def _refiner_sample(crop: _CropVolume, coarse: np.ndarray, config: TrainingConfig, rng: np.random.Generator):
    """Input (6, W, W): image and coarse mask on k-1, k, k+1; target: truth on k; weights favour hard pixels."""
    k = _refiner_slice(crop, coarse, config, rng)
    if config.refiner_leaks and rng.random() < config.refiner_leaks:  # no draw without them: the same weights
        coarse = _leaked(crop, k, rng)
    elif rng.random() < 0.3:  # also learn from plausible coarse masks the proposer did not happen to make
        coarse = np.stack([_perturb_mask(m, rng) if m.any() else m for m in crop.label]).astype(np.float32)
    stack = refiner_input(crop.image, coarse.astype(np.float32), [k])[0]
    truth = crop.label[k]
    hard = (coarse[k] > 0.5) != truth
    weight = 1.0 + config.hard_pixel_weight * hard + config.boundary_weight * _outline(truth)
    centre = _window_centre(truth if truth.any() else coarse[k] > 0.5, truth, config, rng)
    stack, target, weight = _window([stack, truth[None].astype(np.float32), weight[None].astype(np.float32)],
                                    centre, config.window, [-1.0, 0.0, 1.0], rng)
    stack[3:][stack[3:] == -1.0] = 0.0
    stack, target, weight = _augment([stack, target, weight], rng, image_channels=3)
    if config.augment == "torchio":
        stack, target, weight = _torchio_augment([stack, target, weight], image_channels=3)
    return stack, target, weight


def _refiner_slice(crop: _CropVolume, coarse: np.ndarray, config: TrainingConfig, rng: np.random.Generator) -> int:
    """The slice a refiner sample is drawn on: the tumour's and one either side; with ``config.refiner_overshoot``
    also every slice the coarse mask marks (past the ends too)."""
    depth = crop.image.shape[0]
    if not config.refiner_overshoot:
        return int(np.clip(rng.integers(crop.first - 1, crop.last + 2), 0, depth - 1))
    marked = np.flatnonzero(coarse.reshape(depth, -1).max(axis=1) > 0.5)
    slices = sorted(set(range(max(0, crop.first - 1), min(depth - 1, crop.last + 1) + 1)) | set(marked.tolist()))
    return int(slices[rng.integers(len(slices))])


def _loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
          empty_target_dice: bool = True) -> torch.Tensor:
    """Pixel-weighted binary cross-entropy plus soft Dice per sample (Dice keeps small tumours from being ignored);
    without ``empty_target_dice`` the Dice is averaged over the samples that hold tumour only."""
    bce = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight).sum() / weight.sum()
    probability = torch.sigmoid(logits)
    intersection = (probability * target).sum(dim=(1, 2, 3))
    target_area = target.sum(dim=(1, 2, 3))
    soft_dice = 1.0 - (2.0 * intersection + 1.0) / (probability.sum(dim=(1, 2, 3)) + target_area + 1.0)
    if not empty_target_dice:
        soft_dice = soft_dice[target_area > 0]
        if soft_dice.numel() == 0:
            return bce
    return bce + soft_dice.mean()


def _fit(network: UNet2D, sample, steps: int, config: TrainingConfig, device: torch.device, description: str,
         rng: np.random.Generator, before_step=None) -> list[float]:
    """``steps`` optimiser steps on batches of ``sample(rng)``; ``before_step(step)``, if given, runs before each
    (the network in training mode again after it)."""
    network.to(device)
    if steps <= 0:  # this stage is kept as it is (e.g. fine-tuning the refiner alone: --proposer-steps 0)
        network.eval()
        return []
    optimiser = torch.optim.AdamW(network.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    # A tenth of the steps warm up; OneCycleLR divides by zero when that is exactly one step (10 steps).
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.learning_rate, total_steps=steps,
                                                   pct_start=0.1 if steps != 10 else 0.2)
    network.to(device).train()
    losses = []
    with tqdm(range(steps), desc=description, unit="step", dynamic_ncols=True) as bar:
        for step in bar:
            if before_step is not None:
                before_step(step)
                network.train()
            inputs, targets, weights = zip(*(sample(rng) for _ in range(config.batch_size)))
            batch = [torch.from_numpy(np.stack(a)).to(device) for a in (inputs, targets, weights)]
            loss = _loss(network(batch[0]), batch[1], batch[2], config.empty_target_dice)
            losses.append(loss.item())  # read once: recorded, and checked before the step it would poison
            if not np.isfinite(losses[-1]):
                raise _diverged(description, f"its loss is {losses[-1]} at step {step + 1} of {steps}", config)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
    network.eval()
    if not all(bool(torch.isfinite(value).all()) for value in network.state_dict().values()
               if value.is_floating_point()):  # the batch-norm statistics too: they go first
        raise _diverged(description, f"its weights hold NaN or Inf after its {steps} step(s)", config)
    return losses


def _diverged(description: str, what: str, config: TrainingConfig) -> InputError:
    """A training that diverged stops before anything is written: its weights would be NaN (and replace good ones)."""
    return InputError(f"The {description} training diverged: {what}. Lower --learning-rate (it is "
                      f"{config.learning_rate:g}) and run again; nothing was written.")


def _final_loss(losses: list[float]) -> float | None:
    """Mean loss of the last 50 steps; None for a stage that was not trained."""
    return float(np.mean(losses[-50:])) if losses else None


def _fit_proposer(proposer: UNet2D, crops: list[_CropVolume], draw, config: TrainingConfig, device: torch.device,
                  rng: np.random.Generator, fine_tuning: bool) -> list[float]:
    """The proposer's training; with ``config.self_fed``, that share of its samples reads its own rollouts: those of
    the network it starts from when fine-tuning, else of itself after the first half of the steps (a fresh network's
    rollouts mean nothing); with ``config.self_fed_refresh``, recomputed from the proposer being trained that many
    times, evenly over the self-fed steps."""
    def plain(r):
        return _proposer_sample(crops[draw(r)], config, r)

    if config.self_fed <= 0 or config.proposer_steps <= 0:
        return _fit(proposer, plain, config.proposer_steps, config, device, "proposer", rng)
    losses = [] if fine_tuning else _fit(proposer, plain, config.proposer_steps // 2, config, device, "proposer",
                                         rng)
    self_fed_steps = config.proposer_steps - len(losses)
    rollouts = _rollouts(proposer, crops, config, device)
    # Never at step 0: the rollouts just computed are that network's.
    refresh_at = {self_fed_steps * (n + 1) // (config.self_fed_refresh + 1)
                  for n in range(config.self_fed_refresh)} - {0}

    def refresh(step: int):
        if step in refresh_at:
            log.info("self-fed rollouts recomputed from the proposer at its self-fed step %d", step)
            rollouts[:] = _rollouts(proposer, crops, config, device)

    def mixed(r):
        i = draw(r)
        if r.random() < config.self_fed:
            return _self_fed_sample(crops[i], rollouts[i], config, r)
        return _proposer_sample(crops[i], config, r)

    return losses + _fit(proposer, mixed, self_fed_steps, config, device, "proposer (self-fed)", rng,
                         before_step=refresh if refresh_at else None)


def _rollouts(proposer: UNet2D, crops: list[_CropVolume], config: TrainingConfig,
              device: torch.device) -> list[np.ndarray]:
    """The proposer's propagated masks on each crop (``_coarse_masks``), as booleans."""
    return [masks > 0.5 for masks in _coarse_masks(proposer.to(device).eval(), crops, config, device)]


def _largest_slice(crop: _CropVolume) -> int:
    """The crop's working slice with the largest true cross-section: where its propagation starts."""
    return int(np.argmax(crop.label.reshape(crop.label.shape[0], -1).sum(axis=1)))


# The stop rule of the training rollouts: inference's without the confirmed end (stop 50's CE, an inference-time
# check that came after RB): the shipped weights were trained on these rollouts, and the training command
# reproduces them bit for bit only with it.
ROLLOUT_STOP_RULE = StopRule(confirm_end_views=0)


def _coarse_masks(proposer: UNet2D, crops: list[_CropVolume], config: TrainingConfig,
                  device: torch.device) -> list[np.ndarray]:
    """The proposer's own propagation on each training crop, from its largest cross-section."""
    results = []
    for crop in crops:
        pixel = crop.pixel_mm or config.preprocessing.pixel_spacing_mm  # a zoomed crop's own: the stop rules' areas
        k = _largest_slice(crop)
        output = propagate(TorchRunner(proposer, device), crop.image, {k: crop.label[k]},
                           limits=(0, crop.image.shape[0] - 1),
                           pixel_area_mm2=pixel ** 2, pixel_mm=pixel, prompt=config.prompt_channel,
                           rule=ROLLOUT_STOP_RULE)
        results.append(output.probabilities)
    return results


def train(cases: Iterable[CaseData], output_dir: str | Path, *, config: TrainingConfig = TrainingConfig(),
          device: str = "auto", data_description: str = "", validation_cases: Iterable[CaseData] = (),
          command: str = "", init: tuple[UNet2D, UNet2D] | None = None,
          sources: Iterable[str] | None = None, earlier_case_names: Iterable[str] = (),
          outputs: OutputBatch | None = None) -> dict[str, Path]:
    """Trains the proposer, then the refiner on the proposer's output; writes proposer.pt and refiner.pt.

    Both files are renamed into place together once both are written (``data.outputs.OutputBatch``): a crash or
    SIGTERM leaves the earlier pair, or none, never a half-written file or a new proposer beside an old refiner.
    With ``outputs`` they are only staged there, to appear with the batch's other outputs (the train command's
    ONNX files).

    Args:
        init: (proposer, refiner) to start from (fine-tuning; ``config.preprocessing`` must be theirs);
            fresh networks when None.
        sources: the source name of each case (``config.mix`` gives each source its share of the samples).
        earlier_case_names: the cases ``init``'s networks learned from (``checkpoints.learned_case_names``), kept in
            the metadata: what the new weights have seen is those too.

    Returns the written paths. Reproducible bit for bit on the CPU for a given config.seed, data and thread count
    (another thread count sums in another order: other weights, as a new seed would give); on CUDA, cuDNN's
    convolutions are not deterministic.
    """
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    target_device = resolve_device(device)
    # Each case is cropped as it comes and let go: ``cases`` may load them one by one (``iter_loaded``), so that
    # fine-tuning on many whole CTs holds their small crops, not the CTs.
    sources = list(sources) if sources is not None else None
    names, crops = [], []
    for index, case in enumerate(tqdm(cases, desc="cropping", unit="case",
                                      total=len(sources) if sources is not None else None)):
        names.append(case.name)
        crops += _make_crops(case, config, rng, sources[index] if sources is not None else "")
    if not names:
        raise ValueError("no training cases were given")
    if sources is None:
        sources = [""] * len(names)
    if not crops:
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise InputError(f"No training crop could be cut from the {len(names)} case(s) ({shown}): on the networks' "
                         f"grid ({config.preprocessing.pixel_spacing_mm:g} mm pixels) no tumour voxel is left. Give "
                         "cases with larger lesions, then run again.")
    if config.mix:
        weights = sampling_weights(crops, dict(config.mix), config.min_bin_crops)

        def draw(r: np.random.Generator) -> int:
            return int(r.choice(len(crops), p=weights))
    else:
        def draw(r: np.random.Generator) -> int:
            return int(r.integers(len(crops)))

    channels = {**INPUT_CHANNELS, **({"proposer": PROMPT_CHANNELS} if config.prompt_channel else {})}
    if init is None:
        proposer, refiner = (UNet2D(in_channels=channels[stage], base_channels=config.base_channels,
                                    depth=config.depth) for stage in ("proposer", "refiner"))
    else:
        proposer, refiner = init
        if config.prompt_channel and proposer.config["in_channels"] < PROMPT_CHANNELS:
            proposer = with_input_channels(proposer, PROMPT_CHANNELS)  # starts as it was: the new channel's weights 0
        # A proposer that reads the painted mask is trained with it; the recorded size is the networks' own.
        config = dataclasses.replace(config, prompt_channel=proposer.config["in_channels"] == PROMPT_CHANNELS,
                                     depth=proposer.config["depth"], base_channels=proposer.config["base_channels"])
    proposer_losses = _fit_proposer(proposer, crops, draw, config, target_device, rng, fine_tuning=init is not None)
    coarse = _coarse_masks(proposer, crops, config, target_device)

    def refiner_sample(r):
        i = draw(r)
        return _refiner_sample(crops[i], coarse[i], config, r)

    refiner_losses = _fit(refiner, refiner_sample, config.refiner_steps, config, target_device, "refiner", rng)

    metadata = {
        "data": data_description, "cases": len(names),
        "cases_per_source": {name: sources.count(name) for name in dict.fromkeys(sources)},
        "case_names": names,  # all of them: evaluate says when it scores a case the weights saw
        **({"earlier_case_names": sorted(set(earlier_case_names))} if earlier_case_names else {}),
        "config": config.describe(), "command": command, "device": str(target_device),
        "torch": str(torch.__version__), "python": platform.python_version(), "package_version": __version__,
        "threads": torch.get_num_threads(),  # the weights depend on it bit for bit (the order of torch's sums)
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "final_loss": {"proposer": _final_loss(proposer_losses), "refiner": _final_loss(refiner_losses)},
    }
    validation_cases = list(validation_cases)
    if validation_cases:
        metadata["validation"] = validate(Segmenter.from_networks(proposer, refiner, config.preprocessing,
                                                                  str(target_device)), validation_cases)
        log.info("validation: %s", metadata["validation"])
    output_dir = Path(output_dir)
    with (contextlib.nullcontext(outputs) if outputs is not None else OutputBatch()) as batch:
        # the pair appears together, whole, or not at all (never a new proposer alone)
        return {stage: save_checkpoint(output_dir / f"{stage}.pt", stage=stage, network=network,
                                       preprocessing=config.preprocessing, training=metadata, outputs=batch)
                for stage, network in (("proposer", proposer), ("refiner", refiner))}


def validate(segmenter: Segmenter, cases: Iterable[CaseData]) -> dict:
    """Mean Dice of the proposer alone and with the refiner, from each case's largest cross-section."""
    from gastric_propagate.metrics import dice

    scores = {"proposer": [], "proposer+refiner": []}
    for case in cases:
        result = segmenter.segment(case.image, case.spacing_xyz, annotation_from_label(case.label),
                                   PropagationOptions())
        scores["proposer"].append(dice(result.proposer_mask, case.label))
        scores["proposer+refiner"].append(dice(result.mask, case.label))
    return {name: round(float(np.mean(values)), 4) for name, values in scores.items()} | {
        "cases": len(scores["proposer"])}
