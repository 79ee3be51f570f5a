"""Bad input on the command line: exit 2 with what to do, no traceback, nothing half-written, no input lost.

The networks are the exactly known ones of conftest.py, so every run takes a fraction of a second.
"""

import csv
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import gastric_propagate.cli as cli
from conftest import SPACING, make_volume, write_cases_folder
from gastric_propagate.data.annotation import annotation_from_label
from gastric_propagate.inference.checkpoints import bundled_weights

ENGINE_TESTS = Path(__file__).parent
REAL_SEGMENTER = cli._segmenter


@pytest.fixture
def files(tmp_path):
    """A small CT at z = -1500 mm and its one-slice annotation, in their own folder."""
    image, label = make_volume(depth=16, size=64, centre_z=8, radius_mm=10.0)
    folder = tmp_path / "in"
    folder.mkdir()
    ct = sitk.GetImageFromArray(image)
    ct.SetSpacing(SPACING)
    ct.SetOrigin((-200.0, 150.0, -1500.0))
    paths = {"ct": folder / "ct.nrrd", "annotation": folder / "annotation.nrrd", "reference": ct, "label": label}
    sitk.WriteImage(ct, str(paths["ct"]))
    write_like(annotation_from_label(label), ct, paths["annotation"])
    return paths


@pytest.fixture(autouse=True)
def fast_networks(monkeypatch, oracle_segmenter):
    monkeypatch.setattr(cli, "_segmenter", lambda args: oracle_segmenter)
    return oracle_segmenter


def write_like(array, reference, path):
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    sitk.WriteImage(image, str(path))
    return path


def snapshot(folder: Path) -> dict:
    return {path: path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def segment(files, output, *extra, image=None, annotation=None):
    return cli.main(["segment", "--image", str(image or files["ct"]),
                     "--annotation", str(annotation or files["annotation"]), "--output", str(output), *extra])


def refused(files, tmp_path, capsys, output=None, *extra, message, **inputs):
    """Runs segment, expects exit 2 with ``message``, and checks that no file changed or appeared."""
    before = snapshot(tmp_path)
    code = segment(files, output or tmp_path / "out.nrrd", *extra, **inputs)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and message in err, err
    assert snapshot(tmp_path) == before, "nothing written, nothing changed"
    return err


def test_the_small_case_runs(files, tmp_path, capsys):
    assert segment(files, tmp_path / "out.nrrd", "--report", str(tmp_path / "report.json")) == 0
    written = sitk.ReadImage(str(tmp_path / "out.nrrd"))
    assert written.GetOrigin() == files["reference"].GetOrigin()
    assert json.loads((tmp_path / "report.json").read_text())["volume_ml"] > 0


@pytest.mark.parametrize("which", ["image", "annotation"])
def test_an_empty_path_is_said_to_be_empty_not_the_current_folder(files, tmp_path, capsys, which):
    paths = {"image": str(files["ct"]), "annotation": str(files["annotation"]), which: ""}
    code = cli.main(["segment", "--image", paths["image"], "--annotation", paths["annotation"], "--output",
                     str(tmp_path / "out.nrrd")])
    err = capsys.readouterr().err
    assert code == 2 and f"The {which} path is empty" in err and "folder" not in err, err


def test_inf_voxels(files, tmp_path, capsys):  # 1
    image = sitk.GetArrayFromImage(files["reference"]).astype(np.float32)
    image[0, 0, 0] = np.inf
    write_like(image, files["reference"], tmp_path / "in" / "inf.nrrd")
    refused(files, tmp_path, capsys, image=tmp_path / "in" / "inf.nrrd", message="1 Inf voxels")


def test_annotation_one_slice_off_at_a_large_origin(files, tmp_path, capsys):  # 2
    shifted = sitk.ReadImage(str(files["annotation"]))
    shifted.SetOrigin((-200.0, 150.0, -1500.0 + SPACING[2]))
    sitk.WriteImage(shifted, str(tmp_path / "in" / "shifted.nrrd"))
    refused(files, tmp_path, capsys, annotation=tmp_path / "in" / "shifted.nrrd", message="origin")


@pytest.mark.parametrize("shift, words", [(0.5, "between the voxels"), (15.0, "reaches outside")])
def test_annotation_box_off_the_cts_voxels(files, tmp_path, capsys, shift, words):
    """A label map that covers part of the CT is taken where it lies on the CT's voxels (test_worker.py), refused
    where it lies between them or reaches outside the CT."""
    painted = sitk.ReadImage(str(files["annotation"]))
    box = sitk.RegionOfInterest(painted, (40, 40, 1), (10, 10, 8))  # the middle of the painted slice
    box.SetOrigin(tuple(np.add(box.GetOrigin(), (0.0, 0.0, shift * SPACING[2]))))
    sitk.WriteImage(box, str(tmp_path / "in" / "box.nrrd"))
    refused(files, tmp_path, capsys, annotation=tmp_path / "in" / "box.nrrd", message=words)


@pytest.mark.parametrize("name", ["result.png", "result.tif", "result.vtk", "result.gipl", "result.nrrdnr",
                                  "result"])
def test_output_formats_that_cannot_hold_the_label(files, tmp_path, capsys, fast_networks, monkeypatch, name):  # 3 8 9
    monkeypatch.setattr(fast_networks, "segment", lambda *a, **k: pytest.fail("the run started"))
    refused(files, tmp_path, capsys, tmp_path / name, message="Use .nrrd")


@pytest.mark.parametrize("crop", [False, True])
@pytest.mark.parametrize("name", ["out.nii.gz", "out.hdr", "out.nrrd", "out.mha"])
def test_a_sheared_ct_is_written_only_where_its_grid_is_kept(files, tmp_path, capsys, name, crop):
    """A CT whose axes are not at right angles (a tilted gantry, kept unresampled): NIfTI and Analyze would store
    the nearest orthogonal direction (ITK only warns), putting the mask millimetres off; refused, nothing written.
    NRRD and MetaImage keep the grid exactly."""
    sheared = sitk.ReadImage(str(files["ct"]))
    sheared.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.2, 0.0, 0.0, 1.0))
    ct = tmp_path / "in" / "sheared.nrrd"
    sitk.WriteImage(sheared, str(ct))
    sheared = sitk.ReadImage(str(ct))  # as the command reads it (NRRD keeps the shear; ITK makes each axis unit)
    annotation = write_like(annotation_from_label(files["label"]), sheared, tmp_path / "in" / "sheared_ann.nrrd")
    extra = ("--crop-output",) if crop else ()
    if name in ("out.nii.gz", "out.hdr"):
        refused(files, tmp_path, capsys, tmp_path / name, *extra, image=ct, annotation=annotation,
                message="cannot hold the CT's grid in its format")
        return
    assert segment(files, tmp_path / name, *extra, image=ct, annotation=annotation) == 0
    written = sitk.ReadImage(str(tmp_path / name))
    assert np.allclose(written.GetDirection(), sheared.GetDirection())
    assert (written.GetSize() == sheared.GetSize()) is not crop


def test_a_damaged_file_in_upper_case_is_not_told_to_be_renamed(files, tmp_path, capsys):
    """ITK reads '.NII' (upper case): a file it cannot read there is damaged or not an image, renaming cannot help."""
    junk = tmp_path / "in" / "JUNK.NII"
    junk.write_bytes(b"not an image at all")
    err = refused(files, tmp_path, capsys, None, image=junk, message="cannot be read as a medical image")
    assert "Rename" not in err


@pytest.mark.parametrize("name", ["CT.MHA", "ct.Mha", "ct.nii.GZ"])
def test_an_input_whose_extension_itk_reads_in_lower_case_only_is_named_so(files, tmp_path, capsys, name):
    ct = tmp_path / "in" / name
    sitk.WriteImage(files["reference"], str(tmp_path / "in" / ("x" + name.lower()[name.index("."):])))
    (tmp_path / "in" / ("x" + name.lower()[name.index("."):])).rename(ct)
    refused(files, tmp_path, capsys, None, image=ct,
            message=f"lower-case extension only, and this one ends in '{name[name.index('.'):]}'. Rename it to "
                    f"'{name[:name.index('.')]}{name.lower()[name.index('.'):]}'")


