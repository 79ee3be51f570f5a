"""Two training recipes, several seeds each, on the same judges: each seed's mean Dice and the recipes' means.

Each run folder holds one `evaluate` folder per judge (default: validation, dev-phantom, dev-thorax, as
scripts/real_ct_training.sh and rules.md lay them out), each evaluated with `--methods engine networks`. For each
seed this prints the networks' and the vote's mean Dice per judge and the networks' mean over the judges; then,
over the seeds, each recipe's mean, whether every seed of the second recipe lies above every seed of the first
(the separation rules.md's first stop-32 rule asked for; with 3 seeds each it has a chance of 1 in 20 when the
recipes are equal), and Welch's one-sided t-test of the second recipe's networks' mean against the first's (its
second design's rule).

    .venv/bin/python scripts/compare_seeds.py --first H runs/s30/H runs/s31/Hseed1 runs/s32/Hseed2 \
        --second I runs/s31/I runs/s32/Iseed1 runs/s32/Iseed2
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from scipy import stats

from gastric_propagate.evaluation.reporting import read_csv

JUDGES = ("validation", "dev-phantom", "dev-thorax")


def judge_means(run: Path, judges: tuple[str, ...], method: str) -> list[float]:
    """Mean Dice of ``method`` (largest cross-section painted) on each judge of one run."""
    means = []
    for judge in judges:
        rows = [r for r in read_csv(run / judge / "results.csv") if r["method"] == method and r["variant"] == "largest"]
        if not rows:
            raise SystemExit(f"{run / judge / 'results.csv'} has no '{method}' rows: evaluate with --methods "
                             "engine networks")
        means.append(statistics.mean(r["dice"] for r in rows))
    return means


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first", nargs="+", required=True, metavar=("NAME", "RUN"),
                        help="the standing recipe's name, then its runs (one folder per seed)")
    parser.add_argument("--second", nargs="+", required=True, metavar=("NAME", "RUN"),
                        help="the candidate recipe's name, then its runs")
    parser.add_argument("--judges", nargs="+", default=list(JUDGES), help="evaluation folders in each run")
    args = parser.parse_args()
    judges = tuple(args.judges)
    recipes = {}
    for name, *runs in (args.first, args.second):
        if not runs:
            parser.error(f"{name}: give at least one run folder after the name")
        recipes[name] = []
        for run in map(Path, runs):
            networks, votes = judge_means(run, judges, "networks"), judge_means(run, judges, "engine")
            recipes[name].append((statistics.mean(networks), networks, votes))
            print(f"{name} {run}: networks " + " / ".join(f"{x:.4f}" for x in networks)
                  + f" (mean {statistics.mean(networks):.4f}); vote " + " / ".join(f"{x:.4f}" for x in votes))
    (first, standing), (second, candidate) = recipes.items()
    print(f"judges: {', '.join(judges)}")
    for name, seeds in recipes.items():
        votes = [statistics.mean(seed[2][k] for seed in seeds) for k in range(len(judges))]
        print(f"{name}: networks' mean over judges and seeds {statistics.mean(s[0] for s in seeds):.4f} "
              f"(seeds {', '.join(f'{s[0]:.4f}' for s in seeds)}); vote per judge "
              + " / ".join(f"{v:.4f}" for v in votes))
    lowest, highest = min(s[0] for s in candidate), max(s[0] for s in standing)
    print(f"every seed of {second} above every seed of {first}: {'yes' if lowest > highest else 'no'} "
          f"(lowest of {second} {lowest:.4f}, highest of {first} {highest:.4f})")
    if len(standing) > 1 and len(candidate) > 1:
        test = stats.ttest_ind([s[0] for s in candidate], [s[0] for s in standing], equal_var=False,
                               alternative="greater")
        print(f"Welch's one-sided t-test, {second} greater than {first} on the networks' mean: t = "
              f"{test.statistic:.2f}, p = {test.pvalue:.4f} ({len(candidate)} and {len(standing)} seeds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
