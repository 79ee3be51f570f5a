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
from typing import Callable, Sequence

from gastric_propagate.data.cases import find_pairs, folder_cases, learned_case_names, patient_of
from gastric_propagate.data.output_checks import check_outputs, check_writable_folder
from gastric_propagate.errors import InputError
from gastric_propagate.evaluation.annotations import VARIANTS
from gastric_propagate.evaluation.reporting import (CONFIDENCE_FILE, CSV_COLUMNS, EXAMPLE_FILE, FIGURE_METHODS,
                                                    REPORT_FILES, read_csv, summary_markdown, write_csv, write_figure,
                                                    write_reports)
from gastric_propagate.evaluation.running import (ALL_METHODS, BASELINES, ENGINE_METHODS, ENGINE_TITLES, Evaluation,
                                                  Method, method_registry, run_evaluation)

__all__ = ["ALL_METHODS", "BASELINES", "CONFIDENCE_FILE", "CSV_COLUMNS", "ENGINE_METHODS", "ENGINE_TITLES",
           "EXAMPLE_FILE", "FIGURE_METHODS", "LEARNED_NOTE", "REPORT_FILES", "VARIANTS", "Evaluation", "Method",
           "evaluate_command",
           "evaluate_main", "method_registry", "read_csv", "run_evaluation", "summary_markdown", "write_csv",
           "write_figure", "write_reports"]

logger = logging.getLogger(__name__)
# How the report begins its warning when the weights learned some of the cases (scripts/crossval_report.py reads it).
LEARNED_NOTE = "The weights were trained on"


