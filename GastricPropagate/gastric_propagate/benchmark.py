"""Speed, memory and accuracy figures, printed; the targets are checked here, never by timed tests.

Parts:
    speed        a 512x512x100 CT, one painted slice -> 3D: seconds per volume (CPU, and CUDA when there is one)
                 and the peak resident memory of a whole ``gastric-propagate segment`` process;
    accuracy     Dice on held-out phantoms: proposer only, proposer + refiner, copy-the-slice baseline;
    corrections  a simulated radiologist corrects the least confident slices and re-propagates, on held-out cases
                 of each generator: Dice after 0-3 corrections (and the networks alone with the same anchors),
                 and how often the automatic stop ends within one slice of the true end.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from gastric_propagate.data.annotation import annotation_from_label, painted_slices
from .evaluation.baselines import copy_slice
from gastric_propagate.data.io import write_mask
from gastric_propagate.errors import InputError
from gastric_propagate.metrics import dice
from gastric_propagate.synthetic.generators import GENERATORS, generated_cases, phantom_cases
from gastric_propagate.synthetic.phantom import HELD_OUT_SEED_START, make_phantom
from gastric_propagate.inference.pipeline import PropagationOptions, Segmenter

SPEED_SEED = HELD_OUT_SEED_START + 900
# A large tumour, so that the timing covers many propagation steps, not a best case.
SPEED_TUMOUR_DIAMETER_MM = 60.0
TARGET_CPU_SECONDS = 1.15
TARGET_GPU_SECONDS = 0.2
TARGET_PEAK_GB = 2.0
TARGET_DICE = 0.90


def run_benchmark(*, cases: int = 10, repeats: int = 5, skip: set[str] = frozenset(), device: str = "auto",
                  proposer: str | None = None, refiner: str | None = None) -> dict:
    """Runs the selected parts and prints their figures; returns them."""
    figures = {}
    cuda = "yes: " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no"
    print(f"GastricPropagate benchmark: torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"{os.cpu_count()} cores, CUDA {cuda}")
    if "speed" not in skip:
        figures["speed"] = _speed(repeats, proposer, refiner)
    segmenter = Segmenter(proposer, refiner, device=device)
    if "accuracy" not in skip:
        figures["accuracy"] = _accuracy(segmenter, cases)
    if "corrections" not in skip:
        figures["corrections"] = _corrections(segmenter, cases)
    return figures


def speed_phantom(n_slices: int = 100):
    """The speed part's CT: 512x512 slices, ``n_slices`` of them, 2.5 mm apart, a large (60 mm) tumour."""
    return make_phantom(SPEED_SEED, size_xy=512, n_slices=n_slices, slice_spacing=2.5,
                        tumour_diameter_mm=SPEED_TUMOUR_DIAMETER_MM)


def _speed(repeats: int, proposer: str | None, refiner: str | None) -> dict:
    phantom = speed_phantom()
    image, truth = phantom.arrays()
    annotation = annotation_from_label(truth)
    figures = {"shape_xyz": list(phantom.image.GetSize())}
    print(f"\n[speed] CT {phantom.image.GetSize()} voxels, spacing {tuple(round(s, 2) for s in phantom.spacing)} mm, "
          f"tumour on {int(truth.any(axis=(1, 2)).sum())} slices")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for name in devices:
        started = time.perf_counter()
        segmenter = Segmenter(proposer, refiner, device=name)
        load_seconds = time.perf_counter() - started
        segmenter.segment(image, phantom.spacing, annotation)  # warm-up: first-call allocations, CUDA context
        runs = []
        for _ in range(repeats):
            result = segmenter.segment(image, phantom.spacing, annotation)
            if name == "cuda":
                torch.cuda.synchronize()
            runs.append(result.seconds)
        median = statistics.median(runs)
        target = TARGET_CPU_SECONDS if name == "cpu" else TARGET_GPU_SECONDS
        figures[name] = {"median_seconds": median, "min_seconds": min(runs), "load_seconds": load_seconds,
                         "timings": result.timings}
        print(f"  {name}: {median:.3f} s per volume (median of {repeats}; min {min(runs):.3f}; weights load "
              f"{load_seconds:.2f} s once) -> target < {target} s: {'met' if median < target else 'NOT met'}")
        print("    stages: " + ", ".join(f"{k} {v:.3f} s" for k, v in result.timings.items()))
    figures["peak_memory_gb"], figures["process_seconds"] = _process_peak_memory(phantom, annotation, proposer,
                                                                                 refiner)
    print(f"  whole 'gastric-propagate segment' process on CPU (read NRRD, load weights, segment, write): "
          f"{figures['process_seconds']:.2f} s, peak resident memory {figures['peak_memory_gb']:.2f} GB -> "
          f"target < {TARGET_PEAK_GB} GB: {'met' if figures['peak_memory_gb'] < TARGET_PEAK_GB else 'NOT met'}")
    return figures


