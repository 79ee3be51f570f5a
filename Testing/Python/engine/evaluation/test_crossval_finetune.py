"""scripts/crossval_finetune.py: its folds keep each patient's cases on one side."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from conftest import load_script


def _script():
    return load_script("crossval_finetune")


def _pairs(names):
    return [(name, Path(f"{name}_image.nrrd"), Path(f"{name}_label.nrrd")) for name in names]


def test_a_patient_s_nodules_all_fall_in_one_fold_and_every_case_in_exactly_one():
    names = [f"lidc_{patient:04d}_n{lesion}" for patient in range(9) for lesion in range(1, 1 + patient % 3 + 1)]
    names += [f"ibsi_sts_{i:03d}" for i in range(5)]
    for seed in range(5):
        folds = _script().folds_by_patient(_pairs(names), 3, seed)
        held = [sorted(name for name, _, _ in fold) for fold in folds]
        assert sorted(name for fold in held for name in fold) == sorted(names), "each case in exactly one fold"
        for fold, others in ((k, [n for j in range(3) if j != k for n in held[j]]) for k in range(3)):
            patients = {name.rsplit("_n", 1)[0] for name in held[fold] if name.startswith("lidc")}
            assert not any(name.rsplit("_n", 1)[0] in patients for name in others if name.startswith("lidc"))
        assert all(any(name.startswith("ibsi") for name in fold) for fold in held), "each group dealt over the folds"


def test_with_one_case_per_patient_the_folds_are_those_of_the_cases_order():
    """The folds of runs made before the split went by patient (one case per patient) stay the same."""
    import numpy as np

    names = [f"lidc_{i:04d}_n1" for i in range(10)]
    folds = _script().folds_by_patient(_pairs(names), 3, 0)
    expected: list[list[str]] = [[], [], []]
    for i, index in enumerate(np.random.default_rng(0).permutation(10)):
        expected[i % 3].append(names[index])
    assert [[name for name, _, _ in fold] for fold in folds] == expected


def test_a_recipe_folder_holding_a_patient_of_the_data_is_refused(tmp_path):
    """The recipe's own --data (after --) trains every fold: another nodule of a cross-validated patient there is a
    leak; a folder of other patients is not."""
    script = _script()
    data = _pairs(["lidc_0001_n1", "lidc_0002_n1", "ibsi_sts_001"])
    for folder, names in (("leaky", ["lidc_0001_n2", "lidc_0009_n1"]), ("clean", ["lidc_0009_n1", "ibsi_sts_002"])):
        (tmp_path / folder).mkdir()
        for name in names:
            for part in ("image", "label"):
                (tmp_path / folder / f"{name}_{part}.nrrd").write_bytes(b"")
    parser = argparse.ArgumentParser()
    script._refuse_recipe_data_that_holds(["--data", str(tmp_path / "clean"), "--phantoms", "5"], data, parser)
    leaky = str(tmp_path / "leaky")
    for recipe in (["--data", leaky], [f"--data={leaky}"], ["--da", leaky], [f"--dat={leaky}"]):
        with pytest.raises(SystemExit):
            script._refuse_recipe_data_that_holds(recipe, data, parser)


def test_a_recipes_label_value_also_scores_the_folds():
    """--label N in the recipe trains on value N of the labels; the folds' evaluations must read the same value."""
    script = _script()
    assert script._label_options(["--phantoms", "5", "--label", "2"]) == ["--label", "2"]
    assert script._label_options(["--label=3", "--mix", "a=1"]) == ["--label", "3"]
    assert script._label_options(["--phantoms", "5"]) == []
    assert script._label_options(["--lab", "2"]) == script._label_options(["--labe=2"]) == ["--label", "2"]


