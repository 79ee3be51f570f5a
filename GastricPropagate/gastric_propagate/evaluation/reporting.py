"""The evaluation's report, from what ``running.run_evaluation`` found.

Outputs (in one folder):
    results.csv: one row per case, annotation variant and method (Dice, HD95, volume error, seconds).
    summary.md: mean ± SD and median of each metric per method and variant, with a header saying
        which data, how many cases, which command and which version produced it.
    figure.png: Dice per method (default variant) and one case's axial slices with the contours of
        the truth and of the main methods.
    example.npz: the arrays the figure's slices are drawn from (one case, default variant).
    confidence.csv: the engine's confidence, review flag and Dice of every propagated slice (when the engine ran).

Nothing is written while the methods run: the report's files are written together at the end, each under a
temporary name beside it, and renamed into place at once (``data.outputs.OutputBatch``). A crash or SIGTERM leaves the
earlier report (or none), never a half-written one or a mix of two runs.
"""

from __future__ import annotations

import csv
import datetime
import math
import os
import platform
import statistics
from pathlib import Path
from typing import Sequence

import numpy as np

from gastric_propagate import __version__
from gastric_propagate.data.annotation import painted_slices
from gastric_propagate.data.outputs import OutputBatch
from gastric_propagate.evaluation.annotations import DEFAULT_VARIANT
from gastric_propagate.evaluation.breakdown import breakdown_markdown, confidence_markdown
from gastric_propagate.evaluation.running import BASELINES, ENGINE_TITLES, Evaluation

CSV_COLUMNS = ("case", "variant", "method", "dice", "hd95_mm", "volume_error_percent", "seconds",
               "truth_ml", "predicted_ml", "painted_slice", "slice_mm", "source", "error")
CONFIDENCE_FILE = "confidence.csv"
EXAMPLE_FILE = "example.npz"
# Every file ``write_reports`` may write into its folder.
REPORT_FILES = ("results.csv", "summary.md", "figure.png", EXAMPLE_FILE, CONFIDENCE_FILE)
# Contours drawn in the figure, in order of preference (the first three present are drawn).
FIGURE_METHODS = ("engine", "networks", "registration", "region_growing", "copy_slice")


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
            outputs.file(paths["confidence"], lambda temporary: write_confidence(evaluation.confidence, temporary))
    for kind, name in (("example", EXAMPLE_FILE), ("confidence", CONFIDENCE_FILE)):
        if kind not in paths and (out_dir / name).is_file():
            (out_dir / name).unlink()
    return paths


def write_csv(rows: list[dict], path: str | Path, columns: Sequence[str] = CSV_COLUMNS) -> None:
    """Writes the rows with the columns of ``CSV_COLUMNS`` (or ``columns``)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


CONFIDENCE_COLUMNS = ("case", "variant", "slice", "confidence", "flagged", "dice")


def write_confidence(rows: list[dict], path: str | Path) -> None:
    """Writes the engine's per-slice confidence rows (``confidence.csv``)."""
    write_csv(rows, path, CONFIDENCE_COLUMNS)


