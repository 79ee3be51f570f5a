"""scripts/compare_seeds.py: per-seed means from each run's evaluation folders, and whether the seeds separate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gastric_propagate.evaluation.reporting import write_csv

SCRIPT = Path(__file__).resolve().parents[4] / "scripts" / "compare_seeds.py"
JUDGES = ("validation", "dev-phantom", "dev-thorax")


def _run(folder: Path, networks: float, vote: float) -> Path:
    """A run whose every judge scored two cases: the networks' and the vote's Dice as given, +-0.01."""
    for judge in JUDGES:
        (folder / judge).mkdir(parents=True)
        rows = [dict(case=f"c{i}", variant="largest", method=method, dice=dice + offset, hd95_mm=1.0,
                     volume_error_percent=0.0, seconds=0.1, truth_ml=1.0, predicted_ml=1.0, painted_slice=3,
                     slice_mm=1.0, source="x", error="")
                for i, offset in enumerate((-0.01, 0.01))
                for method, dice in (("networks", networks), ("engine", vote))]
        rows.append(dict(rows[0], variant="eroded", dice=0.0))  # another variant: not counted
        write_csv(rows, folder / judge / "results.csv")
    return folder


def _compare(first: list[Path], second: list[Path]) -> str:
    done = subprocess.run([sys.executable, str(SCRIPT), "--first", "A", *map(str, first), "--second", "B",
                           *map(str, second)], capture_output=True, text=True, check=True)
    return done.stdout


@pytest.mark.parametrize("candidate, separated", [((0.83, 0.84), "yes"), ((0.81, 0.84), "no")])
def test_the_seeds_separate_only_when_every_candidate_seed_is_above_every_standing_one(tmp_path, candidate,
                                                                                        separated):
    standing = [_run(tmp_path / "a0", 0.80, 0.90), _run(tmp_path / "a1", 0.82, 0.91)]
    seeds = [_run(tmp_path / f"b{i}", dice, 0.92) for i, dice in enumerate(candidate)]
    out = _compare(standing, seeds)
    assert f"{tmp_path / 'a0'}: networks 0.8000 / 0.8000 / 0.8000 (mean 0.8000); vote 0.9000" in out
    assert "A: networks' mean over judges and seeds 0.8100 (seeds 0.8000, 0.8200); vote per judge 0.9050" in out
    assert f"every seed of B above every seed of A: {separated}" in out
    welch = out.split("Welch's one-sided t-test, B greater than A on the networks' mean: t = ")[1]
    # scipy.stats.ttest_ind(candidate, standing, equal_var=False, alternative="greater"), computed apart
    expected = {"yes": "2.24, p = 0.0994", "no": "0.83, p = 0.2519"}[separated]
    assert welch.startswith(expected + " (2 and 2 seeds)")
