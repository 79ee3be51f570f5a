"""The report's breakdowns: by case group, slice thickness and lesion size, against copy-slice, and confidence vs Dice.

A case's group is its name without the trailing number (``ibsi_sts_004`` -> ``ibsi_sts``, ``lidc_0001_n1``
-> ``lidc``, ``shapes_12`` -> ``shapes``), so one folder of mixed sources is reported per source.
"""

from __future__ import annotations

import math
import re
import statistics

import numpy as np
from scipy import stats

# Slice-thickness bins of the report: (title, lowest mm exclusive, highest mm inclusive).
THICKNESS_BINS = (("thin (<= 1 mm)", 0.0, 1.0), ("1-3 mm", 1.0, 3.0), ("thick (> 3 mm)", 3.0, math.inf))
# Lesion-size bins of the report, by the true volume: (title, lowest mL inclusive, highest mL exclusive). A decade each:
# small nodules, the large nodules, small and large sarcomas and gastric tumours.
SIZE_BINS = (("< 0.5 mL", 0.0, 0.5), ("0.5-5 mL", 0.5, 5.0), ("5-50 mL", 5.0, 50.0), (">= 50 mL", 50.0, math.inf))
# A case counts as "below copy-slice" when its Dice is this much under copy-slice's on the same annotation.
BELOW_COPY_MARGIN = 0.05


def case_group(name: str) -> str:
    """The case's source group: its name up to the first underscore followed by a digit."""
    match = re.match(r"^(.*?)_\d", name)
    return match.group(1) if match else name


def thickness_bin(slice_mm: float) -> str:
    for title, low, high in THICKNESS_BINS:
        if low < slice_mm <= high:
            return title
    return "unknown"


def size_bin(truth_ml: float) -> str:
    """The bin of a lesion of ``truth_ml`` (its true volume)."""
    for title, low, high in SIZE_BINS:
        if low <= truth_ml < high:
            return title
    return "unknown"


def _mean_median(values: list[float]) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "-"
    return f"{statistics.fmean(finite):.3f} ({statistics.median(finite):.3f}), n={len(finite)}"


def _table(rows: list[dict], methods: list[str], titles: dict[str, str], key, heading: str,
           order: tuple[str, ...] = ()) -> list[str]:
    """One row per method, one column per value of ``key`` (in ``order``, then the others sorted)."""
    present = {key(row) for row in rows}
    columns = [column for column in order if column in present] + sorted(present.difference(order))
    lines = ["", heading, "", "| Method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for method in methods:
        cells = [_mean_median([row["dice"] for row in rows if row["method"] == method and key(row) == column])
                 for column in columns]
        lines.append(f"| {titles.get(method, method)} | " + " | ".join(cells) + " |")
    return lines


def breakdown_markdown(rows: list[dict], variant: str, titles: dict[str, str]) -> list[str]:
    """Markdown lines: Dice by group, by slice thickness and by lesion size, and each method against copy-slice."""
    rows = [row for row in rows if row["variant"] == variant]
    methods = list(dict.fromkeys(row["method"] for row in rows))
    lines = _table(rows, methods, titles, lambda row: case_group(row["case"]),
                   f"### Dice by case group, annotation '{variant}' (mean (median), n)")
    lines += _table(rows, methods, titles, lambda row: thickness_bin(float(row.get("slice_mm", "nan"))),
                    f"### Dice by slice thickness, annotation '{variant}' (mean (median), n)",
                    order=tuple(title for title, _, _ in THICKNESS_BINS))
    lines += _table(rows, methods, titles, lambda row: size_bin(float(row.get("truth_ml", "nan"))),
                    f"### Dice by lesion size (true volume), annotation '{variant}' (mean (median), n)",
                    order=tuple(title for title, _, _ in SIZE_BINS))
    copy = {row["case"]: row["dice"] for row in rows if row["method"] == "copy_slice"}
    if copy:
        lines += ["", f"### Against copy-slice, annotation '{variant}'", "",
                  f"Cases more than {BELOW_COPY_MARGIN} Dice below copy-slice on the same annotation, and the "
                  "median absolute volume error.", "",
                  "| Method | below copy-slice | median abs. volume error (%) |", "|---|---|---|"]
        for method in methods:
            scored = [row for row in rows if row["method"] == method and math.isfinite(row["dice"])]
            below = sum(1 for row in scored
                        if row["case"] in copy and row["dice"] < copy[row["case"]] - BELOW_COPY_MARGIN)
            errors = [abs(row["volume_error_percent"]) for row in scored if math.isfinite(row["volume_error_percent"])]
            median_error = f"{statistics.median(errors):.1f}" if errors else "-"
            lines.append(f"| {titles.get(method, method)} | {below} of {len(scored)} | {median_error} |")
    return lines


def per_slice_dice(mask: np.ndarray, truth: np.ndarray, slices) -> dict[int, float]:
    """Dice of each given axial slice (slices where both are empty are left out)."""
    scores = {}
    for k in slices:
        a, b = mask[k] > 0, truth[k] > 0
        total = int(a.sum()) + int(b.sum())
        if total:
            scores[int(k)] = 2.0 * float(np.logical_and(a, b).sum()) / total
    return scores


def confidence_markdown(pairs: list[dict], review_threshold: float) -> list[str]:
    """How the engine's per-slice confidence tracks per-slice Dice (painted slices excluded)."""
    if len(pairs) < 3:
        return []
    confidence = np.array([p["confidence"] for p in pairs])
    scores = np.array([p["dice"] for p in pairs])
    if np.ptp(confidence) == 0 or np.ptp(scores) == 0:  # a correlation with a constant is undefined (NaN)
        correlation = "no correlation (the confidence or the Dice is the same on every slice)"
    else:
        pearson = float(np.corrcoef(confidence, scores)[0, 1])
        # Tied values (many slices of Dice 0 or confidence 1) share their mean rank: rho does not hang on row order.
        spearman = float(stats.spearmanr(confidence, scores)[0])
        correlation = f"Pearson r = {pearson:.2f}, Spearman rho = {spearman:.2f}"
    flagged = np.array([bool(p["flagged"]) for p in pairs])  # the engine's slices_to_review
    lines = ["", "### Per-slice confidence against per-slice Dice (the engine's result)", "",
             f"{len(pairs)} propagated slices of {len({p['case'] for p in pairs})} cases: {correlation}."]
    if flagged.any() and (~flagged).any():
        lines.append(f"Slices flagged for review (confidence < {review_threshold}, or cut back after a leak): "
                     f"{int(flagged.sum())} ({flagged.mean():.0%}), mean Dice "
                     f"{scores[flagged].mean():.3f}; the others: mean Dice {scores[~flagged].mean():.3f}.")
    return lines
