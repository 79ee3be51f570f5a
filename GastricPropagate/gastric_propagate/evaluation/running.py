"""Runs every method on every case and annotation variant and scores it against the truth, in memory: the method
registry (the engine's three rows and the baselines) and ``run_evaluation``. ``reporting`` writes what it returns."""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

from gastric_propagate.data.annotation import painted_slices
from gastric_propagate.data.cases import Case
from gastric_propagate.errors import InputError, WeightsError
from gastric_propagate.evaluation import baselines
from gastric_propagate.evaluation.annotations import DEFAULT_VARIANT, PAINTED_NOT_LARGEST, VARIANTS, make_annotation
from gastric_propagate.evaluation.breakdown import per_slice_dice
from gastric_propagate.evaluation.grow_from_seeds import grow_from_seeds
from gastric_propagate.inference import consensus
from gastric_propagate.inference.advice import LARGER_NEIGHBOUR
from gastric_propagate.inference.masks import bounding_box
from gastric_propagate.metrics import dice, hausdorff95_mm, volume_error_percent, volume_ml

logger = logging.getLogger(__name__)

# Metric values are rounded to this many decimals in the rows, so the CSV and the summary agree exactly.
_DECIMALS = 6


@dataclass
class Evaluation:
    """What ``run_evaluation`` found, kept in memory until ``write_reports`` writes it.

    Attributes:
        rows: one dict per (case, variant, method) with the keys of ``reporting.CSV_COLUMNS``.
        example: the arrays the figure draws (the first case, default variant; ``example.npz``), or None.
        confidence: the engine's (case, variant, slice, confidence, flagged, dice) rows (``confidence.csv``).
        advice: the engine's (case, variant, advised) rows: whether its result came with advice to the reader.
    """

    rows: list[dict]
    example: dict | None = None
    confidence: list[dict] = field(default_factory=list)
    advice: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class Method:
    """One method of the comparison.

    Attributes:
        name: short name used in results.csv and on the command line.
        title: what the report calls it.
        run: ``run(image, spacing_xyz, annotation, **context) -> mask`` or ``-> (mask, seconds)`` when the
            method times itself; ``context`` holds ``case_key`` (case name, variant), and ``truth_label`` for a
            method that reads the truth.
        reads_truth: True for reference methods that are given the true label (not a fair competitor); no other
            method is handed it.
        after_scoring: called with the true label and the case key once the method's run is done (the engine's
            per-slice confidence against per-slice Dice): the truth reaches it only after the result.
    """

    name: str
    title: str
    run: Callable[..., object]
    reads_truth: bool = False
    after_scoring: Callable[[np.ndarray, tuple[str, str]], None] | None = None


BASELINES: dict[str, Method] = {
    "copy_slice": Method("copy_slice", "Copy the painted slice (± its radius)", baselines.copy_slice),
    "region_growing": Method("region_growing", "3D region growing", baselines.region_growing),
    "registration": Method("registration", "Slice-to-slice registration", baselines.registration_propagation),
    # Demons registration alone, set as the engine's vote uses it.
    "registration_demons": Method("registration_demons", "Slice-to-slice registration, Demons",
                                  functools.partial(baselines.registration_propagation, **consensus.REGISTRATION)),
    "grow_from_seeds": Method("grow_from_seeds", "Slicer's Grow from seeds (seeded from the painted slice)",
                              grow_from_seeds),
    "fill_between_ideal": Method("fill_between_ideal", "Fill between slices, ideal (reads the truth)",
                                 baselines.fill_between_slices_ideal, reads_truth=True),
}
ENGINE_METHODS = ("proposer", "networks", "engine")
ENGINE_TITLES = {"proposer": "GastricPropagate, proposer only",
                 "networks": "GastricPropagate, proposer + refiner (the networks alone, no vote)",
                 "engine": "GastricPropagate: networks, registration and copied outline, majority vote"}
ALL_METHODS = ENGINE_METHODS + tuple(BASELINES)