@pytest.mark.parametrize("name, data", [("out.nhdr", "out.raw.gz"), ("out.mhd", "out.zraw"), ("out.hdr", "out.img")])
def test_header_and_data_outputs(files, tmp_path, capsys, name, data):  # 4
    assert segment(files, tmp_path / name) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in", name, data])
    written = sitk.ReadImage(str(tmp_path / name))
    assert written.GetSize() == files["reference"].GetSize()
    assert np.allclose(written.GetOrigin(), files["reference"].GetOrigin(), atol=1e-3)
    assert sitk.GetArrayFromImage(written).any()


def test_report_that_cannot_be_written(files, tmp_path, capsys):  # 5
    (tmp_path / "notes").write_text("a file, not a folder")
    refused(files, tmp_path, capsys, None, "--report", str(tmp_path / "notes" / "report.json"),
            message="is a file, not a folder")


def test_report_failing_at_write_time_leaves_no_mask(files, tmp_path, capsys, monkeypatch):  # 5
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", disk_full)
    refused(files, tmp_path, capsys, None, "--report", str(tmp_path / "report.json"), message="free space")


def test_same_path_for_output_and_report(files, tmp_path, capsys):  # 6
    refused(files, tmp_path, capsys, None, "--report", str(tmp_path / "out.nrrd"), message="same file")


@pytest.mark.parametrize("value, message", [(-1, "negative"), (np.nan, "NaN or Inf")])
def test_annotation_with_minus_one_or_nan(files, tmp_path, capsys, value, message):  # 7
    annotation = annotation_from_label(files["label"]).astype(np.float32)
    annotation[annotation > 0] = value
    write_like(annotation, files["reference"], tmp_path / "in" / "bad.nrrd")
    refused(files, tmp_path, capsys, annotation=tmp_path / "in" / "bad.nrrd", message=message)


@pytest.mark.parametrize("which", ["ct", "annotation"])
def test_overwrite_never_replaces_an_input(files, tmp_path, capsys, which):  # 10
    refused(files, tmp_path, capsys, files[which], "--overwrite", message="destroy your input")


def test_sigterm_leaves_the_old_output_and_exits_143(tmp_path):  # 11
    old = tmp_path / "out.nrrd"
    old.write_bytes(b"the earlier result")
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ENGINE_TESTS)!r})
        import numpy as np, SimpleITK as sitk
        from conftest import OracleProposer, CopyCoarseRefiner, SPACING, make_volume
        import gastric_propagate.cli as cli
        from gastric_propagate.data import outputs
        from gastric_propagate.data.annotation import annotation_from_label
        from gastric_propagate.inference.pipeline import Segmenter
        from gastric_propagate.inference.preprocessing import Preprocessing

        image, label = make_volume(depth=16, size=64, centre_z=8, radius_mm=10.0)
        for name, array in (("ct", image), ("annotation", annotation_from_label(label))):
            written = sitk.GetImageFromArray(array)
            written.SetSpacing(SPACING)
            sitk.WriteImage(written, {str(tmp_path)!r} + f"/{{name}}.nrrd")
        segmenter = Segmenter.from_networks(OracleProposer(), CopyCoarseRefiner(), Preprocessing(), device="cpu")
        cli._segmenter = lambda args: segmenter
        staged_mask = outputs.OutputBatch.mask

        def slow_mask(self, *args):
            path = staged_mask(self, *args)
            print("staged", flush=True)
            time.sleep(60)
            return path

        outputs.OutputBatch.mask = slow_mask
        sys.exit(cli.main(["segment", "--image", {str(tmp_path / "ct.nrrd")!r},
                           "--annotation", {str(tmp_path / "annotation.nrrd")!r}, "--output", {str(old)!r},
                           "--overwrite"]))
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    try:
        assert process.stdout.readline().strip() == "staged", process.stderr.read()
        assert list(tmp_path.glob(".partial-out.nrrd-*/out.nrrd")), "the new mask is being written"
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    finally:
        process.kill()
    err = process.stderr.read()
    assert code == 143 and "terminated" in err and "Traceback" not in err, err
    assert old.read_bytes() == b"the earlier result"
    assert not list(tmp_path.glob(".partial*"))


def test_weights_of_the_wrong_stage(files, tmp_path, capsys, monkeypatch):  # 12
    monkeypatch.setattr(cli, "_segmenter", REAL_SEGMENTER)
    before = snapshot(tmp_path)
    code = segment(files, tmp_path / "out.nrrd", "--device", "cpu", "--proposer", str(bundled_weights("refiner")))
    err = capsys.readouterr().err
    assert code == 3 and "swapped" in err and "Traceback" not in err
    assert snapshot(tmp_path) == before


def test_weights_declaring_a_network_of_24_gb(files, tmp_path, capsys, monkeypatch):  # low
    import torch

    from gastric_propagate.inference import networks  # load_checkpoint imports the network class when it runs

    class NeverBuilt(networks.UNet2D):
        def __init__(self, **config):
            raise AssertionError("the network was built")

    monkeypatch.setattr(networks, "UNet2D", NeverBuilt)
    monkeypatch.setattr(cli, "_segmenter", REAL_SEGMENTER)
    payload = torch.load(bundled_weights("proposer"), weights_only=True)
    payload["architecture"]["config"]["base_channels"] = 1792
    torch.save(payload, tmp_path / "in" / "huge.pt")
    before = snapshot(tmp_path)
    code = segment(files, tmp_path / "out.nrrd", "--device", "cpu", "--proposer", str(tmp_path / "in" / "huge.pt"))
    err = capsys.readouterr().err
    assert code == 3 and "GB of memory" in err and "Traceback" not in err, err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("extra, message", [
    (("--device", "tpu"), "not a device"),
    (("--max-distance-mm", "nan"), "finite distance"),
    (("--max-distance-mm", "-3"), "finite distance"),
    (("--min-slice", "-1"), "too small"),
])
def test_option_values(files, tmp_path, capsys, extra, message):  # low: --device tpu, --max-distance-mm nan
    refused(files, tmp_path, capsys, None, *extra, message=message)


def test_one_voxel_annotation(files, tmp_path, capsys):  # low
    dot = np.zeros(files["label"].shape, np.uint8)
    dot[8, 32, 32] = 1
    write_like(dot, files["reference"], tmp_path / "in" / "dot.nrrd")
    refused(files, tmp_path, capsys, annotation=tmp_path / "in" / "dot.nrrd", message="not a dot")


def test_size_limit_counts_bytes(files, tmp_path, capsys, monkeypatch):  # low
    import gastric_propagate.data.volumes as volumes

    image = sitk.GetArrayFromImage(files["reference"]).astype(np.float64)
    write_like(image, files["reference"], tmp_path / "in" / "ct64.nrrd")
    monkeypatch.setattr(volumes, "MAX_BYTES", image.size * 4)
    assert segment(files, tmp_path / "int16.nrrd") == 0
    (tmp_path / "int16.nrrd").unlink()
    refused(files, tmp_path, capsys, image=tmp_path / "in" / "ct64.nrrd", message="16-bit")


def run_command(tmp_path, capsys, *argv):
    before = snapshot(tmp_path)
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured, before != snapshot(tmp_path)


