"""The ``gastric-propagate segment`` contract on files, run as a user would run it."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from gastric_propagate.data.annotation import annotation_from_label
from gastric_propagate.data.mask_boxes import Grid, on_grid, write_box
from gastric_propagate.cli import main
from gastric_propagate.metrics import dice
from gastric_propagate.synthetic.phantom import HELD_OUT_SEED_START, make_phantom


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A held-out oblique phantom on disk: CT, one-slice annotation, truth."""
    folder = tmp_path_factory.mktemp("case")
    phantom = make_phantom(HELD_OUT_SEED_START + 3, size_xy=192, oblique=True, tumour_diameter_mm=35.0)
    image, truth = phantom.arrays()
    paths = {"ct": folder / "ct.nrrd", "annotation": folder / "annotation.nii.gz", "truth": truth}
    sitk.WriteImage(phantom.image, str(paths["ct"]))
    write_like(annotation_from_label(truth), phantom.image, paths["annotation"])
    return paths


def write_like(array, reference, path):
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.CopyInformation(reference)
    sitk.WriteImage(image, str(path))
    return path


def segment(case, output, *extra):
    return main(["segment", "--image", str(case["ct"]), "--annotation", str(case["annotation"]),
                 "--output", str(output), "--device", "cpu", *extra])


def test_segment_writes_a_label_on_the_ct_grid_and_a_report(case, tmp_path, bundled_segmenter):
    output, report = tmp_path / "out.nii.gz", tmp_path / "report.json"
    assert segment(case, output, "--report", str(report)) == 0
    ct, result = sitk.ReadImage(str(case["ct"])), sitk.ReadImage(str(output))
    assert result.GetPixelID() == sitk.sitkUInt8
    assert result.GetSize() == ct.GetSize()
    assert np.allclose(result.GetSpacing(), ct.GetSpacing()) and np.allclose(result.GetOrigin(), ct.GetOrigin())
    assert np.allclose(result.GetDirection(), ct.GetDirection()) and ct.GetDirection() != (1, 0, 0, 0, 1, 0, 0, 0, 1)
    mask = sitk.GetArrayFromImage(result)
    assert set(np.unique(mask)) == {0, 1}
    assert dice(mask, case["truth"]) > 0.8
    data = json.loads(report.read_text())
    for key in ("volume_ml", "slices", "seconds", "device", "slice_confidence", "manual_estimate_seconds", "advice"):
        assert key in data
    assert data["device"] == "cpu" and data["volume_ml"] > 0
    assert data["manual_estimate_seconds"] == {"full_outline": 420, "one_slice": 40}
    assert len(data["slice_confidence"]) >= data["slices"]["count"]


def test_the_report_records_the_run_s_options_and_only_the_networks_that_ran(case, tmp_path, bundled_segmenter):
    report = tmp_path / "report.json"
    assert segment(case, tmp_path / "out.nrrd", "--report", str(report), "--no-refiner", "--max-distance-mm",
                   "20") == 0
    data = json.loads(report.read_text())
    assert data["options"]["use_refiner"] is False and data["options"]["max_distance_mm"] == 20.0
    assert data["options"]["keyframes"] is False and data["options"]["min_slice"] is None
    assert list(data["weights"]) == ["proposer"] and "refiner" not in data["timings_seconds"]
    assert segment(case, tmp_path / "full.nrrd", "--report", str(tmp_path / "full.json")) == 0
    full = json.loads((tmp_path / "full.json").read_text())
    assert full["options"]["use_refiner"] is True and list(full["weights"]) == ["proposer", "refiner"]


def test_a_painted_box_and_crop_output_give_the_whole_grids_tumour_on_an_oblique_ct(case, tmp_path,
                                                                                     bundled_segmenter):
    """The annotation may cover part of the CT's grid and the output may be the tumour's box (how the module sends
    them): the same voxels in physical space, on a CT whose axes are not the scanner's."""
    ct = sitk.ReadImage(str(case["ct"]))
    box = tmp_path / "painted-box.nii.gz"
    write_box(sitk.GetArrayFromImage(sitk.ReadImage(str(case["annotation"]))), Grid.of(ct), box)
    assert segment(dict(case, annotation=box), tmp_path / "box.nrrd", "--crop-output") == 0
    assert segment(case, tmp_path / "whole.nrrd") == 0
    whole = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "whole.nrrd")))
    cropped = sitk.ReadImage(str(tmp_path / "box.nrrd"))
    assert all(np.less(cropped.GetSize(), ct.GetSize())) and whole.any()
    assert np.array_equal(on_grid(cropped, Grid.of(ct)), whole)
    resampled = sitk.Resample(cropped, ct, sitk.Transform(), sitk.sitkNearestNeighbor)  # ITK places it the same
    assert np.array_equal(sitk.GetArrayFromImage(resampled), whole)


