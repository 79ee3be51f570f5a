"""Runs every method on every case and annotation variant, and writes the report.

Outputs (in one folder):
    results.csv: one row per case, annotation variant and method (Dice, HD95, volume error, seconds).
    summary.md: mean ± SD and median of each metric per method and variant, with a header saying
        which data, how many cases, which command and which version produced it.
    figure.png: Dice per method (default variant) and one case's axial slices with the contours of
        the truth and of the main methods.
    example.npz: the arrays the figure's slices are drawn from (one case, default variant).
    confidence.csv: the engine's confidence, review flag and Dice of every propagated slice (when the engine ran).

Nothing is written while the methods run: the report's files are written together at the end, each under a
temporary name beside it, and renamed into place at once (``data.io.OutputBatch``). A crash or SIGTERM leaves the
earlier report (or none), never a half-written one or a mix of two runs.

Typical use::

    evaluate_command(None, "eval_out")            # 20 held-out phantoms, every method and variant
    evaluation = run_evaluation(cases, methods=["copy_slice", "region_growing"])
    write_reports(evaluation, out_dir, meta)
"""

from __future__ import annotations

import csv
import datetime
import functools
import logging
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from gastric_propagate import __version__
from gastric_propagate.data.cases import Case, folder_cases
from gastric_propagate.data.io import OutputBatch
from gastric_propagate.errors import InputError, WeightsError
from gastric_propagate.metrics import dice, hausdorff95_mm, volume_error_percent, volume_ml
from gastric_propagate.evaluation import baselines
from gastric_propagate.inference import consensus
from gastric_propagate.inference.advice import LARGER_NEIGHBOUR
from gastric_propagate.evaluation.breakdown import breakdown_markdown, confidence_markdown, per_slice_dice
from gastric_propagate.evaluation.grow_from_seeds import grow_from_seeds
from gastric_propagate.evaluation.annotations import DEFAULT_VARIANT, PAINTED_NOT_LARGEST, VARIANTS, make_annotation

logger = logging.getLogger(__name__)

CSV_COLUMNS = ("case", "variant", "method", "dice", "hd95_mm", "volume_error_percent", "seconds",
               "truth_ml", "predicted_ml", "painted_slice", "slice_mm", "source", "error")
CONFIDENCE_FILE = "confidence.csv"
EXAMPLE_FILE = "example.npz"
# Every file ``write_reports`` may write into its folder.
REPORT_FILES = ("results.csv", "summary.md", "figure.png", EXAMPLE_FILE, CONFIDENCE_FILE)
# Contours drawn in the figure, in order of preference (the first three present are drawn).
FIGURE_METHODS = ("engine", "networks", "registration", "region_growing", "copy_slice")
# Metric values are rounded to this many decimals in the rows, so the CSV and the summary agree exactly.
_DECIMALS = 6


@dataclass
class Evaluation:
    """What ``run_evaluation`` found, kept in memory until ``write_reports`` writes it.

    Attributes:
        rows: one dict per (case, variant, method) with the keys of ``CSV_COLUMNS``.
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
            method times itself; ``context`` holds ``truth_label`` and ``case_key`` (case name, variant).
        reads_truth: True for reference methods that are given the true label (not a fair competitor).
    """

    name: str
    title: str
    run: Callable[..., object]
    reads_truth: bool = False


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
        if key != case_key or result is None:
            # Whoever paints a slice other than the largest says so, as a user of the CLI or module would.
            variant = case_key[1] if isinstance(case_key, tuple) else None
            options = PropagationOptions(use_consensus=consensus,
                                         painted_is_largest=variant not in PAINTED_NOT_LARGEST)
            result = segment_volume(image, spacing_xyz, annotation, options=options, segmenter=self._segmenter)
            self._results[consensus] = (case_key, result)
        return result

    def engine(self, image, spacing_xyz, annotation, *, case_key=None, truth_label=None, **_):
        result = self._run(image, spacing_xyz, annotation, case_key, consensus=True)
        if isinstance(case_key, tuple):
            advised = any(advice.kind == LARGER_NEIGHBOUR for advice in result.advice)
            self.advice_rows.append({"case": case_key[0], "variant": case_key[1], "advised": int(advised)})
        if truth_label is not None:
            propagated = [k for k in result.slice_confidence if k not in result.anchor_slices]
            flagged = set(result.slices_to_review())
            for k, score in per_slice_dice(result.mask, truth_label, propagated).items():
                self.confidence_rows.append({"case": case_key[0], "variant": case_key[1], "slice": k,
                                             "confidence": round(result.slice_confidence[k], 4),
                                             "flagged": int(k in flagged), "dice": round(score, 4)})
        return result.mask, result.seconds

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
        "engine": Method("engine", ENGINE_TITLES["engine"], engine.engine),
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
    example_arrays = None
    for case_index, case in enumerate(cases):
        data = case.load()
        for variant in variants:
            annotation = make_annotation(data.label, data.spacing_xyz, variant, seed=case.seed)
            painted = int(np.flatnonzero(annotation.reshape(annotation.shape[0], -1).any(axis=1))[0])
            example = {} if case_index == 0 and variant == example_variant else None
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