@pytest.mark.parametrize("argv, message", [
    (("make-phantoms", "--out", "{file}/phantoms"), "is a file, not a folder"),
    (("make-phantoms", "--out", "{tmp}/p", "--count", "0"), "too small"),
    (("train", "--phantoms", "0", "--out", "{tmp}/w"), "No training data"),
    (("train", "--phantoms", "-2", "--out", "{tmp}/w"), "--phantoms -2 is too small"),
    (("train", "--hypodense", "-1", "--out", "{tmp}/w"), "--hypodense -1 is too small"),
    (("train", "--phantoms", "2", "--out", "{tmp}/w", "--proposer-steps", "0"), "--proposer-steps 0 keeps that"),
    (("train", "--phantoms", "2", "--out", "{tmp}/w", "--refiner-steps", "0"), "needs weights to keep: give --init"),
    (("train", "--phantoms", "2", "--out", "{file}/w"), "is a file, not a folder"),
    (("train", "--data", "{tmp}/missing", "--out", "{tmp}/w"), "does not exist"),
    (("train", "--data", "{tmp}/empty", "--out", "{tmp}/w"), "No image/label pairs"),
    (("train", "--data", "{file}", "--out", "{tmp}/w"), "The data folder {file} is a file, not a folder of cases"),
    (("evaluate", "--data", "{file}", "--out", "{tmp}/e"), "The data folder {file} is a file, not a folder of cases"),
    (("train", "--phantoms", "2", "--out", "{tmp}/w", "--device", "tpu"), "not a device"),
    (("evaluate", "--data", "{tmp}/missing", "--out", "{tmp}/e"), "does not exist"),
    (("evaluate", "--data", "{tmp}/empty", "--out", "{tmp}/e"), "No image/label pairs"),
    (("evaluate", "--out", "{file}/e"), "is a file, not a folder"),
    (("evaluate", "--out", "{tmp}/e", "--cases", "0"), "too small"),
    (("evaluate", "--out", "{tmp}/e", "--methods", "magic"), "magic"),
    (("benchmark", "--repeats", "0"), "too small"),
    (("demo", "--out", "{file}/demo"), "is a file, not a folder"),
    (("train", "--phantoms", "2", "--out", "{tmp}/w", "--learning-rate", "nan"), "not a learning rate"),
    (("train", "--phantoms", "2", "--out", "{tmp}/w", "--learning-rate", "-1"), "not a learning rate"),
    (("train", "--phantoms", "2", "--out", "{tmp}/w", "--learning-rate", "inf"), "not a learning rate"),
    (("train", "--phantoms", "2", "--out", "{tmp}/w", "--mix", "real=1"), "SOURCE one of phantom"),
    (("train", "--phantoms", "2", "--out", "{tmp}/w", "--mix", "phantom=-1"), "a share of 0 or more"),
    (("train", "--phantoms", "2", "--out", "{tmp}/w", "--mix", "phantom=0"), "no source a share above 0"),
    (("train", "--phantoms", "2", "--thorax", "2", "--out", "{tmp}/w", "--mix", "phantom=1"),
     "--mix gives no share to thorax"),
    (("train", "--data", "{tmp}/empty", "--data", "{tmp}/empty/../empty", "--out", "{tmp}/w"), "is given twice"),
    (("train", "--data", "{tmp}/empty", "--data", "{tmp}/other/empty", "--phantoms", "2", "--out", "{tmp}/w",
      "--mix", "empty=1", "phantom=1"), "are both the source 'empty' in --mix"),
    (("train", "--data", "{tmp}/phantom", "--phantoms", "2", "--out", "{tmp}/w", "--mix", "phantom=1"),
     "--data {tmp}/phantom and --phantoms are both the source 'phantom'"),
    # A real folder named as a generator not asked for is its own source: refused for lacking pairs, nothing else.
    (("train", "--data", "{tmp}/thorax", "--phantoms", "2", "--out", "{tmp}/w", "--mix", "thorax=1", "phantom=1"),
     "{tmp}/thorax does not exist"),
    (("train", "--phantoms", "2", "--out", "{tmp}/w", "--zoom", "2", "1"), "give 0 < LOW <= HIGH"),
    (("train", "--phantoms", "50001", "--out", "{tmp}/w"), "give at most 50000; its seeds 0-50000 would reach seed "
                                                           "50000, which the hypodense phantoms use"),
    (("train", "--hypodense", "50001", "--out", "{tmp}/w"), "would reach seed 100000, which evaluation holds out"),
    (("train", "--thorax", "100001", "--out", "{tmp}/w"), "--thorax 100001: give at most 100000"),
    (("train", "--phantoms", "2", "--out", "{tmp}/w", "--self-fed", "1.5"), "a share from 0 to 1"),
    (("train", "--phantoms", "2", "--out", "{tmp}/w", "--self-fed", "nan"), "a share from 0 to 1"),
    (("train", "--phantoms", "2", "--out", "{tmp}/w", "--self-fed-refresh", "2"), "give --self-fed too"),
    (("train", "--phantoms", "2", "--out", "{tmp}/w", "--self-fed", "0.5", "--self-fed-refresh", "-1"),
     "a count, 0 or more"),
    (("train", "--phantoms", "2", "--out", "{tmp}/w", "--self-fed", "0.5", "--self-fed-refresh", "5",
      "--proposer-steps", "10"), "fewer than half the proposer's steps (5)"),
    (("train", "--phantoms", "2", "--out", "{tmp}/w", "--refiner-leaks", "1.5"), "a share from 0 to 1"),
    (("train", "--phantoms", "2", "--out", "{tmp}/w", "--outline-windows", "-0.1"), "a share from 0 to 1"),
    (("train", "--phantoms", "2", "--out", "{tmp}/w", "--min-bin-crops", "-1"), "a number of crops, 0 or more"),
    (("train", "--phantoms", "2", "--out", "{tmp}/w", "--min-bin-crops", "3"), "without --mix every crop"),
    (("train", "--phantoms", "2", "--out", "{tmp}/w", "--proposer-boundary-weight", "-2"), "a weight of 0 or more"),
    (("train", "--phantoms", "2", "--out", "{tmp}/w", "--hard-pixel-weight", "-1"), "a weight of 0 or more"),
    (("train", "--phantoms", "2", "--out", "{tmp}/w", "--boundary-weight", "nan"), "a weight of 0 or more"),
    (("train", "--phantoms", "2", "--out", "{tmp}/w", "--depth", "5"), "--depth 5: give 1 to 4"),
    (("train", "--phantoms", "2", "--out", "{tmp}/w", "--base-channels", "2"), "--base-channels 2: give 4 to 64"),
    (("train", "--phantoms", "2", "--out", "{tmp}/w", "--depth", "4", "--init", "bundled"), "keep the size"),
    (("train", "--phantoms", "2", "--out", "{tmp}/w", "--window", "100"), "--window 100: give a multiple of 16"),
    (("train", "--phantoms", "2", "--out", "{tmp}/w", "--window", "48"), "--window 48: give a multiple of 16"),
    (("evaluate", "--out", "{tmp}/e", "--seed-start", "-5"), "too small"),
    (("train", "--phantoms", "2", "--out", "{tmp}/w", "--mix", "phantom=0.3", "phantom=0.7"),
     "--mix names phantom twice (phantom=0.7)"),
])
def test_other_commands_refuse_bad_input(tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("a file")
    argv = [part.format(tmp=tmp_path, file=tmp_path / "file") for part in argv]
    code, captured, changed = run_command(tmp_path, capsys, *argv)
    assert code == 2 and message.format(file=tmp_path / "file", tmp=tmp_path) in captured.err, captured.err
    assert not changed


@pytest.mark.parametrize("option", [("--zoom", "0", "5"), ("--self-fed", "2"), ("--min-bin-crops", "3")])
def test_train_refuses_its_own_options_before_it_reads_a_data_folder(folder_of_cases, tmp_path, capsys, option):
    code, captured, _ = run_command(tmp_path, capsys, "train", "--data", str(folder_of_cases), "--out",
                                    str(tmp_path / "w"), *option)
    assert code == 2 and option[0] in captured.err
    assert "found in" not in captured.out  # refused before a case was listed, however large the folder


@pytest.mark.parametrize("shell_tail", ['>&- ; echo "exit $?" >&2', '2>&- ; echo "exit $?"',
                                        '| true ; echo "exit ${PIPESTATUS[0]}" >&2'])
def test_a_closed_or_gone_reader_of_stdout_or_stderr_is_no_failure(files, tmp_path, shell_tail):
    """Started with stdout or stderr closed, or its summary piped to a reader that left (``| head``): the mask is
    written and the command says so by exit 0, as the console command ends (``cli.run``), without a traceback."""
    output = tmp_path / "out.nrrd"
    script = tmp_path / "segment.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ENGINE_TESTS)!r})
        from conftest import OracleProposer, CopyCoarseRefiner
        import gastric_propagate.cli as cli
        from gastric_propagate.inference.pipeline import Segmenter
        from gastric_propagate.inference.preprocessing import Preprocessing

        segmenter = Segmenter.from_networks(OracleProposer(), CopyCoarseRefiner(), Preprocessing(), device="cpu")
        cli._segmenter = lambda args: segmenter
        sys.argv = ["gastric-propagate", "segment", "--image", {str(files["ct"])!r},
                    "--annotation", {str(files["annotation"])!r}, "--output", {str(output)!r}]
        cli.run()
    """))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run(["bash", "-c", f'"{sys.executable}" "{script}" {shell_tail}'], capture_output=True,
                          text=True, env=env, timeout=300)
    said = done.stdout + done.stderr
    assert "exit 0" in said and "Traceback" not in said and "Broken pipe" not in said, said
    assert output.is_file()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_benchmark_refuses_a_device_or_weights_before_timing_anything(tmp_path, capsys, monkeypatch):
    """--device cuda without CUDA: refused before the speed part (which would time the CPU first); the profile's child
    refusing missing weights: its own words and exit code 3, no traceback."""
    import gastric_propagate.benchmark as benchmark

    monkeypatch.setattr(benchmark, "_speed", lambda *args: pytest.fail("timed before the device was checked"))
    code, captured, _ = run_command(tmp_path, capsys, "benchmark", "--device", "cuda", "--skip", "accuracy",
                                    "corrections", "--repeats", "1")
    assert code == 2 and "Device 'cuda' was asked for" in captured.err, captured.err
    code, captured, _ = run_command(tmp_path, capsys, "benchmark", "--profile", "--repeats", "1",
                                    "--proposer", str(tmp_path / "nope.pt"))
    assert code == 3 and f"error: The proposer weights file {tmp_path / 'nope.pt'} does not exist" in captured.err


@pytest.mark.parametrize("extra, message", [
    (("--min-slice", "9", "--min-slice", "3"), "--min-slice was given twice (9 and 3); give it once"),
    (("--max-distance-mm", "2", "--max-distance-mm", "100"), "--max-distance-mm was given twice"),
    (("--min", "9"), "unrecognized arguments: --min 9"),
    (("--no-c",), "unrecognized arguments: --no-c"),
])
def test_a_limit_given_twice_or_an_abbreviated_option_is_refused(files, tmp_path, capsys, extra, message):
    """A dropped limit would go unnoticed; '--no-c' would have run --no-consensus."""
    refused(files, tmp_path, capsys, None, *extra, message=message)


def test_an_output_folder_that_is_a_link_to_nothing_is_refused_before_the_run(files, tmp_path, capsys):
    link = tmp_path / "results"
    link.symlink_to(tmp_path / "gone")
    refused(files, tmp_path, capsys, link / "out.nrrd",
            message=f"{link} is a link to {tmp_path / 'gone'}, which does not exist. Create that folder")
    code, captured, changed = run_command(tmp_path, capsys, "make-phantoms", "--out", str(link))
    assert code == 2 and not changed and "which does not exist. Create that folder" in captured.err


def test_unwritable_output_folder(tmp_path, capsys, monkeypatch):
    """A folder its owner may not write (mode r-x). The kernel lets root write anywhere, so that os.access, which the
    check asks, says yes to root; run as root (as CI is), os.access answers as the folder's owner without root's
    privilege would, from the folder's mode bits. The check itself, and the command around it, are the real ones."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    asked = []
    if os.geteuid() == 0:
        real_access = os.access

        def access_without_privilege(path, mode, **kwargs):
            asked.append(Path(path))
            if mode & os.W_OK and not os.stat(path).st_mode & stat.S_IWUSR:
                return False
            return real_access(path, mode, **kwargs)

        monkeypatch.setattr(os, "access", access_without_privilege)
    code, captured, changed = run_command(tmp_path, capsys, "make-phantoms", "--out", str(locked / "p"))
    assert code == 2 and not changed and not (locked / "p").exists()
    assert f"the folder {locked} is not writable. Choose a folder you can write to." in captured.err
    assert os.geteuid() != 0 or locked in asked  # the folder that exists, nearest to the one to be made


@pytest.fixture
def folder_of_cases(tmp_path):
    """Three labelled cases in the <case>_image / <case>_label layout."""
    return write_cases_folder(tmp_path / "data", 3)


@pytest.mark.parametrize("cases, used, said", [((), 3, "evaluating all 3"),
                                                (("--cases", "2"), 2, "evaluating the first 2 (--cases 2)")])
def test_evaluate_uses_every_case_of_a_folder(folder_of_cases, tmp_path, capsys, cases, used, said):
    argv = ["evaluate", "--data", str(folder_of_cases), "--out", str(tmp_path / "eval"), *cases,
            "--methods", "copy_slice", "--variants", "largest"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert f"3 image/label pair(s) found in {folder_of_cases}; {said}" in out
    rows = (tmp_path / "eval" / "results.csv").read_text().splitlines()[1:]
    assert len(rows) == used
    summary = (tmp_path / "eval" / "summary.md").read_text()
    assert f"`gastric-propagate {' '.join(argv)}`" in summary, "the command actually run"


@pytest.mark.parametrize("name, kept", [("ct.nii.gz", 0.5), ("ct.nii", 0.67), ("ct.mha", 0.5)])
def test_a_truncated_ct_is_refused(files, tmp_path, capsys, name, kept):  # issue 26: 1
    path = tmp_path / "in" / name
    sitk.WriteImage(files["reference"], str(path), useCompression=name != "ct.nii")
    path.write_bytes(path.read_bytes()[:int(path.stat().st_size * kept)])
    refused(files, tmp_path, capsys, image=path, message="is truncated")


def test_a_gzip_ct_with_flipped_bytes_is_refused(files, tmp_path, capsys):  # issue 26: 2
    path = tmp_path / "in" / "ct.nii.gz"
    sitk.WriteImage(files["reference"], str(path), useCompression=True)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 50] = bytes(255 - value for value in data[middle:middle + 50])
    path.write_bytes(bytes(data))
    refused(files, tmp_path, capsys, image=path, message="is corrupt")


def test_an_annotation_of_nan_direction_is_refused(files, tmp_path, capsys):  # issue 26: 7
    path = tmp_path / "in" / "nan.nrrd"
    sitk.WriteImage(sitk.ReadImage(str(files["annotation"])), str(path), useCompression=False)
    data = path.read_bytes()
    start = data.index(b"space directions: ")
    end = data.index(b"\n", start)
    path.write_bytes(data[:start] + data[start:end].rsplit(b" ", 1)[0] + b" (nan,nan,nan)" + data[end:])
    refused(files, tmp_path, capsys, annotation=path, message="corrupt geometry")


@pytest.mark.parametrize("kind, message", [("loop", "loop of symbolic links"), ("folder", "is a folder, not a file"),
                                           ("device", "not a regular file")])
def test_an_image_that_is_not_a_file(files, tmp_path, capsys, kind, message):  # issue 26: 10, 17
    path = {"folder": tmp_path / "in", "device": Path("/dev/zero"), "loop": tmp_path / "in" / "loop_a"}[kind]
    if kind == "loop":
        path.symlink_to(tmp_path / "in" / "loop_b")
        (tmp_path / "in" / "loop_b").symlink_to(path)
    refused(files, tmp_path, capsys, image=path, message=message)


@pytest.mark.parametrize("target", ["/dev/null", "/proc/self/fd/1"])
def test_a_report_onto_a_link_to_a_device_is_refused_with_overwrite(files, tmp_path, capsys, target):  # 26: 4
    (tmp_path / "report.json").symlink_to(target)
    refused(files, tmp_path, capsys, None, "--report", str(tmp_path / "report.json"), "--overwrite",
            message="not a regular file")
    assert (tmp_path / "report.json").is_symlink()


def test_an_output_extension_in_upper_case_is_refused_before_the_run(files, tmp_path, capsys, fast_networks,
                                                                     monkeypatch):  # issue 26: 12
    monkeypatch.setattr(fast_networks, "segment", lambda *a, **k: pytest.fail("the run started"))
    refused(files, tmp_path, capsys, tmp_path / "x.nii.GZ", message="Name it 'x.nii.gz'")


@pytest.mark.parametrize("stroke, length, extra, message", [
    ("axial", 40, (), "too thin to be a cross-section"), ("axial", 20, (), "too thin to be a cross-section"),
    # With keyframes, a sagittal stroke would be seven one-voxel anchors: refused as painted in the wrong view.
    ("sagittal", 24, ("--keyframes",), "it was painted in the sagittal view")])
def test_a_painted_line_one_voxel_wide_is_refused_with_what_to_paint(files, tmp_path, capsys, stroke, length,
                                                                      extra, message):  # issue 26: 3
    line = np.zeros(files["label"].shape, np.uint8)
    if stroke == "sagittal":
        line[5:12, 20:20 + length, 30] = 1  # one voxel wide on each of seven axial slices
    else:
        line[8, 30, 12:12 + length] = 1
    write_like(line, files["reference"], tmp_path / "in" / "line.nrrd")
    refused(files, tmp_path, capsys, None, *extra, annotation=tmp_path / "in" / "line.nrrd", message=message)


def test_a_line_that_survives_on_a_coarse_ct_gives_a_result(files, tmp_path, capsys):  # issue 26: 3
    coarse = sitk.ReadImage(str(files["ct"]))
    coarse.SetSpacing((1.6, 1.6, 2.5))
    sitk.WriteImage(coarse, str(tmp_path / "in" / "coarse.nrrd"))
    line = np.zeros(files["label"].shape, np.uint8)
    line[8, 32, 26:30] = 1
    write_like(line, coarse, tmp_path / "in" / "line.nrrd")
    code = segment(files, tmp_path / "out.nrrd", image=tmp_path / "in" / "coarse.nrrd",
                   annotation=tmp_path / "in" / "line.nrrd")
    err = capsys.readouterr().err
    assert code in (0, 2) and "Traceback" not in err, err


@pytest.mark.parametrize("field, value", [("state_dict", "nan"), ("pixel_spacing_mm", 0.01), ("size_multiple", 0)])
def test_unusable_weights_are_refused_at_load_with_exit_3(files, tmp_path, capsys, monkeypatch, field,
                                                          value):  # issue 26: 5, 11
    import torch

    monkeypatch.setattr(cli, "_segmenter", REAL_SEGMENTER)
    payload = torch.load(bundled_weights("proposer"), weights_only=True)
    if field == "state_dict":
        payload["state_dict"] = {name: torch.full_like(tensor, float("nan")) if tensor.is_floating_point() else tensor
                                 for name, tensor in payload["state_dict"].items()}
    else:
        payload["preprocessing"][field] = value
    torch.save(payload, tmp_path / "in" / "bad.pt")
    before = snapshot(tmp_path)
    code = segment(files, tmp_path / "out.nrrd", "--device", "cpu", "--proposer", str(tmp_path / "in" / "bad.pt"))
    err = capsys.readouterr().err
    assert code == 3 and "Traceback" not in err and "gastric-propagate train" in err, err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("argv, existing, message", [
    (("demo", "--out", "{tmp}/mine"), "report.json", "holds report.json, which an earlier demo did not write"),
    (("demo", "--out", "{tmp}/mine"), "ct.nrrd", "holds ct.nrrd, which an earlier demo did not write"),
    (("evaluate", "--out", "{tmp}/mine", "--methods", "copy_slice"), "summary.md", "summary.md already exists"),
    (("evaluate", "--out", "{tmp}/mine", "--methods", "copy_slice"), "confidence.csv", "confidence.csv already exists"),
])
def test_demo_and_evaluate_do_not_replace_files_in_their_folder_without_overwrite(tmp_path, capsys, monkeypatch, argv,
                                                                                  existing, message):  # issue 26: 8
    from gastric_propagate import demo
    from gastric_propagate.evaluation import evaluate

    monkeypatch.setattr(demo, "run_demo", lambda *a, **k: pytest.fail("the demo ran"))
    monkeypatch.setattr(evaluate, "evaluate_command", lambda *a, **k: pytest.fail("the evaluation ran"))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / existing).write_text("the user's file")
    code, captured, changed = run_command(tmp_path, capsys, *[part.format(tmp=tmp_path) for part in argv])
    assert code == 2 and message in captured.err and "--overwrite" in captured.err, captured.err
    assert not changed