def test_progress_lines_cover_every_stage_in_order(case, tmp_path, capsys, bundled_segmenter):
    assert segment(case, tmp_path / "out.nrrd", "--progress") == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("PROGRESS ")]
    events = [(stage.split("=")[1], int(done.split("=")[1]), int(total.split("=")[1]))
              for _, stage, done, total in lines]
    stages = [name for name, _, _ in events]
    assert [name for i, name in enumerate(stages) if i == 0 or stages[i - 1] != name] == \
        ["load", "read", "proposer", "refiner", "write"]
    proposer = [(done, total) for name, done, total in events if name == "proposer"]
    assert len(proposer) >= 2 and proposer[-1][0] == proposer[-1][1]
    assert all(0 <= done <= total for done, total in proposer)
    assert events[-1] == ("write", 1, 1)


def test_existing_output_is_refused_unless_overwrite(case, tmp_path, capsys, bundled_segmenter):
    output = tmp_path / "out.nrrd"
    output.write_bytes(b"the user's earlier result")
    assert segment(case, output) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert output.read_bytes() == b"the user's earlier result"
    assert segment(case, output, "--overwrite") == 0
    assert sitk.ReadImage(str(output)).GetSize() == sitk.ReadImage(str(case["ct"])).GetSize()


def bad(case, tmp_path, capsys, *, image=None, annotation=None, extra=()):
    paths = dict(case)
    paths.update({k: v for k, v in (("ct", image), ("annotation", annotation)) if v is not None})
    output = tmp_path / "out.nrrd"
    code = segment(paths, output, *extra)
    assert not output.exists() and not list(tmp_path.glob(".partial*")), "nothing half-written"
    return code, capsys.readouterr().err


def test_two_painted_slices(case, tmp_path, capsys):
    ct = sitk.ReadImage(str(case["ct"]))
    annotation = annotation_from_label(case["truth"])
    k = int(np.flatnonzero(annotation.any(axis=(1, 2)))[0])
    annotation[k + 2] = case["truth"][k + 2]
    code, err = bad(case, tmp_path, capsys, annotation=write_like(annotation, ct, tmp_path / "two.nrrd"))
    assert code == 2 and f"{k}, {k + 2}" in err and "--keyframes" in err


def test_empty_annotation(case, tmp_path, capsys):
    ct = sitk.ReadImage(str(case["ct"]))
    code, err = bad(case, tmp_path, capsys,
                    annotation=write_like(np.zeros(case["truth"].shape), ct, tmp_path / "empty.nrrd"))
    assert code == 2 and "empty" in err


def test_annotation_on_another_grid(case, tmp_path, capsys):
    ct = sitk.ReadImage(str(case["ct"]))
    shifted = sitk.GetImageFromArray(annotation_from_label(case["truth"]))
    shifted.CopyInformation(ct)
    shifted.SetOrigin(tuple(o + 5.0 for o in ct.GetOrigin()))
    sitk.WriteImage(shifted, str(tmp_path / "shifted.nrrd"))
    code, err = bad(case, tmp_path, capsys, annotation=tmp_path / "shifted.nrrd")
    assert code == 2 and "origin" in err and "reference" in err


def test_two_dimensional_image(case, tmp_path, capsys):
    slice_path = tmp_path / "slice.nrrd"
    sitk.WriteImage(sitk.ReadImage(str(case["ct"]))[:, :, 10], str(slice_path))
    code, err = bad(case, tmp_path, capsys, image=slice_path)
    assert code == 2 and "2D" in err


