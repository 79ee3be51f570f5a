"""The README's first command ends in the demo: it must segment the built-in example well and say so, and running it
again must work, without ever replacing a file the user put in its folder."""

import json

import pytest

import gastric_propagate.cli as cli
from gastric_propagate.demo import MANIFEST, run_demo

DEMO_FILES = {"ct.nrrd", "truth.nrrd", "annotation.nrrd", "result.nrrd", "report.json", MANIFEST}


def test_demo_prints_volume_dice_and_time_beside_manual_estimates(tmp_path, capsys, bundled_segmenter):
    report = run_demo(tmp_path, segmenter=bundled_segmenter)
    printed = capsys.readouterr().out
    assert "mL" in printed and "Dice vs truth" in printed and "7 min" in printed and "40 s" in printed
    assert report["dice_vs_truth"] > 0.8  # 0.860 with the shipped weights (RB, stop 50); a broken pipeline: far less
    assert {p.name for p in tmp_path.iterdir()} == DEMO_FILES
    written = json.loads((tmp_path / "report.json").read_text())
    assert written["volume_ml"] == report["volume_ml"]
    assert written["consensus"] is True and "consensus" in written["timings_seconds"]
    assert written["options"]["use_refiner"] is True and written["options"]["keyframes"] is False
    assert written["output"] == str(tmp_path / "result.nrrd") and written["painted_slices"] == report["painted_slices"]
    again = run_demo(tmp_path, segmenter=bundled_segmenter)  # running it again replaces its own earlier output
    assert again["dice_vs_truth"] == report["dice_vs_truth"]


@pytest.fixture
def demo(tmp_path, capsys, monkeypatch, oracle_segmenter):
    """Runs ``gastric-propagate demo --out <tmp>/demo-output [extra]`` with the fast networks of conftest.py;
    returns (exit code, stderr, the folder's files before and after)."""
    monkeypatch.setattr(cli, "_segmenter", lambda args: oracle_segmenter)
    out = tmp_path / "demo-output"

    def run(*extra):
        before = files(out)
        code = cli.main(["demo", "--out", str(out), *extra])
        err = capsys.readouterr().err
        assert "Traceback" not in err, err
        return code, err, before, files(out)

    run.out = out
    return run


def files(folder):
    return {path.name: path.read_bytes() for path in folder.iterdir()} if folder.is_dir() else {}


def test_the_readme_command_run_twice_replaces_the_earlier_demo_and_nothing_else(demo):
    assert demo()[0] == 0
    (demo.out / "my notes.txt").write_text("the user's file beside the demo's")
    code, err, before, after = demo("--seed", "3")  # another example: every file of the demo changes
    assert code == 0, err
    assert set(after) == DEMO_FILES | {"my notes.txt"} and after["my notes.txt"] == before["my notes.txt"]
    assert all(after[name] != before[name] for name in ("ct.nrrd", "truth.nrrd", MANIFEST)), "replaced"
    manifest = json.loads(after[MANIFEST])
    assert set(manifest["sha256"]) == DEMO_FILES - {MANIFEST}
    assert demo()[0] == 0, "and again"


@pytest.mark.parametrize("name, content", [
    ("ct.nrrd", b"the user's CT"), ("report.json", b"{}"), (MANIFEST, b"the user's file of that name"),
])
def test_the_demo_refuses_a_users_file_of_its_names_unless_overwrite(demo, name, content):
    demo.out.mkdir()
    (demo.out / name).write_bytes(content)
    code, err, before, after = demo()
    assert code == 2 and name in err and "earlier demo did not write" in err and "--overwrite" in err, err
    assert after == before
    code, err, before, after = demo("--overwrite")
    assert code == 0, err
    assert set(after) == DEMO_FILES and after[name] != content


@pytest.mark.parametrize("name", ["result.nrrd", "report.json", "annotation.nrrd"])
def test_a_demo_file_the_user_changed_since_is_kept(demo, name):
    """e.g. the result corrected in Slicer and saved over the demo's: the next demo refuses to replace it."""
    assert demo()[0] == 0
    (demo.out / name).write_bytes((demo.out / name).read_bytes() + b" ")
    code, err, before, after = demo()
    assert code == 2 and f"holds {name}, which an earlier demo did not write or which was changed since" in err, err
    assert after == before


def test_a_file_that_appears_during_the_demo_is_kept(demo, monkeypatch, oracle_segmenter):
    segment_alone = oracle_segmenter.segment

    def another_program_writes_the_ct(*args, **kwargs):
        (demo.out / "ct.nrrd").write_bytes(b"another program's")
        return segment_alone(*args, **kwargs)

    demo.out.mkdir()
    monkeypatch.setattr(oracle_segmenter, "segment", another_program_writes_the_ct)
    code, err, _, after = demo()
    assert code == 2 and "ct.nrrd exists now" in err, err
    assert after == {"ct.nrrd": b"another program's"}