def test_ct_values_scaled_a_million_times_are_not_ct(files, tmp_path, capsys):  # issue 26: 13
    scaled = sitk.GetArrayFromImage(files["reference"]).astype(np.int32) * 1_000_000
    write_like(scaled, files["reference"], tmp_path / "in" / "scaled.nrrd")
    refused(files, tmp_path, capsys, image=tmp_path / "in" / "scaled.nrrd", message="outside the range of any CT")


@pytest.mark.parametrize("stored", ["float", "0-255", "float, --label 1", "faint background"])
def test_a_painted_slice_smoothed_by_resampling_is_refused_as_evaluate_and_train_refuse_it(files, tmp_path, capsys,
                                                                                           stored):
    """A soft edge (linear resampling, anti-aliasing) was taken as everything above 0: a wider tumour, Dice 0.88 ->
    0.77 in a probe; stored as 0-255 it was called "a label map of several structures"."""
    from scipy import ndimage

    painted = annotation_from_label(files["label"]).astype(np.float32)
    k = int(np.flatnonzero(painted.any(axis=(1, 2)))[0])
    painted[k] = ndimage.gaussian_filter(painted[k], 1.0)
    extra, words = (), "holds fractional values (e.g. "
    if stored == "0-255":
        painted = np.round(painted * 255).astype(np.uint8)
        words = f"values on slice {k} alone, as a painted slice resampled"
    elif stored == "float, --label 1":
        extra = ("--label", "1")
    elif stored == "faint background":  # a float label whose background is 1e-7, not 0: not "painted on N slices"
        painted = annotation_from_label(files["label"]).astype(np.float32) + np.float32(1e-7)
    write_like(painted, files["reference"], tmp_path / "in" / "soft.nrrd")
    err = refused(files, tmp_path, capsys, None, *extra, annotation=tmp_path / "in" / "soft.nrrd", message=words)
    assert "nearest-neighbour" in err and "several structures" not in err


