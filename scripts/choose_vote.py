"""How the vote (inference/consensus.py) and its confidence were chosen: on held-out synthetic cases, not real CT.

For 40 cases of each synthetic generator (phantom, 'shapes', 'thorax') with seeds no training or evaluation uses
(1,000,000 on), largest cross-section painted, it prints the mean Dice of the vote's candidate members alone and of
their majorities, how well the per-slice confidence tracks per-slice Dice with and without the opinions' agreement
(and which review threshold best finds the slices a radiologist would redraw), Demons registration alone with another
partial-volume rim given back (0 or 2 pixels instead of 1), and the engine with the vote reaching 0.5 to 1 painted
diameters each way, with and without its tapered copy and its outline snapping. The shipped choice is the majority
of the networks, Demons registration and the tapered copy over ``consensus.REACH_FACTOR`` painted diameters, its
outline snapped to the painted edge's HU level (``inference/outline_snap.py``).

    .venv/bin/python scripts/choose_vote.py            # about 30 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from gastric_propagate.evaluation.annotations import make_annotation
from gastric_propagate.evaluation.baselines import registration_propagation
from gastric_propagate.inference import consensus as vote
from gastric_propagate.inference.confidence import slice_confidence
from gastric_propagate.inference.pipeline import CUT_BACK_CONFIDENCE_FACTOR, PropagationOptions, Segmenter
from gastric_propagate.inference.result import REVIEW_CONFIDENCE
from gastric_propagate.metrics import dice
from gastric_propagate.synthetic.generators import DEV_SEED_START, GENERATORS, generated_cases, load_all

MEMBERS = {"n": "networks", "a": "affine registration", "d": "Demons registration", "c": "tapered copy"}
VOTES = ("nac", "ndc", "adc", "nadc")  # an even count breaks ties toward the networks
POOR_SLICE_DICE = 0.7  # a slice a radiologist would have to redraw
REVIEW_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5)
REACHES = (0.5, 0.6, 0.75, 1.0)  # the vote's reach, in painted diameters each way


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=40, help="cases per generator")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--generators", nargs="+", default=list(GENERATORS), choices=GENERATORS)
    args = parser.parse_args()
    segmenter = Segmenter(device="cpu")
    for generator in args.generators:
        scores: dict[str, list[float]] = {}
        confidence_rows = []
        for case in load_all(generated_cases(generator, args.cases, DEV_SEED_START), args.workers):
            annotation = make_annotation(case.label, case.spacing_xyz, "largest", seed=0)
            try:
                alone = segmenter.segment(case.image, case.spacing_xyz, annotation,
                                          PropagationOptions(use_consensus=False))
                engine = segmenter.segment(case.image, case.spacing_xyz, annotation)
            except Exception as error:  # a generated volume the CT check refuses: counted out, as in evaluate
                print(f"  {case.name}: {error}")
                continue
            k = engine.anchor_slices[0]
            painted = annotation[k] > 0
            same_reach = {"extent_factor": vote.REACH_FACTOR}  # every member over the shipped vote's reach
            opinions = {
                "n": engine.network_mask,  # the networks within the vote's reach
                "a": registration_propagation(case.image, case.spacing_xyz, annotation, **same_reach),
                "d": registration_propagation(case.image, case.spacing_xyz, annotation, **same_reach,
                                              **vote.REGISTRATION),
                "c": vote.tapered_copy(case.image.shape, k, painted, case.spacing_xyz, **same_reach),
            }
            for rim in (0, 2):  # the Demons member's partial-volume rim (registration.RESTORED_RIM_PX = 1)
                other_rim = registration_propagation(case.image, case.spacing_xyz, annotation, restored_rim_px=rim,
                                                     **same_reach, **vote.REGISTRATION)
                scores.setdefault(f"Demons, rim of {rim} px", []).append(dice(other_rim, case.label))
            scores.setdefault("networks alone (--no-consensus)", []).append(dice(alone.mask, case.label))
            for key, mask in opinions.items():
                scores.setdefault(MEMBERS[key], []).append(dice(mask, case.label))
            for members in VOTES:
                voted = _vote([opinions[m] for m in members], k, painted)
                scores.setdefault(f"vote {'+'.join(members)}", []).append(dice(voted, case.label))
            for factor in REACHES:  # how far the vote reaches (consensus.REACH_FACTOR), with and without its parts
                reached = engine if factor == vote.REACH_FACTOR else segmenter.segment(
                    case.image, case.spacing_xyz, annotation, PropagationOptions(vote_reach=factor))
                for taper, snap in ((True, True), (True, False), (False, True), (False, False)):
                    voted = reached.mask if taper and snap else vote.take_vote(
                        reached.network_mask, case.image, case.spacing_xyz, {k: painted}, (0, case.image.shape[0] - 1),
                        extent_factor=factor, taper=taper, snap=snap)[0]
                    shipped = " (shipped)" if factor == vote.REACH_FACTOR and taper and snap else ""
                    parts = {(True, True): "", (True, False): ", no snap", (False, True): ", no taper",
                             (False, False): ", neither"}[(taper, snap)]
                    scores.setdefault(f"the engine, reach {factor:g}{parts}{shipped}", []).append(
                        dice(voted, case.label))
            confidence_rows += _confidence_rows(engine, case)
        print(f"\n{generator}: {len(scores[MEMBERS['n']])} cases, mean Dice")
        for name, values in scores.items():
            print(f"  {name:<26} {np.mean(values):.3f}")
        _print_confidence(confidence_rows)


def _vote(opinions: list[np.ndarray], k: int, painted: np.ndarray) -> np.ndarray:
    votes = sum((o > 0).astype(np.uint8) for o in opinions)
    voted = 2 * votes > len(opinions)
    if len(opinions) % 2 == 0:
        voted |= (2 * votes == len(opinions)) & (opinions[0] > 0)
    voted = voted.astype(np.uint8)
    voted[k] = painted
    return vote.keep_connected(voted, {k: painted})


def _confidence_rows(engine, case) -> list[tuple[float, float, float]]:
    """(confidence without the agreement, the engine's confidence, per-slice Dice) of each propagated slice."""
    slices = sorted(z for z in engine.slice_confidence if z not in engine.anchor_slices)
    plain = slice_confidence(engine.mask, engine.anchor_slices, range(slices[0], slices[-1] + 1), case.spacing_xyz) \
        if slices else {}
    for z in engine.cut_back:  # as the engine does with or without the agreement
        plain[z] *= CUT_BACK_CONFIDENCE_FACTOR
    return [(plain[z], engine.slice_confidence[z], dice(engine.mask[z], case.label[z])) for z in slices
            if engine.mask[z].any() or case.label[z].any()]


def _print_confidence(rows) -> None:
    plain, voted, scores = (np.array(column) for column in zip(*rows))
    poor = scores < POOR_SLICE_DICE
    for name, values in (("without agreement", plain), ("with agreement", voted)):
        r = float(np.corrcoef(values, scores)[0, 1])
        print(f"  confidence {name:<18} Pearson r {r:.2f} with per-slice Dice over {len(scores)} slices"
              + ("" if math.isfinite(r) else " (constant)"))
        print(f"  review threshold: slices flagged, and how well they find the {poor.sum()} slices with Dice < "
              f"{POOR_SLICE_DICE} (recall, precision, F1)")
        for threshold in REVIEW_THRESHOLDS:
            flagged = values < threshold
            found = int((flagged & poor).sum())
            recall, precision = found / max(1, poor.sum()), found / max(1, flagged.sum())
            f1 = 2 * recall * precision / max(1e-9, recall + precision)
            shipped = " (shipped)" if threshold == REVIEW_CONFIDENCE and values is voted else ""
            print(f"    < {threshold:.1f}{shipped:<10} {flagged.mean():5.0%} flagged; recall {recall:.2f}, "
                  f"precision {precision:.2f}, F1 {f1:.2f}")


if __name__ == "__main__":
    main()