class _EngineMethods:
    """GastricPropagate's three rows from two engine runs per case and variant.

    The run with the vote gives the result ("engine"); one without it gives the networks alone, as far as
    they go ("networks"), and the proposer's mask before refinement ("proposer", timed without the
    refiner stage).
    """

    def __init__(self, segmenter: object | None, device: str):
        self._segmenter = segmenter
        self._device = device
        self._results: dict[bool, tuple[object, object]] = {}  # use_consensus -> (case key, result)
        # (case, variant, slice, confidence, dice) of every propagated slice: how confidence tracks quality.
        self.confidence_rows: list[dict] = []
        # (case, variant, advised): whether the result came with advice ("the painted slice may not be the largest").
        self.advice_rows: list[dict] = []

    def _run(self, image: np.ndarray, spacing_xyz, annotation: np.ndarray, case_key: object, consensus: bool):
        from gastric_propagate.inference.pipeline import PropagationOptions, Segmenter, segment_volume

        if self._segmenter is None:
            self._segmenter = Segmenter(device=self._device)
        key, result = self._results.get(consensus, (None, None))
        if case_key is None or key != case_key or result is None:  # no key: nothing says it is the same case
            # Whoever paints a slice other than the largest says so, as a user of the CLI or module would.
            variant = case_key[1] if isinstance(case_key, tuple) else None
            options = PropagationOptions(use_consensus=consensus,
                                         painted_is_largest=variant not in PAINTED_NOT_LARGEST)
            result = segment_volume(image, spacing_xyz, annotation, options=options, segmenter=self._segmenter)
            self._results[consensus] = (case_key, result)
        return result

    def engine(self, image, spacing_xyz, annotation, *, case_key=None, **_):
        result = self._run(image, spacing_xyz, annotation, case_key, consensus=True)
        if isinstance(case_key, tuple):
            advised = any(advice.kind == LARGER_NEIGHBOUR for advice in result.advice)
            self.advice_rows.append({"case": case_key[0], "variant": case_key[1], "advised": int(advised)})
        return result.mask, result.seconds

    def score_confidence(self, truth_label: np.ndarray, case_key: tuple[str, str]) -> None:
        """After the engine's run on ``case_key``: each propagated slice's confidence beside its Dice."""
        key, result = self._results.get(True, (None, None))
        if key != case_key:
            return
        propagated = [k for k in result.slice_confidence if k not in result.anchor_slices]
        flagged = set(result.slices_to_review())
        for k, score in per_slice_dice(result.mask, truth_label, propagated).items():
            self.confidence_rows.append({"case": case_key[0], "variant": case_key[1], "slice": k,
                                         "confidence": round(result.slice_confidence[k], 4),
                                         "flagged": int(k in flagged), "dice": round(score, 4)})

    def networks(self, image, spacing_xyz, annotation, *, case_key=None, **_):
        result = self._run(image, spacing_xyz, annotation, case_key, consensus=False)
        return result.mask, result.seconds

    def proposer(self, image, spacing_xyz, annotation, *, case_key=None, **_):
        result = self._run(image, spacing_xyz, annotation, case_key, consensus=False)
        return result.proposer_mask, result.seconds - result.timings.get("refiner", 0.0)


def method_registry(segmenter: object | None = None, device: str = "auto", *,
                    engine: _EngineMethods | None = None) -> dict[str, Method]:
    """Every method by name: the engine's three (weights loaded on first use) and the baselines.

    Args:
        segmenter: a ``gastric_propagate.inference.pipeline.Segmenter`` to reuse; the bundled weights when None.
        device: torch device of the engine when no segmenter is given.
        engine: the engine's methods to use (a caller that reads their confidence rows afterwards).
    """
    engine = engine or _EngineMethods(segmenter, device)
    return {
        "proposer": Method("proposer", ENGINE_TITLES["proposer"], engine.proposer),
        "networks": Method("networks", ENGINE_TITLES["networks"], engine.networks),
        "engine": Method("engine", ENGINE_TITLES["engine"], engine.engine, after_scoring=engine.score_confidence),
        **BASELINES,
    }


def run_evaluation(cases: Iterable[Case], *, methods: Sequence[str] | None = None,
                   variants: Sequence[str] | None = None, segmenter: object | None = None, device: str = "auto",
                   progress: bool = True) -> Evaluation:
    """Runs each method on each case and annotation variant and scores it against the truth; writes nothing.

    A method that fails on one case is logged and recorded with its error (metrics NaN); the run goes on.
    ``write_reports`` writes what it returns.

    Args:
        cases: the cases (see ``data.cases.folder_cases`` and ``synthetic.generators``).
        methods: method names (see ``ALL_METHODS``); all when None.
        variants: annotation variants (see ``annotations.VARIANTS``); all when None.
        segmenter: a loaded ``Segmenter`` for the engine's methods; the bundled weights when None.
        device: torch device for the engine when no segmenter is given.
        progress: show a progress bar.

    Returns:
        The rows (one per case, variant and method), the figure's example arrays and the confidence rows.
    """
    engine = _EngineMethods(segmenter, device)
    registry = method_registry(engine=engine)
    methods = list(methods or ALL_METHODS)
    variants = list(variants or VARIANTS)
    unknown = [m for m in methods if m not in registry] + [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown method(s) or variant(s): {', '.join(unknown)}; methods are "
                         f"{', '.join(registry)}, variants are {', '.join(VARIANTS)}")
    cases = list(cases)
    example_variant = DEFAULT_VARIANT if DEFAULT_VARIANT in variants else variants[0]
    bar = _progress_bar(len(cases) * len(variants) * len(methods), progress)
    rows: list[dict] = []
    example_arrays, example_case = None, None
    for case_index, case in enumerate(cases):
        try:
            data = case.load()
        except InputError as error:  # the case's own file (an empty label, a volume that is not CT): the others go on
            logger.error("%s cannot be evaluated: %s", case.name, error)
            rows += [_unreadable_row(case, variant, name, error) for variant in variants for name in methods]
            bar.update(len(variants) * len(methods))
            continue
        for variant in variants:
            annotation = make_annotation(data.label, data.spacing_xyz, variant, seed=case.seed)
            painted = painted_slices(annotation)[0]
            example_case = case.name if example_case is None else example_case  # the first case that loads
            example = {} if case.name == example_case and variant == example_variant else None
            for name in methods:
                row, mask = _score_one(registry[name], data, annotation, variant, case.source, painted)
                rows.append(row)
                if example is not None and mask is not None:
                    example[name] = mask
                bar.update(1)
            if example is not None:
                example_arrays = _example_arrays(data, annotation, variant, example)
        logger.info("case %d/%d (%s) done", case_index + 1, len(cases), case.name)
    bar.close()
    return Evaluation(rows=rows, example=example_arrays, confidence=list(engine.confidence_rows),
                      advice=list(engine.advice_rows))