def test_label_chooses_its_value_in_a_label_map_that_marks_ignored_voxels_negative(files, tmp_path, capsys):
    """-1 for "ignore" beside labels 1 and 2: with --label 1 it is a label map, not a CT given as the annotation."""
    labels = annotation_from_label(files["label"]).astype(np.int16)
    k = int(np.flatnonzero(labels.any(axis=(1, 2)))[0])
    labels[k, :3, :3] = 2
    labels[k, -3:, -3:] = -1
    write_like(labels, files["reference"], tmp_path / "in" / "labels.nrrd")
    assert segment(files, tmp_path / "out.nrrd", "--label", "1", annotation=tmp_path / "in" / "labels.nrrd") == 0, (
        capsys.readouterr().err)


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_second_run_to_the_same_new_output_does_not_replace_the_first(files, tmp_path, capsys, monkeypatch,
                                                                        fast_networks, overwrite):  # issue 26: 9
    """Two runs to one new output: the other one finishes while this one works (after this run's pre-run check).
    Without --overwrite this run is refused and the other's files are kept; with it, they are replaced."""
    output, report = tmp_path / "out.nrrd", tmp_path / "report.json"
    segment_alone = fast_networks.segment

    def other_run_finishes_meanwhile(*args, **kwargs):
        assert not output.exists(), "the pre-run check has passed, the output is new"
        result = segment_alone(*args, **kwargs)
        output.write_bytes(b"the other run's mask")
        report.write_text("the other run's report")
        return result

    monkeypatch.setattr(fast_networks, "segment", other_run_finishes_meanwhile)
    code = segment(files, output, "--report", str(report), *(["--overwrite"] if overwrite else []))
    err = capsys.readouterr().err
    if overwrite:
        assert code == 0, err
        assert json.loads(report.read_text())["volume_ml"] > 0 and sitk.ReadImage(str(output)).GetSize()
        return
    assert code == 2 and "Traceback" not in err, err
    assert "out.nrrd exists now" in err and "another run" in err and "--overwrite" in err, err
    assert output.read_bytes() == b"the other run's mask" and report.read_text() == "the other run's report"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in", "out.nrrd", "report.json"]