def write_reports(evaluation: Evaluation, out_dir: str | Path, meta: dict) -> dict[str, Path]:
    """Writes the report of ``run_evaluation``: results.csv, summary.md, figure.png, and example.npz and
    confidence.csv when there is an example / confidence rows.

    All or nothing: the files are written under temporary names beside their destinations and renamed into place
    together once all are written. A companion file this report does not have (example.npz, confidence.csv) is
    then removed, so that none of an earlier report stays beside this one.

    Args:
        evaluation: what ``run_evaluation`` returned.
        out_dir: output folder (created).
        meta: what the header of summary.md says: ``data`` (description), ``command``, and optionally
            ``seconds`` (wall time of the run), ``device``, ``notes`` (list of lines).

    Returns:
        The paths written, by kind ("csv", "summary", "figure", and "example", "confidence" when written).
    """
    out_dir = Path(out_dir)
    rows = evaluation.rows
    paths = {"csv": out_dir / "results.csv", "summary": out_dir / "summary.md", "figure": out_dir / "figure.png"}
    if evaluation.example is not None:
        paths["example"] = out_dir / EXAMPLE_FILE
    if evaluation.confidence:
        paths["confidence"] = out_dir / CONFIDENCE_FILE
        meta = {**meta, "confidence": evaluation.confidence}
    if evaluation.advice:
        meta = {**meta, "advice": evaluation.advice}
    with OutputBatch() as outputs:
        outputs.file(paths["csv"], lambda temporary: write_csv(rows, temporary))
        outputs.text(summary_markdown(rows, meta), paths["summary"])
        outputs.file(paths["figure"], lambda temporary: write_figure(rows, temporary, evaluation.example))
        if "example" in paths:
            outputs.file(paths["example"], lambda temporary: np.savez_compressed(temporary, **evaluation.example))
        if "confidence" in paths:
            outputs.file(paths["confidence"], lambda temporary: _write_confidence(evaluation.confidence, temporary))
    for kind, name in (("example", EXAMPLE_FILE), ("confidence", CONFIDENCE_FILE)):
        if kind not in paths and (out_dir / name).is_file():
            (out_dir / name).unlink()
    return paths