def test_not_a_ct(case, tmp_path, capsys):
    ct = sitk.ReadImage(str(case["ct"]))
    normalised = sitk.RescaleIntensity(sitk.Cast(ct, sitk.sitkFloat32), 0.0, 1.0)
    sitk.WriteImage(normalised, str(tmp_path / "mr.nrrd"))
    code, err = bad(case, tmp_path, capsys, image=tmp_path / "mr.nrrd")
    assert code == 2 and "Hounsfield" in err


def test_wrong_file(case, tmp_path, capsys):
    text = tmp_path / "notes.nrrd"
    text.write_text("this is not an image")
    code, err = bad(case, tmp_path, capsys, image=text)
    assert code == 2 and "cannot be read" in err
    code, err = bad(case, tmp_path, capsys, image=tmp_path / "missing.nrrd")
    assert code == 2 and "does not exist" in err


def test_missing_and_corrupt_weights(case, tmp_path, capsys):
    code, err = bad(case, tmp_path, capsys, extra=("--proposer", str(tmp_path / "none.pt")))
    assert code == 3 and "does not exist" in err
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 truncated")
    code, err = bad(case, tmp_path, capsys, extra=("--refiner", str(corrupt)))
    assert code == 3 and "corrupt" in err


def test_console_script_is_installed():
    completed = subprocess.run([sys.executable, "-m", "gastric_propagate.cli", "--version"], capture_output=True,
                               text=True, check=True)
    assert completed.stdout.startswith("gastric-propagate ")


def test_the_command_ends_at_once_with_everything_written_flushed_and_its_code(case, tmp_path):
    """``run`` skips the interpreter's tear-down: what the child wrote, printed and exits with must all be there."""
    command = [sys.executable, "-m", "gastric_propagate.cli", "segment", "--image", str(case["ct"]), "--annotation",
               str(case["annotation"]), "--device", "cpu", "--progress"]
    buffered = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}  # as a pipe is
    done = subprocess.run([*command, "--output", str(tmp_path / "out.nrrd"), "--report", str(tmp_path / "r.json")],
                          capture_output=True, text=True, timeout=300, env=buffered)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1].startswith("tumour: ") and "whole run" in lines[-1], "the summary line was flushed"
    assert lines[-2] == "PROGRESS stage=write done=1 total=1"
    report = json.loads((tmp_path / "r.json").read_text())
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out.nrrd")))
    assert report["voxels"] == int(np.count_nonzero(written)) > 0
    refused = subprocess.run([*command, "--output", str(tmp_path / "out.png")], capture_output=True, text=True,
                             timeout=300, env=buffered)
    assert refused.returncode == 2 and "error: " in refused.stderr, refused.stderr


def test_huge_volume_is_refused_from_its_header(case, tmp_path, capsys, monkeypatch):
    import gastric_propagate.data.volumes as volumes

    monkeypatch.setattr(volumes, "MAX_VOXELS", 1000)
    read = []
    monkeypatch.setattr(volumes.sitk.ImageFileReader, "Execute", lambda self: read.append(1))
    code, err = bad(case, tmp_path, capsys)
    assert code == 2 and "Crop Volume" in err and not read, "refused before any voxel was read"


def test_first_use_help_texts_say_what_each_option_is_and_its_default():  # issue 26: first use
    import argparse

    from gastric_propagate.cli import build_parser
    from gastric_propagate.evaluation.annotations import VARIANTS
    from gastric_propagate.evaluation.evaluate import ALL_METHODS

    parser = build_parser()
    assert "``" not in parser.description and "gastric-propagate command line" in parser.description
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction)).choices
    with_default = {"train": ("--proposer-steps", "--refiner-steps", "--batch-size", "--seed", "--device"),
                    "make-phantoms": ("--count",), "demo": ("--out",)}
    def help_of(command, option):
        action = next(action for action in commands[command]._actions if option in action.option_strings)
        return commands[command]._get_formatter()._expand_help(action) if action.help else ""

    for command, options in with_default.items():
        for option in options:
            default = commands[command].get_default(option.lstrip("-").replace("-", "_"))
            assert f"default: {default})" in help_of(command, option), (command, option)
    assert help_of("evaluate", "--out") and help_of("make-phantoms", "--out")
    evaluate_help = " ".join(commands["evaluate"].format_help().split())
    assert all(f"{name}," in evaluate_help or f"{name} (default: all)" in evaluate_help
               for name in (*ALL_METHODS, *VARIANTS)), evaluate_help