def _unreadable_row(case: Case, variant: str, method: str, error: InputError) -> dict:
    """The row of a case whose files could not be read as a case: failed, with the reason."""
    nan = float("nan")
    return {"case": case.name, "variant": variant, "method": method, "painted_slice": -1, "slice_mm": nan,
            "source": case.source, "truth_ml": nan, "error": f"{type(error).__name__}: {error}".replace("\n", " "),
            "dice": nan, "hd95_mm": nan, "volume_error_percent": nan, "predicted_ml": nan, "seconds": 0.0}


def _score_one(method: Method, data, annotation: np.ndarray, variant: str, source: str,
               painted: int) -> tuple[dict, np.ndarray | None]:
    row = {"case": data.name, "variant": variant, "method": method.name, "painted_slice": painted,
           "slice_mm": round(float(data.spacing_xyz[2]), 3), "source": source,
           "truth_ml": round(volume_ml(data.label, data.spacing_xyz), _DECIMALS), "error": ""}
    started = time.perf_counter()
    try:
        reads = {"truth_label": data.label} if method.reads_truth else {}  # the others never see it
        output = method.run(data.image, data.spacing_xyz, annotation, case_key=(data.name, variant), **reads)
        seconds = time.perf_counter() - started
        mask, seconds = output if isinstance(output, tuple) else (output, seconds)
        mask = np.asarray(mask)
        if mask.shape != data.label.shape:
            raise ValueError(f"the method returned a mask of shape {mask.shape}, not {data.label.shape}")
    except WeightsError:  # not about this case: every engine run would fail the same way
        raise
    except Exception as error:  # one failing case must not lose the others: recorded and reported
        if isinstance(error, InputError):  # the case's own problem, said in one line: no traceback
            logger.error("%s failed on %s (%s): %s", method.name, data.name, variant, error)
        else:
            logger.exception("%s failed on %s (%s)", method.name, data.name, variant)
        nan = float("nan")
        row.update(dice=nan, hd95_mm=nan, volume_error_percent=nan, predicted_ml=nan,
                   seconds=round(time.perf_counter() - started, _DECIMALS),
                   error=f"{type(error).__name__}: {error}".replace("\n", " "))
        return row, None
    if method.after_scoring is not None:
        method.after_scoring(data.label, (data.name, variant))
    prediction, truth = _cropped_to_union(mask > 0, data.label > 0)
    row.update(dice=round(dice(prediction, truth), _DECIMALS),
               hd95_mm=round(hausdorff95_mm(prediction, truth, data.spacing_xyz), _DECIMALS),
               volume_error_percent=round(volume_error_percent(prediction, truth), _DECIMALS),
               predicted_ml=round(volume_ml(prediction, data.spacing_xyz), _DECIMALS),
               seconds=round(float(seconds), _DECIMALS))
    return row, mask.astype(np.uint8)


def _cropped_to_union(prediction: np.ndarray, truth: np.ndarray, margin: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cut to the box around their union (plus a margin): the metrics are unchanged, and fast."""
    union = prediction | truth
    if not union.any():
        return prediction, truth
    box = bounding_box(union, margin)
    return prediction[box], truth[box]


def _example_arrays(data, annotation: np.ndarray, variant: str, masks: dict[str, np.ndarray]) -> dict:
    """The first case's crop (image, truth, annotation, predictions) the figure draws."""
    union = data.label > 0
    for mask in masks.values():
        union = union | (mask > 0)
    box = bounding_box(union, (0, 8, 8))  # the slices it spans, and 8 pixels around it in-plane
    return dict(image=data.image[box].astype(np.int16), truth=data.label[box], annotation=annotation[box],
                case=np.asarray(data.name), variant=np.asarray(variant), z_offset=np.asarray(box[0].start),
                spacing_xyz=np.asarray(data.spacing_xyz), **{f"mask_{name}": mask[box] for name, mask in masks.items()})


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, desc="evaluating", unit="run")