def evaluate_command(data: str | None, out: str, *, n_cases: int = 20, methods: Sequence[str] | None = None,
                     variants: Sequence[str] | None = None, device: str = "auto", seed_start: int | None = None,
                     progress: bool = True, command: str | None = None, generator: str = "phantom",
                     segmenter: object | None = None) -> Path:
    """Everything ``gastric-propagate evaluate`` does: load cases, run, write the reports.

    Args:
        data: a folder of image/label pairs (see ``cases``), or None for held-out synthetic cases.
        generator: the synthetic generator when ``data`` is None ("phantom" or "shapes").
        segmenter: the engine's loaded ``Segmenter`` (other weights); the bundled weights when None.
        out: output folder.
        n_cases: at most this many cases.
        methods: method names (``ALL_METHODS`` when None).
        variants: annotation variants (all when None).
        device: torch device for the engine's methods.
        seed_start: first phantom seed (held-out seeds when None).
        progress: show a progress bar.
        command: the command line to quote in the report; rebuilt from the arguments when None.

    Returns:
        The output folder (results.csv, summary.md, figure.png).
    """
    started = time.perf_counter()
    if data is None:
        from gastric_propagate.synthetic.generators import generated_cases
        from gastric_propagate.synthetic.phantom import HELD_OUT_SEED_START

        cases = generated_cases(generator, n_cases, HELD_OUT_SEED_START if seed_start is None else seed_start)
    else:
        cases = folder_cases(data, n_cases)
    methods = list(methods or ALL_METHODS)
    variants = list(variants or VARIANTS)
    evaluation = run_evaluation(cases, methods=methods, variants=variants, device=device, progress=progress,
                                segmenter=segmenter)
    if data is None:
        seeds = [case.seed for case in cases]
        description = (f"{len(cases)} held-out synthetic '{generator}' cases (gastric_propagate.synthetic, seeds "
                       f"{seeds[0]}-{seeds[-1]})" if seeds else "no cases")
    else:
        description = f"{len(cases)} labelled case(s) from {Path(data).resolve()}"
    if command is None:
        command = "gastric-propagate evaluate" + (f" --data {data}" if data else "") + f" --out {out}" \
            + f" --cases {n_cases}" + f" --methods {' '.join(methods)}" + f" --variants {' '.join(variants)}" \
            + (f" --device {device}" if device != "auto" else "")
    if any(method in ENGINE_METHODS for method in methods):
        from gastric_propagate.inference.pipeline import resolve_device

        device = str(resolve_device(device))
    meta = {"data": description, "command": command, "seconds": time.perf_counter() - started,
            "device": device}
    paths = write_reports(evaluation, out, meta)
    logger.info("evaluation written to %s", paths["summary"].parent)
    return Path(out)


def write_csv(rows: list[dict], path: str | Path, columns: Sequence[str] = CSV_COLUMNS) -> None:
    """Writes the rows with the columns of ``CSV_COLUMNS`` (or ``columns``)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _write_confidence(rows: list[dict], path: Path) -> None:
    write_csv(rows, path, ("case", "variant", "slice", "confidence", "flagged", "dice"))


def read_csv(path: str | Path) -> list[dict]:
    """Reads results.csv back into rows (numbers as floats)."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for key in ("dice", "hd95_mm", "volume_error_percent", "seconds", "truth_ml", "predicted_ml"):
            row[key] = float(row[key])
        row["painted_slice"] = int(row["painted_slice"])
        row["slice_mm"] = float(row.get("slice_mm") or "nan")
    return rows