def test_segment_says_the_engines_time_and_the_whole_runs(tmp_path, capsys, monkeypatch, oracle_segmenter):
    from conftest import SPACING, make_volume
    import gastric_propagate.cli as cli

    monkeypatch.setattr(cli, "_segmenter", lambda args: oracle_segmenter)
    image, label = make_volume(depth=16, size=64, centre_z=8, radius_mm=10.0)
    ct = sitk.GetImageFromArray(image)
    ct.SetSpacing(SPACING)
    sitk.WriteImage(ct, str(tmp_path / "ct.nrrd"))
    write_like(annotation_from_label(label), ct, tmp_path / "annotation.nrrd")
    assert main(["segment", "--image", str(tmp_path / "ct.nrrd"), "--annotation", str(tmp_path / "annotation.nrrd"),
                 "--output", str(tmp_path / "out.nrrd")]) == 0
    printed = capsys.readouterr().out
    engine, whole = map(float, re.search(r"\(engine ([\d.]+) s on cpu, whole run ([\d.]+) s\) -> ", printed).groups())
    assert 0 < engine <= whole, printed


def test_evaluate_names_the_files_it_wrote(tmp_path, capsys):  # issue 26: "says it wrote 3 files and writes 5"
    from conftest import write_cases_folder

    write_cases_folder(tmp_path / "cases", 2)
    out = tmp_path / "report"
    assert main(["evaluate", "--data", str(tmp_path / "cases"), "--out", str(out), "--methods", "copy_slice",
                 "--variants", "largest"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    written = {path.name for path in out.iterdir()}
    assert line.startswith("wrote ") and line.endswith(f" to {out}"), line
    assert set(line[len("wrote "):-len(f" to {out}")].split(", ")) == written
    assert {"results.csv", "summary.md", "figure.png"} <= written


def test_an_annotation_of_several_labels_is_refused_unless_one_is_chosen(case, tmp_path, capsys, bundled_segmenter):
    ct = sitk.ReadImage(str(case["ct"]))
    annotation = annotation_from_label(case["truth"]).astype(np.uint8)
    k = int(np.flatnonzero(annotation.any(axis=(1, 2)))[0])
    annotation[k - 3:k + 4, 5:15, 5:15] = 2  # a second structure over several slices, beside the painted tumour
    path = write_like(annotation, ct, tmp_path / "labels.nrrd")
    code, err = bad(case, tmp_path, capsys, annotation=path)
    assert code == 2 and "2 label values" in err and f"1 on slice(s) {k};" in err and "--label N" in err
    code, err = bad(case, tmp_path, capsys, annotation=path, extra=("--label", "3"))
    assert code == 2 and "no voxel of label 3" in err and "1, 2" in err
    output = tmp_path / "chosen.nrrd"
    assert segment({**case, "annotation": path}, output, "--label", "1") == 0
    alone = tmp_path / "alone.nrrd"
    assert segment(case, alone) == 0  # label 1 alone gives the result of the tumour's annotation alone
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(output))),
                                  sitk.GetArrayFromImage(sitk.ReadImage(str(alone))))


def test_a_ct_of_sagittal_or_coronal_slices_is_propagated_along_its_own_slices_and_said_so(case, tmp_path, capsys,
                                                                                          bundled_segmenter):
    """The Slicer module lets a reader paint in the slice view aligned with the volume's own slices; the result comes
    with advice naming the orientation and how to reorient, never silently."""
    ct = sitk.ReadImage(str(case["ct"]))
    for columns, said in (((2, 1, 0), "sagittal"), ((0, 2, 1), "coronal"), ((0, 1, 2), None)):
        turned = sitk.Image(ct)
        turned.SetDirection(tuple(np.eye(3)[:, columns].flatten()))
        sitk.WriteImage(turned, str(tmp_path / "turned.nrrd"))
        annotation = write_like(annotation_from_label(case["truth"]), turned, tmp_path / "turned_annotation.nrrd")
        report = tmp_path / "report.json"
        code = segment({**case, "ct": tmp_path / "turned.nrrd", "annotation": annotation}, tmp_path / "out.nrrd",
                       "--overwrite", "--report", str(report))
        out = capsys.readouterr().out
        advice = [item for item in json.loads(report.read_text())["advice"] if item["kind"] == "not_axial"]
        assert code == 0
        if said is None:
            assert advice == [] and "not axial" not in out
        else:
            assert [item["orientation"] for item in advice] == [said]
            assert f"note: This volume's slices are {said}, not axial" in out and "Orient Scalar Volume" in out