def _process_peak_memory(phantom, annotation, proposer, refiner) -> tuple[float, float]:
    """Peak RSS of a separate CLI process, so the benchmark's own arrays do not count."""
    with tempfile.TemporaryDirectory() as folder:
        ct, painted, output = (Path(folder) / name for name in ("ct.nrrd", "annotation.nrrd", "result.nrrd"))
        sitk.WriteImage(phantom.image, str(ct), useCompression=True)
        write_mask(annotation, phantom.image, painted)
        command = [sys.executable, "-m", "gastric_propagate.cli", "segment", "--image", str(ct),
                   "--annotation", str(painted), "--output", str(output), "--device", "cpu"]
        command += ["--proposer", proposer] if proposer else []
        command += ["--refiner", refiner] if refiner else []
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        seconds = time.perf_counter() - started
    # ru_maxrss is in kilobytes on Linux; RUSAGE_CHILDREN holds the largest child so far.
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 ** 2, seconds


def _describe(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return (f"{statistics.mean(values):.3f} +- {sd:.3f} (median {statistics.median(values):.3f}, "
            f"min {min(values):.3f})")


def _accuracy(segmenter: Segmenter, n_cases: int) -> dict:
    print(f"\n[accuracy] {n_cases} held-out phantoms (seeds {HELD_OUT_SEED_START}-{HELD_OUT_SEED_START + n_cases - 1},"
          " never seen in training), annotation = largest cross-section")
    scores = {"copy-the-slice baseline": [], "proposer only": [], "networks (+ refiner)": [], "engine (the vote)": []}
    seconds = []
    for case in phantom_cases(n_cases):
        data = case.load()
        annotation = annotation_from_label(data.label)
        result = segmenter.segment(data.image, data.spacing_xyz, annotation)
        seconds.append(result.seconds)
        scores["proposer only"].append(dice(result.proposer_mask, data.label))
        scores["networks (+ refiner)"].append(dice(result.network_mask, data.label))
        scores["engine (the vote)"].append(dice(result.mask, data.label))
        scores["copy-the-slice baseline"].append(dice(copy_slice(data.image, data.spacing_xyz, annotation),
                                                      data.label))
    for name, values in scores.items():
        print(f"  Dice {name:<24} {_describe(values)}")
    mean = statistics.mean(scores["engine (the vote)"])
    print(f"  -> target mean Dice >= {TARGET_DICE}: {'met' if mean >= TARGET_DICE else 'NOT met'} ({mean:.3f}); "
          f"seconds per volume {statistics.mean(seconds):.2f}")
    return {name: values for name, values in scores.items()} | {"seconds": seconds}


def _corrections(segmenter: Segmenter, n_cases: int, max_corrections: int = 3) -> dict:
    print(f"\n[corrections] {n_cases} held-out cases of each generator: after each run, the least confident slice "
          "inside the tumour is replaced by the truth (a radiologist's correction) and kept as an anchor; the same "
          "anchors without the vote (the networks alone) beside it")
    figures = {}
    for generator in GENERATORS:
        cases = phantom_cases(n_cases) if generator == "phantom" else generated_cases(generator, n_cases,
                                                                                      HELD_OUT_SEED_START)
        figures[generator] = _corrections_on(segmenter, cases, max_corrections)
        print(f"  {generator}:")
        for n in range(max_corrections + 1):
            print(f"    Dice after {n} correction(s): {_describe(figures[generator]['dice_after'][n])}; networks alone "
                  f"{statistics.mean(figures[generator]['networks_after'][n]):.3f}")
        rate, refused = figures[generator]["end_within_one_slice"], figures[generator]["refused"]
        print(f"    automatic stop within one slice of the true tumour end: {100 * rate:.0f}% of the ends"
              + (f"; refused by the CT check: {refused}" if refused else ""))
    return figures


def _corrections_on(segmenter: Segmenter, cases, max_corrections: int) -> dict:
    dice_after = {n: [] for n in range(max_corrections + 1)}
    networks_after = {n: [] for n in range(max_corrections + 1)}
    end_within_one, refused = [], 0
    for case in cases:
        data = case.load()
        annotation = annotation_from_label(data.label)
        tumour = set(painted_slices(data.label))
        for corrections in range(max_corrections + 1):
            options = PropagationOptions(keyframes=corrections > 0)
            try:
                result = segmenter.segment(data.image, data.spacing_xyz, annotation, options)
            except InputError:  # a generated volume the CT check refuses, as evaluate counts it
                refused += 1
                break
            alone = segmenter.segment(data.image, data.spacing_xyz, annotation,
                                      dataclasses.replace(options, use_consensus=False))
            dice_after[corrections].append(dice(result.mask, data.label))
            networks_after[corrections].append(dice(alone.mask, data.label))
            if corrections == 0:
                end_within_one.extend(_ends_within_one(result.slice_range(), min(tumour), max(tumour)))
            candidates = [k for k in sorted(result.slice_confidence, key=result.slice_confidence.get)
                          if k in tumour and k not in result.anchor_slices]
            if not candidates:
                for later in range(corrections + 1, max_corrections + 1):
                    dice_after[later].append(dice_after[corrections][-1])
                    networks_after[later].append(networks_after[corrections][-1])
                break
            annotation = annotation.copy()
            annotation[candidates[0]] = data.label[candidates[0]] > 0
    return {"dice_after": dice_after, "networks_after": networks_after,
            "end_within_one_slice": float(np.mean(end_within_one)), "refused": refused}


def _ends_within_one(predicted: tuple[int, int] | None, first: int, last: int) -> list[bool]:
    if predicted is None:
        return [False, False]
    return [abs(predicted[0] - first) <= 1, abs(predicted[1] - last) <= 1]
