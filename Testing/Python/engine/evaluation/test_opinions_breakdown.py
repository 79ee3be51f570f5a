"""scripts/opinions_breakdown.py: where each opinion of the vote goes wrong, and the ceilings on the 3D Dice."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from conftest import load_script
from gastric_propagate.inference.checkpoints import bundled_weights
from gastric_propagate.metrics import dice
from gastric_propagate.synthetic.generators import generated_cases

SCRIPT = Path(__file__).resolve().parents[4] / "scripts" / "opinions_breakdown.py"


def _script():
    return load_script("opinions_breakdown")


def _disc(shape, centre, radius):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2


def test_the_per_slice_ceiling_takes_each_slice_from_the_opinion_that_holds_it_best():
    script = _script()
    truth = np.zeros((4, 20, 20), dtype=bool)
    for j in range(3):
        truth[j] = _disc((20, 20), (10, 10), 5)
    result = np.zeros_like(truth)
    result[1] = _disc((20, 20), (10, 10), 4)  # the result holds slice 1 only, a little small
    registered = np.zeros_like(truth)
    registered[0] = truth[0]
    registered[3] = _disc((20, 20), (10, 10), 4)  # a slice the truth does not hold: worse than nothing there
    copied = np.zeros_like(truth)
    copied[2] = _disc((20, 20), (10, 10), 6)  # slice 2 a little too large: still better than nothing
    opinions = {"networks": np.zeros_like(truth), "registration": registered, "tapered copy": copied,
                "the vote (the result)": result}

    result_dice, extent_dice, best_dice = script._ceilings(opinions, truth)

    assert np.isclose(result_dice, dice(result, truth))
    assert np.isclose(extent_dice, dice(truth & result.any(axis=(1, 2))[:, None, None], truth))
    assert np.isclose(extent_dice, 2 * truth[1].sum() / (truth[1].sum() + truth.sum()))
    best = np.stack([registered[0], result[1], copied[2], np.zeros((20, 20), bool)])
    assert np.isclose(best_dice, dice(best, truth))
    assert result_dice < extent_dice < 1.0 and result_dice < best_dice < 1.0


def test_the_figures_count_the_empty_slices_apart_and_measure_the_others_in_plane():
    script = _script()
    truth = np.zeros((3, 20, 20), dtype=bool)
    truth[:] = _disc((20, 20), (10, 10), 5)
    mask = np.zeros_like(truth)
    mask[0] = truth[0]
    mask[1, 5:15, 10:15] = True  # half a square on the disc's right half: every pixel inside, part of it missed

    empty, mean_dice, precision, recall, area = script._figures(mask, truth, [0, 1, 2])

    assert np.isclose(empty, 1 / 3)
    hit = float((mask[1] & truth[1]).sum())
    assert np.isclose(mean_dice, (1.0 + dice(mask[1], truth[1])) / 2)
    assert np.isclose(precision, (1.0 + hit / mask[1].sum()) / 2)
    assert np.isclose(recall, (1.0 + hit / truth[1].sum()) / 2)
    assert np.isclose(area, (1.0 + mask[1].sum() / truth[1].sum()) / 2)  # the median of two ratios
    assert all(np.isnan(value) for value in script._figures(mask, truth, [])), "nothing to measure: NaN"


def _write_case(folder: Path, name: str, data) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for suffix, array in (("image", data.image.astype(np.int16)), ("label", (data.label > 0).astype(np.uint8))):
        volume = sitk.GetImageFromArray(array)
        volume.SetSpacing(tuple(float(s) for s in data.spacing_xyz))
        sitk.WriteImage(volume, str(folder / f"{name}_{suffix}.nii.gz"))


def test_folds_score_each_fold_s_cases_with_that_fold_s_weights_and_pool_them(tmp_path):
    folds = tmp_path / "cv"
    for index, case in enumerate(generated_cases("phantom", 2, 900)):
        fold = folds / f"fold{index}"
        _write_case(fold / "test", f"phantom_{index}", case.load())
        (fold / "weights").mkdir(parents=True)
        for stage in ("proposer", "refiner"):
            (fold / "weights" / f"{stage}.pt").symlink_to(bundled_weights(stage))
    done = subprocess.run([sys.executable, str(SCRIPT), "--folds", str(folds)], capture_output=True, text=True,
                          check=True, timeout=600)

    header = re.search(r"^phantom: (\d+) cases", done.stdout, re.MULTILINE)
    assert header is not None, done.stdout
    assert header.group(1) == "2", "both folds' cases pooled in one group"
    for name in ("networks (within the reach)", "registration", "tapered copy", "the vote (the result)"):
        assert re.search(rf"^  {re.escape(name)} +empty [0-9.]+ +Dice [0-9.]+", done.stdout, re.MULTILINE), name
    ceilings = re.search(r"3D Dice: the result ([0-9.]+); the truth on the result's slices ([0-9.]+); per slice the "
                         r"best of the result, its opinions and nothing ([0-9.]+)", done.stdout)
    assert ceilings is not None, done.stdout
    result, extent, best = map(float, ceilings.groups())
    assert 0.5 < result <= best and result <= extent <= 1.0