def test_a_single_image_of_a_series_is_said_to_be_one_slice(case, tmp_path, capsys):
    ct = sitk.ReadImage(str(case["ct"]))
    single = sitk.JoinSeries(ct[:, :, 10])  # one DICOM image read as a volume: 3D, one slice
    single.SetSpacing(ct.GetSpacing())
    sitk.WriteImage(single, str(tmp_path / "one.nrrd"))
    code, err = bad(case, tmp_path, capsys, image=tmp_path / "one.nrrd")
    assert code == 2 and "1 axial slice(s)" in err and "whole CT series" in err and "grid" not in err


def test_paths_that_are_not_text_are_refused_before_itk_sees_them(case, tmp_path, capsys):
    name = os.fsdecode(b"ct_\xe9.nrrd")  # a Latin-1 name on a UTF-8 system: ITK aborts the process on it
    code, err = bad(case, tmp_path, capsys, image=tmp_path / name)
    assert code == 2 and "not valid text" in err
    output = tmp_path / os.fsdecode(b"out_\xe9.nrrd")
    assert segment(case, output) == 2 and "not valid text" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_an_output_path_back_out_of_a_missing_folder_is_refused_before_the_run(case, tmp_path, capsys):
    assert segment(case, tmp_path / "missing" / ".." / "out.nrrd") == 2
    assert "'..'" in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_a_second_region_on_the_painted_slice_is_reported(case, tmp_path, capsys, bundled_segmenter):
    ct = sitk.ReadImage(str(case["ct"]))
    annotation = annotation_from_label(case["truth"]).astype(np.uint8)
    k = int(np.flatnonzero(annotation.any(axis=(1, 2)))[0])
    annotation[k, 10:14, 10:14] = 1  # a stray stroke far from the tumour
    report = tmp_path / "report.json"
    assert segment({**case, "annotation": write_like(annotation, ct, tmp_path / "two.nrrd")}, tmp_path / "o.nrrd",
                   "--report", str(report)) == 0
    advice = [item for item in json.loads(report.read_text())["advice"] if item["kind"] == "separate_regions"]
    assert len(advice) == 1 and advice[0]["painted_slice"] == k and advice[0]["regions"] == 2
    assert "separate regions" in capsys.readouterr().out


@pytest.mark.parametrize("width, noted", [(2, True), (None, False)])
def test_an_outline_painted_but_not_filled_is_noted_and_a_small_hole_is_not(case, tmp_path, capsys,
                                                                           bundled_segmenter, width, noted):
    """A ring (Paint drawn round the edge) went through with confidence 1.0 and no word: the result was a ring."""
    from scipy import ndimage

    ct = sitk.ReadImage(str(case["ct"]))
    annotation = annotation_from_label(case["truth"]).astype(np.uint8)
    k = int(np.flatnonzero(annotation.any(axis=(1, 2)))[0])
    region = annotation[k] > 0
    if width is not None:
        annotation[k] = region & ~ndimage.binary_erosion(region, iterations=width)
    else:  # a filled cross-section with a small hole in it (a drawing's detail)
        centre = np.argwhere(region).mean(axis=0).astype(int)
        annotation[k, centre[0], centre[1]] = 0
    report = tmp_path / "report.json"
    assert segment({**case, "annotation": write_like(annotation, ct, tmp_path / "a.nrrd")}, tmp_path / "o.nrrd",
                   "--report", str(report)) == 0
    advice = [item for item in json.loads(report.read_text())["advice"] if item["kind"] == "unfilled_outline"]
    assert len(advice) == int(noted)
    if noted:
        assert advice[0]["painted_slice"] == k and advice[0]["enclosed_mm2"] > advice[0]["painted_mm2"]
        assert "propagated as a ring" in capsys.readouterr().out


