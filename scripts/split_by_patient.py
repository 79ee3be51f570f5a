"""Splits a folder of image/label pairs by patient into a training and a validation folder (symbolic links).

A patient's cases all go to one side: LIDC nodules of one patient are named ``lidc_<patient>_n<N>``, so the
patient is the name without its ``_n<N>`` tail. The split is stratified by case group (``lidc``, ``ibsi_sts``)
and fixed by --seed, so a recipe chosen on the validation side was never trained on those patients.

    .venv/bin/python scripts/split_by_patient.py --data ../shared/real-ct-train --out runs/split --validation 0.15
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from gastric_propagate.data.cases import find_pairs, link_cases, patient_of
from gastric_propagate.errors import InputError
from gastric_propagate.evaluation.breakdown import case_group


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True, help="writes <out>/train and <out>/validation")
    parser.add_argument("--validation", type=float, default=0.15, help="fraction of each group's patients")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    pairs = find_pairs(args.data)
    patients: dict[str, dict[str, list]] = {}
    for pair in pairs:
        patient = patient_of(pair[0])  # grouped by the patient's name: "abc_n1" and "abc" are one patient, one group
        patients.setdefault(case_group(patient), {}).setdefault(patient, []).append(pair)
    rng = np.random.default_rng(args.seed)
    sides: dict[str, list] = {"train": [], "validation": []}
    for group, members in sorted(patients.items()):
        names = sorted(members)
        held = set(rng.choice(names, size=max(1, round(args.validation * len(names))), replace=False))
        for patient in names:
            sides["validation" if patient in held else "train"] += members[patient]
        print(f"{group}: {len(names) - len(held)} patients to train, {len(held)} to validation")
    try:
        for side, side_pairs in sides.items():
            link_cases(side_pairs, Path(args.out) / side)
    except InputError as error:
        parser.error(str(error))
    print(f"cases: {len(sides['train'])} train, {len(sides['validation'])} validation")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
