"""``gastric-propagate evaluate``: loads the cases, runs every method on every case and annotation variant
(``running``), and writes the report (``reporting``). The names of both are importable from here.

Typical use::

    evaluate_command(None, "eval_out")            # 20 held-out phantoms, every method and variant
    evaluation = run_evaluation(cases, methods=["copy_slice", "region_growing"])
    write_reports(evaluation, out_dir, meta)
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Sequence

from gastric_propagate.data.cases import folder_cases
from gastric_propagate.evaluation.annotations import VARIANTS
from gastric_propagate.evaluation.reporting import (CONFIDENCE_FILE, CSV_COLUMNS, EXAMPLE_FILE, FIGURE_METHODS,
                                                    REPORT_FILES, read_csv, summary_markdown, write_csv, write_figure,
                                                    write_reports)
from gastric_propagate.evaluation.running import (ALL_METHODS, BASELINES, ENGINE_METHODS, ENGINE_TITLES, Evaluation,
                                                  Method, method_registry, run_evaluation)

__all__ = ["ALL_METHODS", "BASELINES", "CONFIDENCE_FILE", "CSV_COLUMNS", "ENGINE_METHODS", "ENGINE_TITLES",
           "EXAMPLE_FILE", "FIGURE_METHODS", "REPORT_FILES", "VARIANTS", "Evaluation", "Method", "evaluate_command",
           "method_registry", "read_csv", "run_evaluation", "summary_markdown", "write_csv", "write_figure",
           "write_reports"]

logger = logging.getLogger(__name__)


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