def test_a_result_that_runs_into_the_scan_s_end_is_noted_on_that_side(case, tmp_path, capsys, bundled_segmenter):
    """A CT cut through the tumour: the result reached the volume's first and last slices and nothing was said."""
    ct = sitk.ReadImage(str(case["ct"]))
    annotation = sitk.GetArrayFromImage(sitk.ReadImage(str(case["annotation"])))
    k = int(np.flatnonzero(annotation.any(axis=(1, 2)))[0])
    tumour = np.flatnonzero(case["truth"].any(axis=(1, 2)))
    low, high = k - 2, min(k + 3, int(tumour[-1]) - 1)  # inside the tumour on both sides
    assert tumour[0] < low and high < tumour[-1]
    cut = {**case, "ct": tmp_path / "cut.nrrd", "annotation": tmp_path / "cut_annotation.nrrd"}
    sitk.WriteImage(ct[:, :, low:high + 1], str(cut["ct"]))
    write_like(annotation[low:high + 1], ct[:, :, low:high + 1], cut["annotation"])
    report = tmp_path / "report.json"
    assert segment(cut, tmp_path / "o.nrrd", "--report", str(report)) == 0
    advice = [item for item in json.loads(report.read_text())["advice"] if item["kind"] == "result_at_volume_edge"]
    assert [(item["slice"], item["edge"]) for item in advice] == [(0, "first"), (high - low, "last")]
    assert all(0.3 <= item["share"] for item in advice)
    assert "reaches the first slice of the volume (0)" in capsys.readouterr().out


def test_a_signal_as_the_outputs_are_put_in_place_says_they_are_complete(case, tmp_path, capsys, monkeypatch,
                                                                         bundled_segmenter):
    import signal

    from gastric_propagate.data import outputs

    replace, link = outputs.os.replace, outputs.os.link

    def then_interrupt(put):
        def put_then_signal(source, destination):
            put(source, destination)
            signal.raise_signal(signal.SIGINT)  # held during the renames, delivered after them
        return put_then_signal

    monkeypatch.setattr(outputs.os, "replace", then_interrupt(replace))
    monkeypatch.setattr(outputs.os, "link", then_interrupt(link))
    monkeypatch.setattr(outputs, "COMMITTED", [])
    # Python's own SIGINT handler, as in a terminal: a shell's background job starts with SIGINT ignored.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    output = tmp_path / "out.nrrd"
    try:
        code = segment(case, output)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert code == 130
    err = capsys.readouterr().err
    assert output.is_file() and f"{output} is complete" in err and "the run had finished" in err


def test_a_weights_folder_is_named_as_one_and_own_weights_are_not_told_to_reinstall(case, tmp_path, capsys):
    (tmp_path / "my-weights").mkdir()
    code, err = bad(case, tmp_path, capsys, extra=("--proposer", str(tmp_path / "my-weights"), "--backend", "torch"))
    assert code == 3 and "is a folder" in err and str(tmp_path / "my-weights" / "proposer.pt") in err
    code, err = bad(case, tmp_path, capsys, extra=("--refiner", str(tmp_path / "none.pt"), "--backend", "torch"))
    assert code == 3 and "does not exist" in err and "Reinstall" not in err and "refiner.pt" in err
    assert "mix of two trainings" not in err, "a run that cannot start mixes nothing: its error stands alone"


def test_a_cancel_never_names_what_an_earlier_command_of_the_same_process_wrote(case, tmp_path, capsys, monkeypatch,
                                                                                 bundled_segmenter):
    from gastric_propagate.errors import Cancelled
    from gastric_propagate.inference.pipeline import Segmenter

    assert segment(case, tmp_path / "first.nrrd") == 0

    def cancelled(*args, **kwargs):
        raise Cancelled("Propagation was cancelled; nothing was written.")

    monkeypatch.setattr(Segmenter, "segment", cancelled)
    capsys.readouterr()
    assert segment(case, tmp_path / "second.nrrd") == 130
    err = capsys.readouterr().err
    assert "no output was half-written" in err and "first.nrrd" not in err
    assert not (tmp_path / "second.nrrd").exists()