def summary_markdown(rows: list[dict], meta: dict) -> str:
    """The report: a header, then one table per annotation variant (mean ± SD and median per method)."""
    methods = list(dict.fromkeys(row["method"] for row in rows))
    variants = list(dict.fromkeys(row["variant"] for row in rows))
    cases = list(dict.fromkeys(row["case"] for row in rows))
    titles = {**ENGINE_TITLES, **{name: method.title for name, method in BASELINES.items()}}
    lines = [
        "# GastricPropagate evaluation",
        "",
        f"- **Data:** {meta.get('data', 'unknown')}",
        f"- **Cases:** {len(cases)}; annotation variants: {', '.join(variants)}; methods: {', '.join(methods)}",
        f"- **Command:** `{meta.get('command', 'unknown')}`",
        f"- **Version:** gastric-propagate {__version__} (Python {platform.python_version()}, "
        f"{_library_versions()}); device {meta.get('device', 'auto')}; {platform.machine()}, "
        f"{os.cpu_count()} CPU cores",
        f"- **Date:** {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}"
        + (f"; wall time {meta['seconds'] / 60:.1f} min" if "seconds" in meta else ""),
    ]
    lines += [f"- {note}" for note in meta.get("notes", [])]
    lines += [
        "",
        "Each method starts from the same one painted axial slice. Dice: overlap with the truth (1 = perfect). "
        "HD95: 95th percentile of the symmetric surface distance in mm (empty predictions excluded, counted "
        "in 'empty'). Volume error: signed, in % of the true volume. Seconds: wall time of the method alone. "
        "Cells: mean ± SD (median).",
        "",
        "Annotation variants: largest = the largest true cross-section; "
        "random_slice = the truth on a random slice with at least 1/4 of the largest area (run as not the largest); "
        "random_slice_ticked = the same slice, run as the largest (the box left ticked); "
        "next_slice = the truth on the slice just above or below the largest (run as the largest, as a user who "
        "missed it by one slice would); "
        "eroded / dilated = the largest cross-section shrunk / grown in-plane by 1-2 mm. "
        "The 'fill between slices, ideal' row reads the true first, largest and last slices: it is an upper "
        "reference for shape-only interpolation, not a competitor.",
    ]
    for variant in variants:
        lines += ["", f"## Annotation: {variant}", "",
                  "| Method | n | Dice | HD95 (mm) | Volume error (%) | Seconds | empty | failed |",
                  "|---|---|---|---|---|---|---|---|"]
        for method in methods:
            selected = [row for row in rows if row["variant"] == variant and row["method"] == method]
            scored = [row for row in selected if not row["error"]]
            cells = [_cell([row[key] for row in scored], digits)
                     for key, digits in (("dice", 3), ("hd95_mm", 2), ("volume_error_percent", 1), ("seconds", 3))]
            empty = sum(1 for row in scored if row["predicted_ml"] == 0)
            lines.append(f"| {titles.get(method, method)} | {len(selected)} | {' | '.join(cells)} | {empty} | "
                         f"{len(selected) - len(scored)} |")
        lines += breakdown_markdown(rows, variant, titles)
        advice = [row["advised"] for row in meta.get("advice", []) if row["variant"] == variant]
        if advice:
            lines += ["", f"The engine's result came with advice to the reader (today only that the painted slice "
                          f"may not be the largest cross-section) in {sum(advice)} of {len(advice)} runs."]
    if meta.get("confidence"):
        from gastric_propagate.inference.pipeline import REVIEW_CONFIDENCE

        lines += confidence_markdown(meta["confidence"], REVIEW_CONFIDENCE)
    return "\n".join(lines) + "\n"


