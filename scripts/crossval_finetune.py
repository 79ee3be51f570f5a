"""Cross-validated fine-tuning: does `train --data DIR --init bundled` help on a radiologist's own cases?

The cases of a folder are split into K folds (stratified by case group, fixed seed). For each fold, the
starting weights (--init: the bundled ones, or a folder) are fine-tuned on the other K-1 folds with the project's
own command (`gastric-propagate train --data ... --init ...`), and both the starting and the fine-tuned weights are
evaluated on the held-out fold with `gastric-propagate evaluate`. Nothing is trained on a case it is then
scored on: starting weights that learned any case of the folder are refused (the bundled ones learned
../shared/real-ct). Prints one table (mean Dice per group of the vote and of the networks alone, starting vs
fine-tuned) and writes the runs under --out.

    .venv/bin/python scripts/crossval_finetune.py --data my-cases --out runs/crossval --folds 3

Arguments after ``--`` join each fold's `train` command (a recipe: more --data folders, --mix, --learning-rate, ...).
Each fold's training cases are linked into a folder named like --data's own, so that a --mix share for it applies.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

from gastric_propagate.data.cases import find_pairs, learned_case_names, link_cases, patient_of
from gastric_propagate.errors import InputError
from gastric_propagate.evaluation.breakdown import case_group
from gastric_propagate.training.command import initial_paths

#: The engine's result (the vote) and the networks alone (proposer + refiner), each scored on the held-out fold.
METHODS = {"engine": "the vote", "networks": "the networks alone"}


def folds_by_patient(pairs: list, count: int, seed: int) -> list[list]:
    """``count`` folds of ``find_pairs`` pairs: within each group, whole patients dealt round in a random order (a
    patient's cases never on both sides; with one case per patient, the order of the cases)."""
    rng = np.random.default_rng(seed)
    folds: list[list] = [[] for _ in range(count)]
    for patients in _patients_by_group(pairs).values():
        members = list(patients.values())
        for i, index in enumerate(rng.permutation(len(members))):
            folds[i % count].extend(members[index])
    return folds


def _mean(values: list[float]) -> str:
    """The table's cell: the mean over the cases scored (failed runs left out, and said); "-" for none."""
    return f"{statistics.fmean(values):.3f}" if values else "-"


def _patients_by_group(pairs: list) -> dict[str, dict[str, list]]:
    """group -> patient -> that patient's pairs, as ``folds_by_patient`` deals them."""
    by_group: dict[str, dict[str, list]] = {}
    for pair in pairs:
        patient = patient_of(pair[0])  # grouped by the patient's name: "abc_n1" and "abc" are one patient, one group
        by_group.setdefault(case_group(patient), {}).setdefault(patient, []).append(pair)
    lone: dict[str, list] = {}  # names without a group ("anna_n1", "carl"): dealt together, not each from fold 0
    for group in [group for group, patients in by_group.items() if len(patients) == 1]:
        for patient, cases in by_group.pop(group).items():
            lone.setdefault(patient, []).extend(cases)
    if lone:
        by_group[""] = lone
    return by_group


def _scores(results_csv: Path) -> dict[str, dict[str, float]]:
    """Dice per case of each scored method: ``{method: {case: dice}}``. A run that failed (``evaluate`` records it
    with its error and no Dice) is said, and left out of the means rather than turning them into NaN."""
    scores: dict[str, dict[str, float]] = {method: {} for method in METHODS}
    with open(results_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["method"] not in scores:
                continue
            dice = float(row["dice"]) if row.get("dice") not in (None, "") else math.nan
            if math.isfinite(dice):
                scores[row["method"]][row["case"]] = dice
            else:
                print(f"warning: {results_csv}: {row['method']} failed on {row['case']} "
                      f"({row.get('error') or 'no Dice'}); left out of the means")
    return scores


def learned_overlap(weights: str, pairs) -> tuple[str, list[str]] | None:
    """(stage, the cases of ``pairs`` whose patient it learned) for the first network of ``weights`` ('bundled' or a
    folder of proposer.pt and refiner.pt) that learned one, by its training metadata; None when neither did."""
    from gastric_propagate.inference.checkpoints import load_checkpoint

    for stage, path in initial_paths(weights).items():
        seen = {patient_of(name) for name in learned_case_names(load_checkpoint(path, stage=stage).training)}
        overlap = sorted(name for name, _, _ in pairs if patient_of(name) in seen)
        if overlap:
            return stage, overlap
    return None


def _refuse_weights_that_saw(init: str, pairs, parser) -> None:
    """The folds' networks start from --init: weights that learned a case of --data would have seen every fold's
    held-out cases (the shipped weights learned ../shared/real-ct), so the scores would not be cross-validated."""
    found = learned_overlap(init, pairs)
    if found:
        stage, overlap = found
        parser.error(f"--init {init}: its {stage} (or the weights it was fine-tuned from) learned "
                     f"{len(overlap)} case(s) of the data, or other cases of their patients "
                     f"({', '.join(overlap[:3])}, ...); start from weights that never saw them, e.g. "
                     "runs/real-ct-training/tuned from scripts/real_ct_training.sh")


def _refuse_recipe_data_that_holds(recipe: list[str], pairs, parser) -> None:
    """A recipe's own --data folders (after --) train every fold: a case of --data there, or another case of its
    patient, would be learned by the fold that holds it out."""
    def is_data(flag: str) -> bool:  # argparse takes "--da" and "--dat" for "--data" too
        return len(flag) >= 4 and "--data".startswith(flag)

    folders = [value for flag, value in zip(recipe, recipe[1:]) if is_data(flag)]
    folders += [item.split("=", 1)[1] for item in recipe if "=" in item and is_data(item.split("=", 1)[0])]
    patients = {patient_of(name) for name, _, _ in pairs}
    for folder in folders:
        overlap = sorted(name for name, _, _ in find_pairs(folder) if patient_of(name) in patients)
        if overlap:
            parser.error(f"the recipe's --data {folder} holds {len(overlap)} case(s) of the cross-validated data's "
                         f"patients ({', '.join(overlap[:3])}, ...): every fold would learn its held-out patients. "
                         "Give a folder without them (split by patient: scripts/split_by_patient.py).")


def _steps(args, recipe: list[str]) -> str:
    """'proposer/refiner' steps as the folds trained them: a recipe's own step counts override the script's."""
    steps = {"--proposer-steps": str(args.proposer_steps), "--refiner-steps": str(args.refiner_steps)}
    for flag, value in zip(recipe, recipe[1:]):
        if flag in steps:
            steps[flag] = value
    return "/".join(steps.values())


def _label_options(recipe: list[str]) -> list[str]:
    """The recipe's --label N (the tumour's value in the label files), for the folds' evaluations too: the folds
    are cut from the same data."""
    def is_label(flag: str) -> bool:  # argparse takes any unique prefix: --la, --lab, ...
        return len(flag) >= 4 and "--label".startswith(flag)

    for index, item in enumerate(recipe):
        if is_label(item) and index + 1 < len(recipe):
            return ["--label", recipe[index + 1]]
        if "=" in item and is_label(item.split("=", 1)[0]):
            return ["--label", item.split("=", 1)[1]]
    return []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--proposer-steps", type=int, default=400)
    parser.add_argument("--refiner-steps", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", default="bundled",
                        help="the weights each fold fine-tunes and is compared with: 'bundled' or a folder holding "
                             "proposer.pt and refiner.pt; refused if they were trained on any case of --data")
    parser.add_argument("--reuse-weights", action="store_true",
                        help="score the fine-tuned weights an earlier run left under --out (same folds and seed) "
                             "instead of training them again: for an engine change that leaves the networks alone")
    argv = sys.argv[1:]
    recipe = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:len(argv) - len(recipe) - (1 if recipe else 0)])

    cli = [sys.executable, "-m", "gastric_propagate.cli"]
    pairs = find_pairs(args.data)
    folds = folds_by_patient(pairs, args.folds, args.seed)
    if not all(folds):
        most = max(len(patients) for patients in _patients_by_group(pairs).values())
        parser.error(f"fold(s) {[k for k, fold in enumerate(folds) if not fold]} would hold out no case (each group's "
                     f"patients are dealt from fold 0): give --folds {most} or fewer, the patients of the largest "
                     "group")

    if any(item == "--init" or item.startswith("--init=") for item in recipe):  # the last --init would win
        parser.error("give --init before '--' (the folds start from it, and it is checked), not in the recipe")
    _refuse_weights_that_saw(args.init, pairs, parser)
    _refuse_recipe_data_that_holds(recipe, pairs, parser)
    init_weights = [f"--{stage}={path}" for stage, path in initial_paths(args.init).items()]
    out = Path(args.out)
    bundled: dict[str, dict[str, float]] = {method: {} for method in METHODS}
    tuned: dict[str, dict[str, float]] = {method: {} for method in METHODS}
    for fold in range(args.folds):
        held_out = folds[fold]
        training = [pair for other in range(args.folds) if other != fold for pair in folds[other]]
        fold_dir = out / f"fold{fold}"
        training_dir = fold_dir / "train" / Path(args.data).resolve().name  # named as --data, for --mix
        try:
            link_cases(training, training_dir)
            link_cases(held_out, fold_dir / "test")
        except InputError as error:
            parser.error(str(error))
        if not args.reuse_weights:
            subprocess.run(cli + ["train", "--data", str(training_dir),
                                  "--init", args.init, "--out", str(fold_dir / "weights"),
                                  "--proposer-steps", str(args.proposer_steps),
                                  "--refiner-steps", str(args.refiner_steps), "--validation-phantoms", "0",
                                  "--seed", str(args.seed), "--overwrite", *recipe], check=True)
        elif not (fold_dir / "weights" / "proposer.pt").exists():
            parser.error(f"--reuse-weights: no fine-tuned weights in {fold_dir / 'weights'}; run without it first")
        found = learned_overlap(str(fold_dir / "weights"), held_out)  # trained here or reused: never its own cases
        if found:
            parser.error(f"the weights in {fold_dir / 'weights'} ({found[0]}) learned {len(found[1])} case(s) this "
                         f"fold holds out ({', '.join(found[1][:3])}, ...): its scores would not be cross-validated")
        # The folds' scores are this script's own files: a run again (--reuse-weights, an engine change) replaces them.
        evaluate = cli + ["evaluate", "--data", str(fold_dir / "test"), "--variants", "largest",
                          "--methods", *METHODS, "--overwrite", *_label_options(recipe)]
        subprocess.run(evaluate + ["--out", str(fold_dir / "eval-bundled"), *init_weights], check=True)
        subprocess.run(evaluate + ["--out", str(fold_dir / "eval-tuned"), "--proposer",
                                   str(fold_dir / "weights" / "proposer.pt"), "--refiner",
                                   str(fold_dir / "weights" / "refiner.pt")], check=True)
        for scores, run in ((bundled, "eval-bundled"), (tuned, "eval-tuned")):
            for method, per_case in _scores(fold_dir / run / "results.csv").items():
                scores[method].update(per_case)

    groups = sorted({case_group(name) for name in bundled["engine"]})
    print(f"\n{args.folds}-fold cross-validated fine-tuning on {len(bundled['engine'])} cases of {args.data} "
          f"({_steps(args, recipe)} steps" + (f"; recipe: {' '.join(recipe)}" if recipe else "")
          + "); mean Dice on the held-out folds")
    print("| weights | " + " | ".join(groups) + " | all |")
    print("|---" * (len(groups) + 2) + "|")
    for method, what in METHODS.items():
        for title, scores in ((f"starting weights ({args.init})", bundled[method]),
                              ("fine-tuned on the other folds", tuned[method])):
            cells = [_mean([v for k, v in scores.items() if case_group(k) == g]) for g in groups]
            print(f"| {title}, {what} | " + " | ".join(cells) + f" | {_mean(list(scores.values()))} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