def test_reuse_weights_scores_the_folds_again_over_an_earlier_runs_scores(tmp_path):
    """--reuse-weights is for an engine change: the folds' earlier scores are there, and are replaced (it stopped
    on "already exists" until stop 50)."""
    import shutil
    import subprocess
    import sys

    from conftest import SCRIPTS, write_cases_folder
    from gastric_propagate.inference.checkpoints import bundled_weights

    data = write_cases_folder(tmp_path / "data", 3)
    for path in data.iterdir():  # one group of three patients (case_0, ...): one case a fold
        path.rename(data / path.name.replace("case", "case_"))
    out = tmp_path / "cv"
    for fold in range(3):
        (out / f"fold{fold}" / "weights").mkdir(parents=True)
        for stage in ("proposer", "refiner"):  # the .pt files alone: evaluate runs them under PyTorch
            shutil.copy(bundled_weights(stage), out / f"fold{fold}" / "weights")
        (out / f"fold{fold}" / "eval-tuned").mkdir()
        (out / f"fold{fold}" / "eval-tuned" / "results.csv").write_text("an earlier run's scores\n")
    run = subprocess.run([sys.executable, str(SCRIPTS / "crossval_finetune.py"), "--data", str(data), "--out", str(out),
                          "--reuse-weights"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "fine-tuned on the other folds, the vote" in run.stdout
    for fold in range(3):
        assert (out / f"fold{fold}" / "eval-tuned" / "results.csv").read_text().startswith("case,")


def test_names_of_no_group_are_dealt_over_every_fold_not_each_into_the_first():
    """"anna_n1", "carl", ...: each was a group of its own, each dealt from fold 0: all in fold 0, the others empty."""
    names = ["anna_n1", "anna_n2", "carl", "dora", "emil", "fred", "gus"]
    folds = _script().folds_by_patient(_pairs(names), 3, 0)
    held = [sorted(name for name, _, _ in fold) for fold in folds]
    assert all(held), held
    assert sorted(name for fold in held for name in fold) == sorted(names)
    assert any({"anna_n1", "anna_n2"} <= set(fold) for fold in held), "a patient's cases stay together"


def _cases_and_folds(tmp_path):
    from conftest import write_cases_folder

    data = write_cases_folder(tmp_path / "data", 3)
    for path in data.iterdir():  # one group of three patients (case_0, ...): one case a fold
        path.rename(data / path.name.replace("case", "case_"))
    return data, tmp_path / "cv"


def test_an_init_in_the_recipe_is_refused_it_would_replace_the_checked_one(tmp_path):
    import subprocess
    import sys

    from conftest import SCRIPTS

    data, out = _cases_and_folds(tmp_path)
    run = subprocess.run([sys.executable, str(SCRIPTS / "crossval_finetune.py"), "--data", str(data), "--out", str(out),
                          "--", "--phantoms", "1", "--init", "bundled"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "give --init before '--'" in run.stderr, run.stderr[-2000:]
    assert not out.exists()


def test_reused_fold_weights_that_learned_the_folds_own_case_are_refused(tmp_path):
    """Swapped or copied fold weights: the evaluation only warned, and the report said "never saw it"."""
    import subprocess
    import sys

    import torch

    from conftest import SCRIPTS
    from gastric_propagate.inference.checkpoints import INPUT_CHANNELS, save_checkpoint
    from gastric_propagate.inference.networks import UNet2D
    from gastric_propagate.inference.preprocessing import Preprocessing

    data, out = _cases_and_folds(tmp_path)
    names = sorted(path.name.rsplit("_", 1)[0] for path in data.glob("*_image.*"))
    torch.manual_seed(0)
    for fold in range(3):
        for stage, channels in INPUT_CHANNELS.items():  # every fold's weights learned every case
            save_checkpoint(out / f"fold{fold}" / "weights" / f"{stage}.pt", stage=stage,
                            network=UNet2D(in_channels=channels, base_channels=4, depth=2),
                            preprocessing=Preprocessing(), training={"case_names": names})
    run = subprocess.run([sys.executable, str(SCRIPTS / "crossval_finetune.py"), "--data", str(data), "--out", str(out),
                          "--reuse-weights"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr[-2000:]
    assert f"the weights in {out / 'fold0' / 'weights'} (proposer) learned 1 case(s) this fold holds out" in run.stderr
    assert not (out / "fold0" / "eval-tuned").exists(), "refused before any evaluation"


def test_more_folds_than_a_groups_patients_is_refused_before_any_training(tmp_path):
    """Two groups of two patients dealt over 3 folds: fold 2 would hold out nothing, train on every case and end the
    run with an evaluation of an empty folder, after the other folds' training."""
    import subprocess
    import sys

    from conftest import SCRIPTS, write_cases_folder

    data = write_cases_folder(tmp_path / "data", 4)
    for i, path in enumerate(sorted(data.iterdir())):
        path.rename(data / path.name.replace("case", "lidc_000" if "case0" in path.name or "case1" in path.name
                                             else "sts_00"))
    out = tmp_path / "cv"
    run = subprocess.run([sys.executable, str(SCRIPTS / "crossval_finetune.py"), "--data", str(data), "--out", str(out),
                          "--folds", "3"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "would hold out no case" in run.stderr and "--folds 2 or fewer" in run.stderr, (
        run.stderr[-2000:])
    assert not out.exists()


def test_a_failed_case_is_said_and_left_out_of_the_means(tmp_path, capsys):
    results = tmp_path / "results.csv"
    results.write_text("case,variant,method,dice,error\nsts_001,largest,engine,0.8,\n"
                       "sts_002,largest,engine,nan,a method's error\nsts_003,largest,engine,,no label\n")
    scores = _script()._scores(results)
    assert scores["engine"] == {"sts_001": 0.8}
    said = capsys.readouterr().out
    assert "engine failed on sts_002 (a method's error)" in said and "engine failed on sts_003 (no label)" in said
    assert _script()._mean([]) == "-" and _script()._mean([0.8, 0.6]) == "0.700"


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_patients_cases_stay_together_when_one_name_has_a_group_of_its_own(seed, tmp_path):
    """"abc" and "abc_n1" are patient abc; "abc_001" ... are other patients of group "abc". Grouped by the case's own
    name, "abc_n1" was a group of one, dealt apart from "abc"."""
    import subprocess
    import sys

    from conftest import SCRIPTS

    names = ["abc", "abc_n1"] + [f"abc_00{i}" for i in range(1, 8)]
    folds = _script().folds_by_patient(_pairs(names), 3, seed)
    assert [k for k, fold in enumerate(folds) for name, _, _ in fold if name in ("abc", "abc_n1")] in ([0, 0], [1, 1],
                                                                                                       [2, 2])
    data = tmp_path / "data"
    data.mkdir()
    for name in names:
        for part in ("image", "label"):
            (data / f"{name}_{part}.nrrd").write_bytes(b"")
    out = tmp_path / "split"
    run = subprocess.run([sys.executable, str(SCRIPTS / "split_by_patient.py"), "--data", str(data), "--out", str(out),
                          "--seed", str(seed)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    sides = {side: {p.name for p in (out / side).iterdir()} for side in ("train", "validation")}
    both = [side for side, files in sides.items() if {"abc_image.nrrd", "abc_n1_image.nrrd"} & files]
    assert len(both) == 1 and {"abc_image.nrrd", "abc_n1_image.nrrd"} <= sides[both[0]], sides