def write_figure(rows: list[dict], path: str | Path, example: dict | None = None) -> None:
    """Box plot of Dice per method (default variant) above one case's slices with contours (``example``: the
    arrays of ``Evaluation.example``, or None for the box plot alone)."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    variants = list(dict.fromkeys(row["variant"] for row in rows))
    variant = DEFAULT_VARIANT if DEFAULT_VARIANT in variants else (variants[0] if variants else DEFAULT_VARIANT)
    methods = list(dict.fromkeys(row["method"] for row in rows))
    figure = Figure(figsize=(12, 8 if example is not None else 4.5), dpi=90, layout="constrained")
    top, bottom = figure.subfigures(2, 1, height_ratios=(1, 1.15)) if example is not None else (figure, None)
    axes = top.subplots()
    values = [[row["dice"] for row in rows if row["method"] == m and row["variant"] == variant
               and math.isfinite(row["dice"])] for m in methods]
    axes.boxplot([v if v else [float("nan")] for v in values], showmeans=True)
    axes.set_xticks(range(1, len(methods) + 1), methods)
    axes.set_ylabel("Dice")
    axes.set_ylim(0, 1)
    axes.set_title(f"Dice per method, annotation '{variant}' ({len({row['case'] for row in rows})} cases)")
    axes.grid(axis="y", alpha=0.3)
    if example is not None:
        _draw_example(bottom, example)
    figure.savefig(path)


def _score_one(method: Method, data, annotation: np.ndarray, variant: str, source: str,
               painted: int) -> tuple[dict, np.ndarray | None]:
    row = {"case": data.name, "variant": variant, "method": method.name, "painted_slice": painted,
           "slice_mm": round(float(data.spacing_xyz[2]), 3), "source": source,
           "truth_ml": round(volume_ml(data.label, data.spacing_xyz), _DECIMALS), "error": ""}
    started = time.perf_counter()
    try:
        output = method.run(data.image, data.spacing_xyz, annotation, truth_label=data.label,
                            case_key=(data.name, variant))
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
    box = tuple(slice(max(0, int(ix.min()) - margin), int(ix.max()) + margin + 1) for ix in np.nonzero(union))
    return prediction[box], truth[box]


def _cell(values: list[float], digits: int) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "-"
    sd = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return f"{statistics.fmean(finite):.{digits}f} ± {sd:.{digits}f} ({statistics.median(finite):.{digits}f})"


def _library_versions() -> str:
    """Versions of the main libraries, from the installed metadata (importing torch only for this is slow)."""
    from importlib import metadata

    versions = []
    for package in ("numpy", "SimpleITK", "torch"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            pass
    return ", ".join(versions)


def _example_arrays(data, annotation: np.ndarray, variant: str, masks: dict[str, np.ndarray]) -> dict:
    """The first case's crop (image, truth, annotation, predictions) the figure draws."""
    union = data.label > 0
    for mask in masks.values():
        union = union | (mask > 0)
    zs, ys, xs = np.nonzero(union)
    pad = 8
    box = (slice(int(zs.min()), int(zs.max()) + 1),
           slice(max(0, int(ys.min()) - pad), int(ys.max()) + pad + 1),
           slice(max(0, int(xs.min()) - pad), int(xs.max()) + pad + 1))
    return dict(image=data.image[box].astype(np.int16), truth=data.label[box], annotation=annotation[box],
                case=np.asarray(data.name), variant=np.asarray(variant), z_offset=np.asarray(int(zs.min())),
                spacing_xyz=np.asarray(data.spacing_xyz), **{f"mask_{name}": mask[box] for name, mask in masks.items()})


def _draw_example(figure, example) -> None:
    from matplotlib.lines import Line2D

    image, truth, annotation = example["image"], example["truth"], example["annotation"]
    spacing = example["spacing_xyz"]
    shown = [m for m in FIGURE_METHODS if f"mask_{m}" in example][:3]
    colours = ("tab:red", "tab:orange", "tab:blue")
    tumour = np.flatnonzero(truth.reshape(truth.shape[0], -1).any(axis=1))
    painted = np.flatnonzero(annotation.reshape(annotation.shape[0], -1).any(axis=1))
    if tumour.size == 0:
        return
    # the tumour's ends, two slices between, and the painted slice in place of the nearest one
    chosen = [int(round(z)) for z in np.linspace(tumour[0], tumour[-1], 4)]
    if painted.size and int(painted[0]) not in chosen:
        chosen[int(np.argmin([abs(z - painted[0]) for z in chosen[1:-1]])) + 1] = int(painted[0])
    aspect = float(spacing[1] / spacing[0])
    for axes, z in zip(figure.subplots(1, len(chosen)), chosen):
        axes.imshow(image[z], cmap="gray", vmin=-160, vmax=240, aspect=aspect)
        for method, colour in zip(shown, colours):
            if example[f"mask_{method}"][z].any():
                axes.contour(example[f"mask_{method}"][z], levels=[0.5], colors=colour, linewidths=1.0)
        if truth[z].any():  # drawn last: on top
            axes.contour(truth[z], levels=[0.5], colors="lime", linewidths=1.5)
        label = " (painted)" if painted.size and z == painted[0] else ""
        axes.set_title(f"axial slice {z + int(example['z_offset'])}{label}", fontsize=9)
        axes.set_axis_off()
    handles = [Line2D([0], [0], color="lime", label="truth")]
    handles += [Line2D([0], [0], color=colour, label=method) for method, colour in zip(shown, colours)]
    figure.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=9)
    figure.suptitle(f"Example: {example['case']}, annotation '{example['variant']}'", fontsize=11)


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, desc="evaluating", unit="run")