def read_confidence(path: str | Path) -> list[dict]:
    """Reads confidence.csv back into rows (confidence and Dice as floats, the flag as a bool)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return [{**row, "confidence": float(row["confidence"]), "dice": float(row["dice"]),
                 "flagged": row["flagged"] in ("True", "1")} for row in csv.DictReader(handle)]


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
        "HD95: 95th percentile of the surface distances of both directions pooled, in mm (as medpy's hd95; MONAI's "
        "takes the larger of the two one-way 95th percentiles, a little higher; empty predictions excluded, counted "
        "in 'empty'). Volume error: signed, in % of the true volume. Seconds: wall time of the method alone. "
        "Cells: mean ± SD (median) over the runs scored: n counts every run, the failed ones too (HD95 also leaves "
        "out the empty ones); a cell of one run shows no SD.",
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
            if not selected:  # a method run on other variants only (a merged report)
                continue
            scored = [row for row in selected if not row["error"]]
            cells = [_cell([row[key] for row in scored], digits)
                     for key, digits in (("dice", 3), ("hd95_mm", 2), ("volume_error_percent", 1), ("seconds", 3))]
            empty = sum(1 for row in scored if row["predicted_ml"] == 0)
            lines.append(f"| {titles.get(method, method)} | {len(selected)} | {' | '.join(cells)} | {empty} | "
                         f"{len(selected) - len(scored)} |")
        lines += _paired_means(rows, variant, methods, titles)
        lines += breakdown_markdown(rows, variant, titles)
        advice = [row["advised"] for row in meta.get("advice", []) if row["variant"] == variant]
        if advice:
            # running.py counts the larger_neighbour advice alone: the one the variants (which slice is painted) test
            lines += ["", f"The engine's result came with advice that the painted slice may not be the largest "
                          f"cross-section (`larger_neighbour`; the report's other kinds of advice are not counted "
                          f"here) in {sum(advice)} of {len(advice)} runs."]
    if meta.get("confidence"):
        from gastric_propagate.inference.result import REVIEW_CONFIDENCE

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
    plotted = {row["case"] for row in rows if row["variant"] == variant and row["method"] in methods
               and math.isfinite(row["dice"])}
    axes.set_title(f"Dice per method, annotation '{variant}' ({len(plotted)} cases)")
    axes.grid(axis="y", alpha=0.3)
    if example is not None:
        _draw_example(bottom, example)
    figure.savefig(path)


def _paired_means(rows: list[dict], variant: str, methods: list[str], titles: dict) -> list[str]:
    """Where some method failed on a case, the table's rows are means over different cases (a method that fails on a
    hard case would look better): the mean Dice of each method on the cases every method scored, for a fair
    comparison. Nothing when no run failed."""
    runs = [row for row in rows if row["variant"] == variant and row["method"] in methods]
    failed = sorted({row["case"] for row in runs if row["error"]})
    if not failed:
        return []
    common = [row for row in runs if row["case"] not in failed]
    cases = len({row["case"] for row in common})
    means = [(method, [row["dice"] for row in common if row["method"] == method]) for method in methods]
    shown = "; ".join(f"{titles.get(method, method)} {statistics.fmean(dice):.3f}" for method, dice in means if dice)
    return ["", f"Some method failed on {len(failed)} case(s) ({', '.join(failed[:5])}"
                f"{', ...' if len(failed) > 5 else ''}), so the rows above are means over different cases. "
                f"On the {cases} case(s) every method scored, mean Dice: {shown or '(none)'}."]


def _cell(values: list[float], digits: int) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "-"
    if len(finite) == 1:  # "± 0.00" would read as a spread
        return f"{finite[0]:.{digits}f} (one run)"
    return (f"{statistics.fmean(finite):.{digits}f} ± {statistics.stdev(finite):.{digits}f} "
            f"({statistics.median(finite):.{digits}f})")


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


def _draw_example(figure, example) -> None:
    from matplotlib.lines import Line2D

    image, truth, annotation = example["image"], example["truth"], example["annotation"]
    spacing = example["spacing_xyz"]
    shown = [m for m in FIGURE_METHODS if f"mask_{m}" in example][:3]
    colours = ("tab:red", "tab:orange", "tab:blue")
    tumour, painted = painted_slices(truth), painted_slices(annotation)
    if not tumour:
        return
    # the tumour's ends, two slices between, and the painted slice in place of the nearest one
    chosen = [int(round(z)) for z in np.linspace(tumour[0], tumour[-1], 4)]
    if painted and painted[0] not in chosen:
        chosen[int(np.argmin([abs(z - painted[0]) for z in chosen[1:-1]])) + 1] = painted[0]
    aspect = float(spacing[1] / spacing[0])
    for axes, z in zip(figure.subplots(1, len(chosen)), chosen):
        axes.imshow(image[z], cmap="gray", vmin=-160, vmax=240, aspect=aspect)
        for method, colour in zip(shown, colours):
            if example[f"mask_{method}"][z].any():
                axes.contour(example[f"mask_{method}"][z], levels=[0.5], colors=colour, linewidths=1.0)
        if truth[z].any():  # drawn last: on top
            axes.contour(truth[z], levels=[0.5], colors="lime", linewidths=1.5)
        label = " (painted)" if painted and z == painted[0] else ""
        axes.set_title(f"axial slice {z + int(example['z_offset'])}{label}", fontsize=9)
        axes.set_axis_off()
    handles = [Line2D([0], [0], color="lime", label="truth")]
    handles += [Line2D([0], [0], color=colour, label=method) for method, colour in zip(shown, colours)]
    figure.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=9)
    figure.suptitle(f"Example: {example['case']}, annotation '{example['variant']}'", fontsize=11)
