"""Where each opinion of the vote goes wrong: the networks, the registration, the copied outline, and the vote itself.

On the true tumour slices within the vote's reach (painted slice excluded), per case group, it prints how often an
opinion is empty there (its chain lost the tumour) and, on the slices where it is not, its in-plane Dice, precision,
recall and median area against the truth's. It also prints the shape of the truth along z: its length in painted
(largest) equivalent diameters, and the area of its first and last slices against the largest; the vote's reach and
copied outline assume a tumour about as long as it is wide. Last, two ceilings on the 3D Dice: the truth cut to the
result's slices (what the result's extent along z alone costs) and, per slice, the best of the result, its three
opinions and nothing (the candidate adding the most true less false voxels: what any rule choosing among the
opinions slice by slice could reach at most). A diagnosis for the next change, not a score: the evaluation reports
are the scores.

    .venv/bin/python scripts/opinions_breakdown.py --data ../shared/real-ct      # about 2 minutes on 2 CPU cores
    .venv/bin/python scripts/opinions_breakdown.py --generator shapes --cases 20  # the dev cases of choose_vote.py

The shipped weights learned ../shared/real-ct, so there the figures come from the cross-validation's folds:
``--folds DIR`` (``crossval_finetune.py``'s --out) scores each fold's test cases with that fold's weights and pools
the cases of all folds.

    .venv/bin/python scripts/opinions_breakdown.py --folds runs/cv  # each fold: DIR/foldN/test, DIR/foldN/weights
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from gastric_propagate.data.cases import folder_cases
from gastric_propagate.evaluation.annotations import make_annotation
from gastric_propagate.evaluation.breakdown import case_group
from gastric_propagate.inference import consensus as vote
from gastric_propagate.inference.pipeline import Segmenter
from gastric_propagate.inference.masks import equivalent_diameter_mm
from gastric_propagate.metrics import dice
from gastric_propagate.synthetic.generators import DEV_SEED_START, GENERATORS, generated_cases

COLUMNS = ("empty", "Dice", "precision", "recall", "area")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="folder of image/label pairs")
    source.add_argument("--generator", choices=GENERATORS, help="held-out synthetic dev cases")
    source.add_argument("--folds", help="cross-validation folds: each DIR/foldN/test scored with DIR/foldN/weights")
    parser.add_argument("--cases", type=int, default=None, help="at most this many cases (20 for a generator)")
    args = parser.parse_args()
    if args.folds:
        runs = [(Segmenter(fold / "weights" / "proposer.pt", fold / "weights" / "refiner.pt", device="cpu"),
                 folder_cases(fold / "test", args.cases)) for fold in sorted(Path(args.folds).glob("fold*"))]
    else:
        runs = [(Segmenter(device="cpu"), folder_cases(args.data, args.cases) if args.data else
                 generated_cases(args.generator, args.cases or 20, DEV_SEED_START))]
    table: dict[str, dict[str, list[tuple[float, ...]]]] = {}
    shapes: dict[str, list[tuple[float, float]]] = {}
    ceilings: dict[str, list[tuple[float, float, float]]] = {}
    for segmenter, case in ((segmenter, case) for segmenter, cases in runs for case in cases):
        data = case.load()
        annotation = make_annotation(data.label, data.spacing_xyz, "largest", seed=case.seed)
        try:
            result = segmenter.segment(data.image, data.spacing_xyz, annotation)
        except Exception as error:  # a volume the CT check refuses: left out, as in evaluate
            print(f"  {case.name}: {error}")
            continue
        k = result.anchor_slices[0]
        painted = annotation[k] > 0
        # The vote's own opinions, taken again as the pipeline takes them (no slice limits here).
        _, (networks, registered, copied) = vote.take_vote(result.network_mask, data.image, data.spacing_xyz,
                                                          {k: painted}, (0, data.image.shape[0] - 1))
        opinions = {"networks (within the reach)": networks, "registration": registered, "tapered copy": copied,
                    "the vote (the result)": result.mask}
        reach = vote.reach_slices(painted, data.spacing_xyz)
        truth = data.label > 0
        slices = [j for j in np.flatnonzero(truth.any(axis=(1, 2))) if j != k and abs(j - k) <= reach]
        group = table.setdefault(case_group(case.name), {})
        for name, mask in opinions.items():
            group.setdefault(name, []).append(_figures(mask > 0, truth, slices))
        shapes.setdefault(case_group(case.name), []).append(_truth_shape(truth, painted, data.spacing_xyz))
        ceilings.setdefault(case_group(case.name), []).append(_ceilings(opinions, truth))
    for group, rows in table.items():
        print(f"\n{group}: {len(next(iter(rows.values())))} cases, {' / '.join(COLUMNS)} (means over cases)")
        for name, figures in rows.items():
            means = np.nanmean(np.array(figures, dtype=float), axis=0)
            print(f"  {name:<28} " + "  ".join(f"{column} {value:.3f}" for column, value in zip(COLUMNS, means)))
        length, ends = np.array(shapes[group]).mean(axis=0)
        print(f"  the truth along z: {length:.2f} painted diameters long; its end slices hold {ends:.0%} of the "
              "largest area")
        result, extent, best = np.array(ceilings[group]).mean(axis=0)
        print(f"  3D Dice: the result {result:.3f}; the truth on the result's slices {extent:.3f}; per slice the best "
              f"of the result, its opinions and nothing {best:.3f}")


def _truth_shape(truth: np.ndarray, painted: np.ndarray,
                 spacing_xyz: tuple[float, float, float]) -> tuple[float, float]:
    """(the truth's length along z in painted equivalent diameters, the mean area of its two end slices as a share of
    its largest)."""
    areas = truth.sum(axis=(1, 2))
    occupied = np.flatnonzero(areas)
    length = len(occupied) * spacing_xyz[2] / equivalent_diameter_mm(painted, spacing_xyz)
    return length, float((areas[occupied[0]] + areas[occupied[-1]]) / 2 / areas.max())


def _ceilings(opinions: dict[str, np.ndarray], truth: np.ndarray) -> tuple[float, float, float]:
    """3D Dice of the result, of the truth on the result's slices only, and of the per-slice best candidate."""
    result = opinions["the vote (the result)"] > 0
    on_result_slices = truth & result.any(axis=(1, 2))[:, None, None]
    best = np.zeros_like(truth)
    for j in range(truth.shape[0]):
        candidates = [mask[j] > 0 for mask in opinions.values()] + [np.zeros_like(truth[j])]
        best[j] = max(candidates, key=lambda m: 2 * int((m & truth[j]).sum()) - int(m.sum()))
    return dice(result, truth), dice(on_result_slices, truth), dice(best, truth)


def _figures(mask: np.ndarray, truth: np.ndarray, slices: list[int]) -> tuple[float, ...]:
    """(share of ``slices`` where ``mask`` is empty, then mean Dice, precision, recall and median area ratio on the
    others); NaN where there is nothing to measure."""
    if not slices:
        return (np.nan,) * len(COLUMNS)
    marked = [j for j in slices if mask[j].any()]
    empty = 1.0 - len(marked) / len(slices)
    if not marked:
        return (empty,) + (np.nan,) * (len(COLUMNS) - 1)
    hits = [float((mask[j] & truth[j]).sum()) for j in marked]
    return (empty,
            float(np.mean([dice(mask[j], truth[j]) for j in marked])),
            float(np.mean([h / mask[j].sum() for h, j in zip(hits, marked)])),
            float(np.mean([h / truth[j].sum() for h, j in zip(hits, marked)])),
            float(np.median([mask[j].sum() / truth[j].sum() for j in marked])))


if __name__ == "__main__":
    main()