@pytest.mark.parametrize("painted, edge", [(0, "first"), (15, "last"), (8, None)])
def test_painting_on_the_first_or_last_slice_is_noted_in_the_report_and_printed(tmp_path, capsys, painted,
                                                                                edge):  # issue 26: 14
    image, label = make_volume(depth=16, size=64, centre_z=painted, radius_mm=10.0)
    ct = sitk.GetImageFromArray(image)
    ct.SetSpacing(SPACING)
    sitk.WriteImage(ct, str(tmp_path / "ct.nrrd"))
    write_like(annotation_from_label(label, painted), ct, tmp_path / "annotation.nrrd")
    code = cli.main(["segment", "--image", str(tmp_path / "ct.nrrd"), "--annotation", str(tmp_path / "annotation.nrrd"),
                     "--output", str(tmp_path / "out.nrrd"), "--report", str(tmp_path / "report.json")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    advice = [item for item in json.loads((tmp_path / "report.json").read_text())["advice"]
              if item["kind"] == "painted_at_volume_edge"]
    if edge is None:
        assert not advice and "slice of the volume" not in captured.out
        return
    sentence = (f"The painted slice {painted} is the {edge} slice of the volume: the tumour may go on beyond the scan, "
                "where nothing can be segmented")
    assert advice == [{"kind": "painted_at_volume_edge", "sentence": advice[0]["sentence"], "painted_slice": painted,
                       "edge": edge, "slices": 16}]
    assert advice[0]["sentence"].startswith(sentence)
    assert f"note: {sentence}" in captured.out


@pytest.mark.parametrize("argv, message", [
    (("train", "--phantoms", "1", "--out", "{tmp}/w", "--init", "{tmp}/mine/proposer.pt"),
     "--init {tmp}/mine/proposer.pt is a file, not a folder. --init takes the folder that holds proposer.pt and "
     "refiner.pt (the --out folder of 'gastric-propagate train'), or 'bundled' for the shipped weights (leave --init "
     "out to train from scratch). Give its folder: --init {tmp}/mine."),
    (("train", "--phantoms", "1", "--out", "{tmp}/w", "--init", "{tmp}/missing"),
     "--init {tmp}/missing does not exist"),
    (("train", "--phantoms", "1", "--out", "{tmp}/w", "--init", "{tmp}/mine"),
     "cannot be read (UnpicklingError): it is corrupt or not a GastricPropagate checkpoint. --init takes the folder"),
    (("export-onnx", "--weights", "{tmp}/missing"),
     "--weights {tmp}/missing does not exist. --weights takes the folder that holds proposer.pt and refiner.pt"),
    (("export-onnx", "--weights", "{tmp}/mine/refiner.pt"), "is a file, not a folder. --weights takes the folder that "
                                                            "holds proposer.pt and refiner.pt"),
    (("export-onnx", "--weights", "{tmp}/empty"), "--weights {tmp}/empty holds no proposer.pt and no refiner.pt."),
    (("export-onnx", "--weights", "{tmp}/mine"), "it is corrupt or not a GastricPropagate checkpoint. --weights takes"),
])
def test_weights_options_that_take_a_folder_say_what_they_take(tmp_path, capsys, argv, message):
    """--init and export-onnx's --weights take a folder (and leaving --init out trains from scratch): their refusals
    do not give --proposer's advice (a .pt file, or the option left out for the bundled weights)."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "mine").mkdir()
    for stage in ("proposer", "refiner"):
        (tmp_path / "mine" / f"{stage}.pt").write_text("not a checkpoint")
    code, captured, changed = run_command(tmp_path, capsys, *[part.format(tmp=tmp_path) for part in argv])
    assert code == 3 and message.format(tmp=tmp_path) in captured.err, captured.err
    assert "leave the option out" not in captured.err and not changed


def test_a_case_file_that_is_not_an_image_gets_the_words_segment_gives_it(folder_of_cases, tmp_path, capsys):
    (folder_of_cases / "case1_image.nrrd").write_text("not an image")
    code, captured, _ = run_command(tmp_path, capsys, "evaluate", "--data", str(folder_of_cases), "--out",
                                    str(tmp_path / "e"), "--methods", "copy_slice")
    assert code == 2, captured.err
    assert f"The image file {folder_of_cases / 'case1_image.nrrd'} cannot be read as a medical image (" in captured.err
    assert "Use NRRD, NIfTI, MetaImage or another format SimpleITK reads." in captured.err


def test_a_folder_label_of_an_organ_and_a_tumour_is_not_taken_as_one_tumour(folder_of_cases, tmp_path, capsys):
    """nnU-Net datasets often label an organ 1 and its tumour 2: every non-zero voxel is not the tumour."""
    label = sitk.ReadImage(str(folder_of_cases / "case1_label.nrrd"))
    voxels = sitk.GetArrayFromImage(label)
    organ = np.zeros_like(voxels)
    organ[:, :8] = 1
    write_like(np.where(voxels > 0, 2, organ).astype(np.uint8), label, folder_of_cases / "case1_label.nrrd")
    code, captured, _ = run_command(tmp_path, capsys, "evaluate", "--data", str(folder_of_cases), "--out",
                                    str(tmp_path / "e"), "--methods", "copy_slice", "--variants", "largest")
    assert code == 0, captured.err  # the other cases ran
    rows = {row["case"]: row for row in csv.DictReader(open(tmp_path / "e" / "results.csv"))}
    assert "holds several values (1, 2); a case's label holds 0 for the background" in rows["case1"]["error"]
    assert "--label N" in rows["case1"]["error"]
    assert not rows["case0"]["error"] and not rows["case2"]["error"]
    tumour_ml = float(rows["case0"]["truth_ml"])  # the cases are alike in size (conftest's make_volume)
    # --label 2: the tumour alone; the cases labelled 1 hold no tumour of value 2 and say so.
    code, captured, _ = run_command(tmp_path, capsys, "evaluate", "--data", str(folder_of_cases), "--out",
                                    str(tmp_path / "e2"), "--methods", "copy_slice", "--variants", "largest",
                                    "--label", "2")
    assert code == 0, captured.err
    rows = {row["case"]: row for row in csv.DictReader(open(tmp_path / "e2" / "results.csv"))}
    assert not rows["case1"]["error"] and 0.5 * tumour_ml < float(rows["case1"]["truth_ml"]) < 2 * tumour_ml
    assert "holds no voxel of --label 2 (its values: 1)" in rows["case0"]["error"]
    # An interpolated label: refused with --label too (picking value 2 would drop the voxels of 1.6 around it).
    write_like(np.where(voxels > 0, 2.0, organ * 1.6).astype(np.float32), label, folder_of_cases / "case1_label.nrrd")
    code, captured, _ = run_command(tmp_path, capsys, "evaluate", "--data", str(folder_of_cases), "--out",
                                    str(tmp_path / "e3"), "--methods", "copy_slice", "--variants", "largest",
                                    "--label", "2", "--cases", "2")
    rows = {row["case"]: row for row in csv.DictReader(open(tmp_path / "e3" / "results.csv"))}
    assert "holds fractional values (e.g. 1.6)" in rows["case1"]["error"], rows["case1"]


def test_train_takes_the_tumour_value_label_gives(folder_of_cases, tmp_path, capsys, monkeypatch):
    from gastric_propagate.errors import InputError
    from gastric_propagate.training import train

    for index in range(3):
        label = sitk.ReadImage(str(folder_of_cases / f"case{index}_label.nrrd"))
        voxels = sitk.GetArrayFromImage(label)
        write_like(np.where(voxels > 0, 2, 1).astype(np.uint8), label, folder_of_cases / f"case{index}_label.nrrd")
    seen = {}

    def stop(cases, *args, **kwargs):
        seen["cases"] = list(cases)
        seen["data"] = kwargs.get("data_description", "")
        raise InputError("stopped before training")

    monkeypatch.setattr(train, "train", stop)
    code, captured, _ = run_command(tmp_path, capsys, "train", "--data", str(folder_of_cases), "--out",
                                    str(tmp_path / "w"), "--validation-phantoms", "0", "--label", "2")
    assert code == 2 and "stopped before training" in captured.err
    assert len(seen["cases"]) == 3 and "(label 2)" in seen["data"]
    for case in seen["cases"]:  # the tumour alone, not the whole volume labelled 1 around it
        assert 0 < case.label.mean() < 0.2 and set(np.unique(case.label)) == {0, 1}


def test_evaluate_runs_a_name_given_twice_once_and_refuses_options_it_would_ignore(folder_of_cases, tmp_path,
                                                                                   capsys):
    argv = ["evaluate", "--data", str(folder_of_cases), "--variants", "largest", "largest"]
    code, captured, _ = run_command(tmp_path, capsys, *argv, "--methods", "copy_slice", "copy_slice", "--out",
                                    str(tmp_path / "e"))
    assert code == 0, captured.err
    assert len(list(csv.DictReader(open(tmp_path / "e" / "results.csv")))) == 3, "one row per case, not four"
    for extra, message in ((("--data", str(tmp_path)), "--data is given 2 times"),
                           (("--generator", "thorax"), "--generator chooses synthetic cases, but --data"),
                           (("--generator", "thorax", "--seed-start", "5"), "--generator and --seed-start choose")):
        code, captured, changed = run_command(tmp_path, capsys, *argv, *extra, "--out", str(tmp_path / "e2"))
        assert code == 2 and message in captured.err and not changed, captured.err


def test_evaluate_says_on_the_console_that_a_case_failed(folder_of_cases, tmp_path, capsys):
    label = sitk.ReadImage(str(folder_of_cases / "case1_label.nrrd"))
    write_like(np.zeros_like(sitk.GetArrayFromImage(label)), label, folder_of_cases / "case1_label.nrrd")
    code, captured, _ = run_command(tmp_path, capsys, "evaluate", "--data", str(folder_of_cases), "--out",
                                    str(tmp_path / "e"), "--methods", "copy_slice", "region_growing",
                                    "--variants", "largest")
    assert code == 0, captured.err  # the other cases ran
    assert (f"warning: 2 of 6 runs failed, on 1 of 3 case(s) (case1): why is in the error column of "
            f"{tmp_path / 'e' / 'results.csv'}") in captured.out.splitlines()[-1]


def test_a_folder_case_saved_as_4d_of_one_time_point_is_that_volume_and_of_two_is_refused(folder_of_cases,
                                                                                             tmp_path, capsys):
    """As segment reads it: a converter's 4D file of one time point is a case; several time points are refused."""
    for kind in ("image", "label"):
        path = folder_of_cases / f"case1_{kind}.nrrd"
        sitk.WriteImage(sitk.JoinSeries([sitk.ReadImage(str(path))]), str(path))
    argv = ["evaluate", "--data", str(folder_of_cases), "--methods", "copy_slice", "--variants", "largest"]
    code, captured, _ = run_command(tmp_path, capsys, *argv, "--out", str(tmp_path / "e"))
    assert code == 0, captured.err
    rows = list(csv.DictReader(open(tmp_path / "e" / "results.csv")))
    assert [row["case"] for row in rows] == ["case0", "case1", "case2"] and not any(row["error"] for row in rows)
    assert float(rows[1]["dice"]) > 0.5, rows[1]
    image = sitk.ReadImage(str(folder_of_cases / "case0_image.nrrd"))
    sitk.WriteImage(sitk.JoinSeries([image, image]), str(folder_of_cases / "case0_image.nrrd"))
    code, captured, _ = run_command(tmp_path, capsys, *argv, "--out", str(tmp_path / "e2"))
    assert code == 2 and "case0_image.nrrd is a 4D image holding several volumes" in captured.err, captured.err
    sitk.WriteImage(image, str(folder_of_cases / "case0_image.nrrd"))
    label = sitk.ReadImage(str(folder_of_cases / "case0_label.nrrd"))
    sitk.WriteImage(sitk.JoinSeries([label, label]), str(folder_of_cases / "case0_label.nrrd"))
    code, captured, _ = run_command(tmp_path, capsys, *argv, "--out", str(tmp_path / "e3"))
    assert code == 2 and "case0_label.nrrd is a 4D label holding several volumes" in captured.err, captured.err


def test_train_says_how_many_pairs_it_found(folder_of_cases, tmp_path, capsys, monkeypatch, caplog):
    from gastric_propagate.errors import InputError
    from gastric_propagate.training import train

    (folder_of_cases / "lost_image.nrrd").write_bytes((folder_of_cases / "case0_image.nrrd").read_bytes())
    for name in ("orphan", "stray"):
        (folder_of_cases / f"{name}_label.nrrd").write_bytes((folder_of_cases / "case0_label.nrrd").read_bytes())

    def stop(*args, **kwargs):
        raise InputError("stopped before training")

    monkeypatch.setattr(train, "train", stop)
    code, captured, _ = run_command(tmp_path, capsys, "train", "--data", str(folder_of_cases), "--out",
                                    str(tmp_path / "w"), "--validation-phantoms", "0")
    assert code == 2 and "stopped before training" in captured.err
    assert f"3 image/label pair(s) found in {folder_of_cases}" in captured.out
    warned = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert warned == [f"1 image file(s) in {folder_of_cases} have no <case>_label file beside them and were skipped: "
                      "lost_image.nrrd",
                      f"2 label file(s) in {folder_of_cases} have no <case>_image file beside them and were skipped: "
                      "orphan_label.nrrd, stray_label.nrrd"]


@pytest.mark.parametrize("given, other", [("proposer", "refiner"), ("refiner", "proposer")])
def test_one_network_of_a_pair_given_alone_is_warned_of(files, tmp_path, capsys, given, other):
    (tmp_path / "mine").mkdir()
    for stage in ("proposer", "refiner"):
        (tmp_path / "mine" / f"{stage}.pt").write_text("the fast networks run instead")
    assert segment(files, tmp_path / "out.nrrd", f"--{given}", str(tmp_path / "mine" / f"{given}.pt")) == 0
    assert (f"warning: --{given} {tmp_path / 'mine' / f'{given}.pt'} runs with the bundled {other} (no --{other} "
            f"given): a mix of two trainings. Give --{other} too (e.g. {tmp_path / 'mine' / f'{other}.pt'})"
            ) in capsys.readouterr().err
    assert segment(files, tmp_path / "out2.nrrd", "--proposer", str(tmp_path / "mine" / "proposer.pt"),
                   "--refiner", str(tmp_path / "mine" / "refiner.pt")) == 0
    assert "warning" not in capsys.readouterr().err
    # Only the ONNX file beside the path given (what the onnx backend reads): still a mix, still said.
    (tmp_path / "onnx-only").mkdir()
    (tmp_path / "onnx-only" / f"{given}.onnx").write_text("the fast networks run instead")
    assert segment(files, tmp_path / "out3.nrrd", f"--{given}", str(tmp_path / "onnx-only" / f"{given}.pt")) == 0
    assert "a mix of two trainings" in capsys.readouterr().err


def test_evaluate_of_baselines_alone_runs_no_network_and_warns_of_no_mix(tmp_path, capsys):
    from gastric_propagate.cli import NETWORK_METHODS
    from gastric_propagate.evaluation.running import ENGINE_METHODS

    assert NETWORK_METHODS == ENGINE_METHODS
    assert cli.main(["evaluate", "--out", str(tmp_path / "report"), "--cases", "1", "--variants", "largest",
                 "--methods", "copy_slice", "--proposer", str(tmp_path / "proposer.pt")]) == 0
    assert "warning" not in capsys.readouterr().err
    # The proposer alone runs no refiner: its own weights given alone mix nothing.
    bundled = Path(cli.__file__).parent / "inference" / "weights" / "proposer.pt"
    assert cli.main(["evaluate", "--out", str(tmp_path / "proposer-report"), "--cases", "1", "--variants", "largest",
                     "--methods", "proposer", "copy_slice", "--proposer", str(bundled)]) == 0
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize("swapped", [False, True])
def test_a_ct_given_as_the_annotation_is_named_so_not_read_as_labels(files, tmp_path, capsys, swapped):
    """The CT's positive HU values are not label values to choose among with --label: the CT given as the annotation
    too (or the two files swapped) is said to be so."""
    image = files["annotation"] if swapped else files["ct"]
    err = refused(files, tmp_path, capsys, image=image, annotation=files["ct"], message="looks like a CT")
    assert "--label" not in err and "--image" in err, err


@pytest.mark.parametrize("scale, unit", [(0.001, "metres"), (0.1, "centimetres")])
def test_a_spacing_not_in_millimetres_is_refused_saying_so(files, tmp_path, capsys, scale, unit):
    """A header giving the spacing in metres or centimetres made the painted slice "too small, not a dot" (or ran on a
    wrong scale): the spacing itself is named."""
    for name in ("ct", "annotation"):
        image = sitk.ReadImage(str(files[name]))
        image.SetSpacing(tuple(s * scale for s in SPACING))
        sitk.WriteImage(image, str(tmp_path / "in" / f"{unit}-{name}.nrrd"))
    err = refused(files, tmp_path, capsys, image=tmp_path / "in" / f"{unit}-ct.nrrd",
                  annotation=tmp_path / "in" / f"{unit}-annotation.nrrd", message="voxel spacing")
    assert "millimetres" in err and "not a dot" not in err, err


@pytest.mark.parametrize("axis, view", [(2, "sagittal"), (1, "coronal")])
def test_an_annotation_painted_in_a_sagittal_or_coronal_view_says_so(files, tmp_path, capsys, axis, view):
    """Painted in the sagittal (coronal) view: one plane across several axial slices. Erasing "the others" would
    leave a line; the message says to paint in the axial view."""
    painted = np.zeros_like(files["label"])
    plane = [slice(4, 12), slice(24, 40), slice(24, 40)]
    plane[axis] = 32
    painted[tuple(plane)] = 1
    write_like(painted, files["reference"], tmp_path / "in" / "plane.nrrd")
    err = refused(files, tmp_path, capsys, annotation=tmp_path / "in" / "plane.nrrd", message=f"one {view} plane")
    assert "axial view" in err, err


@pytest.mark.parametrize("keyframes", [(), ("--keyframes",)])
def test_a_sagittal_series_painted_in_the_axial_view_is_told_to_reorient_the_ct(files, tmp_path, capsys, keyframes):
    """A CT whose K slices run left to right, painted on one axial plane (across many of its slices): not "painted on
    N slices, ask for keyframes", which would propagate along the sagittal slices, but reorient the CT."""
    order = [1, 2, 0]  # the CT's x axis becomes K: sagittal slices
    ct = sitk.PermuteAxes(files["reference"], order)
    annotation = sitk.PermuteAxes(sitk.ReadImage(str(files["annotation"])), order)
    sitk.WriteImage(ct, str(tmp_path / "in" / "sagittal-ct.nrrd"))
    sitk.WriteImage(annotation, str(tmp_path / "in" / "sagittal-annotation.nrrd"))
    err = refused(files, tmp_path, capsys, None, *keyframes, image=tmp_path / "in" / "sagittal-ct.nrrd",
                  annotation=tmp_path / "in" / "sagittal-annotation.nrrd", message="The CT has sagittal slices")
    assert "painted in the axial view" in err and "Orient Scalar Volume" in err and "keyframes" not in err, err


@pytest.mark.parametrize("order, flips", [([0, 1, 2], [True, False, False]), ([1, 0, 2], [False, True, True])])
def test_an_annotation_of_the_ct_s_voxels_stored_in_another_axis_order_gives_the_same_result(files, tmp_path, capsys,
                                                                                           order, flips):
    """A label map holding the CT's own voxels, stored flipped or with its axes swapped (as tools that write NIfTI in
    RAS order do): the same voxels, so the same run, not "not on the image's voxel grid"."""
    stored = sitk.Flip(sitk.PermuteAxes(sitk.ReadImage(str(files["annotation"])), order), flips)
    assert stored.GetDirection() != files["reference"].GetDirection()
    sitk.WriteImage(stored, str(tmp_path / "in" / "reordered.nrrd"))
    assert segment(files, tmp_path / "usual.nrrd") == 0
    assert segment(files, tmp_path / "reordered.nrrd", annotation=tmp_path / "in" / "reordered.nrrd") == 0
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "reordered.nrrd"))),
                                  sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "usual.nrrd"))))


