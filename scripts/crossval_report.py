"""One report of the shipped recipe on a folder its weights learned from, by cross-validation only.

The shipped weights learned ../shared/real-ct, so what the networks give there may only be reported from
`scripts/crossval_finetune.py`'s folds: each case scored with the weights of the fold that never saw it. This script
gathers those per-case rows (each fold's --runs, `eval-tuned` and `eval-variants` by default: the methods that use the
networks; a run whose summary says its weights learned some of its cases is refused)
and, for the methods that do not (copy-slice, registration, region growing, Grow from seeds, ...), the rows of full
evaluations of the same cases (--baselines), and writes results.csv, summary.md (the evaluation's own report) and
confidence.csv to --out.

    .venv/bin/python scripts/crossval_report.py --folds runs/cv --out docs/evaluation/real-ct-crossval \
        --baselines docs/evaluation/real-ct/results.csv docs/evaluation/real-ct-variants/results.csv ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from crossval_finetune import learned_overlap
from gastric_propagate.data.cases import find_pairs
from gastric_propagate.errors import InputError
from gastric_propagate.evaluation.evaluate import LEARNED_NOTE
from gastric_propagate.evaluation.reporting import (CONFIDENCE_FILE, read_confidence, read_csv, summary_markdown,
                                                    write_confidence, write_csv)

#: The methods whose result depends on the weights: taken from the folds only.
NETWORK_METHODS = {"engine", "networks", "proposer"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", required=True, help="crossval_finetune.py's --out (fold0/, fold1/, ...)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--baselines", nargs="+", default=[], help="results.csv files of full evaluations")
    parser.add_argument("--runs", nargs="+", default=["eval-tuned", "eval-variants"],
                        help="each fold's evaluation folders to gather (default: %(default)s)")
    args = parser.parse_args()

    folds = sorted(Path(args.folds).glob("fold*"))
    rows, confidence, seen, engine_run = [], [], set(), {}
    held_out = {}  # case -> the fold that holds it out: its rows come from that fold's runs only
    for fold in folds:
        try:
            pairs = find_pairs(fold / "test")
        except InputError as error:
            parser.error(f"{fold}: no held-out cases ({error}); --folds takes crossval_finetune.py's --out")
        found = learned_overlap(str(fold / "weights"), pairs) if (fold / "weights" / "proposer.pt").is_file() else None
        if found:
            parser.error(f"the weights in {fold / 'weights'} ({found[0]}) learned {len(found[1])} case(s) the fold "
                         f"holds out ({', '.join(found[1][:3])}, ...): they are not cross-validated")
        for name, _, _ in pairs:
            if name in held_out:
                parser.error(f"{name} is held out by both {held_out[name].name} and {fold.name}")
            held_out[name] = fold
    for fold in folds:
        for run in args.runs:  # the first run listed that holds a case's variant and method is the one reported
            if not (fold / run / "results.csv").is_file():
                parser.error(f"{fold / run / 'results.csv'} is missing")
            summary = fold / run / "summary.md"  # results.csv does not name the weights; evaluate's summary warns
            if summary.is_file() and LEARNED_NOTE in summary.read_text(encoding="utf-8"):
                parser.error(f"{summary} says its weights were trained on some of its cases: {fold / run} was not "
                             f"scored with {fold / 'weights'} (evaluate it again with --proposer and --refiner)")
            for row in read_csv(fold / run / "results.csv"):
                if row["method"] in NETWORK_METHODS and held_out.get(row["case"]) != fold:
                    parser.error(f"{fold / run / 'results.csv'} scores {row['case']} with {row['method']}, a case "
                                 f"{fold.name} does not hold out (its networks may have learned it)")
                if row["method"] in NETWORK_METHODS and (row["case"], row["variant"], row["method"]) not in seen:
                    seen.add((row["case"], row["variant"], row["method"]))
                    rows.append(row)
                    if row["method"] == "engine":
                        engine_run[row["case"], row["variant"]] = (fold, run)
            if (fold / run / CONFIDENCE_FILE).is_file():  # the vote's per-slice confidence: from its Dice's run
                confidence += [row for row in read_confidence(fold / run / CONFIDENCE_FILE)
                               if engine_run.get((row["case"], row["variant"])) == (fold, run)]
    cases = {row["case"] for row in rows}
    missing = sorted(set(held_out) - {case for case, variant, method in seen if method == "engine"})
    if missing:
        parser.error(f"{len(missing)} held-out case(s) have no vote (engine) row in the runs {', '.join(args.runs)} "
                     f"({', '.join(missing[:3])}, ...): every case is reported, or the report would drop it silently")
    baseline_keys = set()
    for path in args.baselines:
        for row in read_csv(path):
            key = (row["case"], row["variant"], row["method"])
            if row["method"] in NETWORK_METHODS or row["case"] not in cases:
                continue
            if key in baseline_keys:
                parser.error(f"{path}: {', '.join(key)} is in the baselines twice (a file given twice?)")
            baseline_keys.add(key)
            rows.append(row)
    order = {"proposer": 0, "networks": 1, "engine": 2}
    rows.sort(key=lambda row: (row["variant"] != "largest", row["variant"], order.get(row["method"], 3)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "results.csv")
    meta = {"data": f"{len(cases)} cases, by {len(folds)}-fold cross-validation: the GastricPropagate rows come from "
                    f"each case's fold ({args.folds}; for each case, variant and method the first of the runs "
                    f"{', '.join(args.runs)} that holds it), whose networks never saw it; the other methods from "
                    f"{', '.join(args.baselines) or 'none'}",
            "command": "python scripts/crossval_report.py " + " ".join(sys.argv[1:]), "device": "cpu"}
    if confidence:
        meta["confidence"] = confidence
        write_confidence(confidence, out / CONFIDENCE_FILE)
    (out / "summary.md").write_text(summary_markdown(rows, meta), encoding="utf-8")
    print(f"wrote {out / 'results.csv'}, {out / 'summary.md'}" + (", confidence.csv" if confidence else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