def evaluate_command(data: str | None, out: str, *, n_cases: int = 20, methods: Sequence[str] | None = None,
                     variants: Sequence[str] | None = None, device: str = "auto", seed_start: int | None = None,
                     progress: bool = True, command: str | None = None, generator: str = "phantom",
                     segmenter: object | None = None, label: int | None = None) -> Path:
    """Everything ``gastric-propagate evaluate`` does: load cases, run, write the reports.

    Args:
        data: a folder of image/label pairs (see ``cases``), or None for held-out synthetic cases.
        label: the tumour's value in ``data``'s label files (``folder_cases``).
        generator: the synthetic generator when ``data`` is None ("phantom", "shapes", "thorax" or "hypodense").
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
        cases = folder_cases(data, n_cases, label)
    methods = list(methods or ALL_METHODS)
    variants = list(variants or VARIANTS)
    notes = []
    if any(method in ENGINE_METHODS for method in methods):
        if segmenter is None:  # loaded here (and handed on) to read what the weights were trained on
            from gastric_propagate.inference.pipeline import Segmenter

            segmenter = Segmenter(device=device)
        notes = _seen_in_training([case.name for case in cases], segmenter)
    evaluation = run_evaluation(cases, methods=methods, variants=variants, device=device, progress=progress,
                                segmenter=segmenter)
    if data is None:
        seeds = [case.seed for case in cases]
        description = _synthetic_description(len(cases), generator, seeds[0], seeds[-1]) if seeds else "no cases"
    else:
        description = f"{len(cases)} labelled case(s) from {Path(data).resolve()}"
    if command is None:
        command = "gastric-propagate evaluate" + (f" --data {data}" if data else "") + f" --out {out}" \
            + f" --cases {n_cases}" + f" --methods {' '.join(methods)}" + f" --variants {' '.join(variants)}" \
            + (f" --device {device}" if device != "auto" else "")
    if any(method in ENGINE_METHODS for method in methods):
        from gastric_propagate.inference.backends import resolve_device

        device = str(resolve_device(device))
    meta = {"data": description, "command": command, "seconds": time.perf_counter() - started,
            "device": device, "notes": notes}
    paths = write_reports(evaluation, out, meta)
    logger.info("evaluation written to %s", paths["summary"].parent)
    return Path(out)


def _synthetic_description(count: int, generator: str, first: int, last: int) -> str:
    """The report's line on synthetic cases of seeds first-last: held out from training, the development seeds engine
    choices were made on, or seeds in the range training draws from."""
    from gastric_propagate.synthetic.generators import DEV_SEED_START
    from gastric_propagate.synthetic.phantom import HELD_OUT_SEED_START

    seeds = f"gastric_propagate.synthetic, seeds {first}-{last}"
    if HELD_OUT_SEED_START <= first and last < DEV_SEED_START:
        return f"{count} held-out synthetic '{generator}' cases ({seeds})"
    what = ("the development seeds engine choices were made on" if first >= DEV_SEED_START
            else f"seeds below {HELD_OUT_SEED_START} are those training draws from")
    return f"{count} synthetic '{generator}' cases ({seeds}: {what})"


def _seen_in_training(names: Sequence[str], segmenter) -> list[str]:
    """A warning (printed, and a note for the report) when the weights were trained on some of these cases: their
    GastricPropagate rows then say nothing about unseen CT, and such cases are reported by cross-validation."""
    trained, partial = set(), False
    for stage in (segmenter.proposer, segmenter.refiner):
        training = stage.training or {}
        trained |= learned_case_names(training)  # the weights it was fine-tuned from count too
        partial |= len(training.get("case_names") or ()) < training.get("cases", 0)  # weights from before the list
    patients = {patient_of(name) for name in trained}
    seen = [name for name in names if patient_of(name) in patients]
    if not seen:
        return []
    more = "; these weights list only some of their training cases, so there may be more" if partial else ""
    shown = ", ".join(seen[:10]) + (f" and {len(seen) - 10} more" if len(seen) > 10 else "")
    note = (f"**{LEARNED_NOTE} {len(seen)} of these {len(names)} cases** (by patient: {shown}"
            f"{more}): the GastricPropagate rows are not a test on unseen CT. Report such cases by cross-validation "
            "(scripts/crossval_finetune.py, scripts/crossval_report.py). Cases are matched by name (the patient's "
            "part of it): other patients under the same names (case1, patient01) are counted too.")
    print("warning: " + note.replace("**", ""))
    return [note]


def evaluate_main(*, out: str, data: str | Sequence[str] | None, cases: int | None, methods: Sequence[str] | None,
                  variants: Sequence[str] | None, generator: str | None, seed_start: int | None, overwrite: bool,
                  device: str, command: str, load_segmenter: Callable[[], object] | None,
                  label: int | None = None) -> int:
    """``gastric-propagate evaluate``: checks the names, the folder and the report files before any work, says how
    many cases of ``data`` it evaluates, runs ``evaluate_command`` (with the segmenter ``load_segmenter`` loads, or
    the bundled weights when None) and prints the files it wrote; returns 0. ``data``: one folder (the command
    line's repeatable --data, refused when given twice); ``generator`` None: phantom."""
    if cases is not None and cases < 1:
        raise InputError(f"--cases {cases} is too small: give 1 or more (or leave it out for every case).")
    if isinstance(data, (list, tuple)):
        if len(data) > 1:
            raise InputError(f"--data is given {len(data)} times ({', '.join(data)}); evaluate reads one folder. Run "
                             "it once per folder, each with its own --out.")
        data = data[0] if data else None
    if label is not None and data is None:
        raise InputError(f"--label {label} picks the tumour's value in the label files of --data: give --data, or "
                         "leave --label out (the synthetic cases' labels hold the tumour alone).")
    if data is not None and (generator is not None or seed_start is not None):
        given = [option for option, value in (("--generator", generator), ("--seed-start", seed_start))
                 if value is not None]
        raise InputError(f"{' and '.join(given)} {'choose' if len(given) > 1 else 'chooses'} synthetic cases, but "
                         f"--data {data} is given: its cases are the ones evaluated. Leave one or the other out.")
    generator = generator or "phantom"
    for option, given, known in (("--methods", methods, ALL_METHODS), ("--variants", variants, VARIANTS)):
        unknown = [name for name in given or () if name not in known]
        if unknown or given == []:
            problem = f"unknown name(s) {' '.join(unknown)}" if unknown else "no name given"
            raise InputError(f"{option}: {problem}. Choose from {' '.join(known)}, or leave the option out for "
                             "all of them.")
    # A name given twice would run twice and count twice in the statistics.
    methods = list(dict.fromkeys(methods)) if methods is not None else None
    variants = list(dict.fromkeys(variants)) if variants is not None else None
    check_writable_folder(out, f"the output folder {out}")
    check_outputs({f"report file {name}": Path(out) / name for name in REPORT_FILES}, overwrite=overwrite)
    n_cases = cases
    if data is None:
        n_cases = 20 if n_cases is None else n_cases
    else:
        found = len(find_pairs(data))
        used = found if n_cases is None else min(found, n_cases)
        print(f"{found} image/label pair(s) found in {data}; evaluating "
              + (f"all {used}" if used == found else f"the first {used} (--cases {n_cases})"))
    segmenter = load_segmenter() if load_segmenter is not None else None
    evaluate_command(data, out, n_cases=n_cases, methods=methods, variants=variants, device=device,
                     command=command, generator=generator, seed_start=seed_start, segmenter=segmenter, label=label)
    # write_reports removes an earlier run's example.npz / confidence.csv this run did not write: what is there is new
    written = [name for name in REPORT_FILES if (Path(out) / name).is_file()]
    print(f"wrote {', '.join(written)} to {out}")
    # A failed case is recorded and the others go on (exit 0): said here, as the last line, not only in the files.
    rows = read_csv(Path(out) / "results.csv")
    failed = [row for row in rows if row["error"]]
    if failed:
        names = list(dict.fromkeys(row["case"] for row in failed))
        named = f"{', '.join(names[:3])}{', ...' if len(names) > 3 else ''}"
        print(f"warning: {len(failed)} of {len(rows)} runs failed, on {len(names)} of "
              f"{len({row['case'] for row in rows})} case(s) ({named}): why is in the error column of "
              f"{Path(out) / 'results.csv'} (and in the ERROR lines above); summary.md counts them under 'failed'.")
    return 0