def test_a_4d_file_of_one_time_point_is_that_volume_and_one_of_two_is_refused(files, tmp_path, capsys):
    """Some converters write a single volume as 4D with one time point: it is read as the volume it holds."""
    ct = files["reference"]
    sitk.WriteImage(sitk.JoinSeries([ct]), str(tmp_path / "in" / "one-time-point.nrrd"))
    assert segment(files, tmp_path / "out.nrrd", image=tmp_path / "in" / "one-time-point.nrrd") == 0
    assert sitk.ReadImage(str(tmp_path / "out.nrrd")).GetSize() == ct.GetSize()
    sitk.WriteImage(sitk.JoinSeries([ct, ct]), str(tmp_path / "in" / "two-time-points.nrrd"))
    refused(files, tmp_path, capsys, tmp_path / "out2.nrrd", image=tmp_path / "in" / "two-time-points.nrrd",
            message="holds several volumes")


def test_a_2d_annotation_is_told_to_be_saved_as_a_3d_label_map(files, tmp_path, capsys):
    """The painted slice saved alone (a 2D file): the advice is for the annotation ("export a 3D label map on the
    CT's grid"), not the CT's ("load the whole series")."""
    painted = sitk.GetArrayFromImage(files["annotation"] if isinstance(files["annotation"], sitk.Image)
                                     else sitk.ReadImage(str(files["annotation"])))
    k = int(np.flatnonzero(painted.reshape(painted.shape[0], -1).any(axis=1))[0])
    sitk.WriteImage(sitk.GetImageFromArray(painted[k]), str(tmp_path / "in" / "slice.nrrd"))
    err = refused(files, tmp_path, capsys, annotation=tmp_path / "in" / "slice.nrrd", message="is 2D")
    assert "Export/import models and labelmaps" in err and "whole CT series" not in err, err


def test_train_on_a_cuda_device_this_machine_lacks_is_refused_before_any_case_is_made(tmp_path, capsys, monkeypatch):
    """It was refused after every case was loaded and made (45 s in a probe); --device tpu at once."""
    import torch

    from gastric_propagate.synthetic import generators

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.setattr(generators, "load_all", lambda *args, **kwargs: pytest.fail("cases were loaded"))
    code, captured, changed = run_command(tmp_path, capsys, "train", "--phantoms", "2", "--out", str(tmp_path / "w"),
                                          "--device", "cuda")
    assert code == 2 and "no CUDA device" in captured.err and not changed, captured.err
