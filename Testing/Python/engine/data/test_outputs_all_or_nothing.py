"""make-phantoms, evaluate and train write their outputs all or nothing, and train keeps existing weights.

A crash or SIGTERM in the middle of a run leaves the earlier files (or none) and no half-written report or
checkpoint: everything is staged beside its destination and renamed into place together at the end. The SIGTERM
tests run the real command in a child process, stop it in the middle (outputs staged, or rows computed), and
look at what is left. No network is trained here: ``train`` runs with 0 steps.
"""

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import gastric_propagate.cli as cli
from conftest import write_cases_folder
from gastric_propagate.evaluation import evaluate, reporting
from gastric_propagate.inference.checkpoints import load_checkpoint

ENGINE_TESTS = Path(__file__).resolve().parents[1]  # conftest.py, for the child processes


def snapshot(folder: Path) -> dict:
    return {path.relative_to(folder): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def partial_files(folder: Path) -> list:
    return sorted(str(path) for path in folder.rglob(".partial*"))


def terminate_midway(script: str, tmp_path: Path, *, staged: bool = True,
                     send: int = signal.SIGTERM) -> tuple[int, str]:
    """Runs ``script`` (which prints 'midway' in the middle of its run, then waits), sends SIGTERM (or ``send``)
    then, and returns (exit code, stderr). ``staged``: outputs are being written (staged) at that moment."""
    # Ctrl-C's KeyboardInterrupt even where this test runs with SIGINT ignored (a background job)
    preamble = (f"import signal, sys, time\nsys.path.insert(0, {str(ENGINE_TESTS)!r})\n"
                "signal.signal(signal.SIGINT, signal.default_int_handler)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    process = subprocess.Popen([sys.executable, "-c", preamble + textwrap.dedent(script)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        lines = [process.stdout.readline()]
        while lines[-1] and lines[-1].strip() != "midway":  # what the command prints first, up to 'midway'
            lines.append(process.stdout.readline())
        assert lines[-1].strip() == "midway", "".join(lines) + process.stderr.read()
        assert bool(partial_files(tmp_path)) == staged, partial_files(tmp_path)
        process.send_signal(send)
        code = process.wait(timeout=60)
    finally:
        process.kill()
    return code, process.stderr.read()


@pytest.fixture
def cases_folder(tmp_path):
    """Two small labelled cases in the <case>_image / <case>_label layout."""
    return write_cases_folder(tmp_path / "data", 2)


# ---------------------------------------------------------------------------------------------- make-phantoms


def test_make_phantoms_stopped_midway_leaves_no_phantom_and_the_old_files(tmp_path):
    out = tmp_path / "phantoms"
    out.mkdir()
    (out / "case_0_image.nrrd").write_bytes(b"an earlier phantom")
    code, err = terminate_midway(f"""
        import gastric_propagate.cli as cli
        import gastric_propagate.synthetic.phantom as phantom

        made = phantom.make_phantom

        def slow(seed, **overrides):  # small phantoms; waits once the first pair is staged
            if seed == 1:
                print("midway", flush=True)
                time.sleep(60)
            return made(seed, size_xy=64, **overrides)

        phantom.make_phantom = slow
        sys.exit(cli.main(["make-phantoms", "--out", {str(out)!r}, "--count", "3", "--seed-start", "0",
                           "--overwrite"]))
    """, tmp_path)
    assert code == 143 and "terminated" in err and "Traceback" not in err, err
    assert snapshot(out) == {Path("case_0_image.nrrd"): b"an earlier phantom"}
    assert partial_files(tmp_path) == []


def test_make_phantoms_writes_every_pair(tmp_path, monkeypatch, capsys):
    import gastric_propagate.synthetic.phantom as phantom

    made = phantom.make_phantom
    monkeypatch.setattr(phantom, "make_phantom", lambda seed, **overrides: made(seed, size_xy=64, **overrides))
    assert cli.main(["make-phantoms", "--out", str(tmp_path / "p"), "--count", "2", "--seed-start", "5"]) == 0
    assert sorted(path.name for path in (tmp_path / "p").iterdir()) == [
        "case_5_image.nrrd", "case_5_label.nrrd", "case_6_image.nrrd", "case_6_label.nrrd"]
    label = sitk.ReadImage(str(tmp_path / "p" / "case_6_label.nrrd"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(label), sitk.GetArrayFromImage(made(6, size_xy=64).label))



def test_make_phantoms_keeps_existing_files_unless_told_to_overwrite(tmp_path, monkeypatch, capsys):
    import gastric_propagate.synthetic.phantom as phantom

    made = phantom.make_phantom
    monkeypatch.setattr(phantom, "make_phantom", lambda seed, **overrides: made(seed, size_xy=64, **overrides))
    out = tmp_path / "p"
    out.mkdir()
    (out / "case_6_label.nrrd").write_bytes(b"an earlier label")
    arguments = ["make-phantoms", "--out", str(out), "--count", "2", "--seed-start", "5"]
    assert cli.main(arguments) == 2
    assert "case_6_label.nrrd" in capsys.readouterr().err
    assert snapshot(out) == {Path("case_6_label.nrrd"): b"an earlier label"}
    assert cli.main(arguments + ["--overwrite"]) == 0
    assert len(list(out.iterdir())) == 4 and (out / "case_6_label.nrrd").read_bytes() != b"an earlier label"

# ---------------------------------------------------------------------------------------------- evaluate

EARLIER_REPORT = {Path("results.csv"): b"an earlier report's rows", Path("summary.md"): b"# an earlier summary"}


def write_earlier_report(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, content in EARLIER_REPORT.items():
        (out / name).write_bytes(content)


def test_evaluate_stopped_midway_leaves_the_earlier_report(tmp_path, cases_folder):
    out = tmp_path / "report"
    write_earlier_report(out)
    code, err = terminate_midway(f"""
        import gastric_propagate.cli as cli
        from gastric_propagate.evaluation import evaluate

        copy = evaluate.BASELINES["copy_slice"]

        def slow(image, *args, **kwargs):  # waits in the second case, when the first one's rows are in
            slow.calls += 1
            if slow.calls == 2:
                print("midway", flush=True)
                time.sleep(60)
            return copy.run(image, *args, **kwargs)

        slow.calls = 0
        evaluate.BASELINES["copy_slice"] = evaluate.Method("copy_slice", copy.title, slow)
        sys.exit(cli.main(["evaluate", "--data", {str(cases_folder)!r}, "--out", {str(out)!r}, "--overwrite",
                           "--methods", "copy_slice", "--variants", "largest"]))
    """, tmp_path, staged=False)
    assert code == 143 and "terminated" in err and "Traceback" not in err, err
    assert snapshot(out) == EARLIER_REPORT, "no row of the stopped run, no summary or figure of it"
    assert partial_files(out) == []


def test_evaluate_report_that_fails_while_written_leaves_the_earlier_one(tmp_path, cases_folder, monkeypatch):
    from gastric_propagate.synthetic.generators import load_cases

    evaluation = evaluate.run_evaluation(load_cases(str(cases_folder), 2), methods=["copy_slice"],
                                         variants=["largest"], progress=False)
    out = tmp_path / "report"
    write_earlier_report(out)

    def broken_figure(rows, path, example=None):
        Path(path).write_bytes(b"half a PNG")
        raise ValueError("the figure failed")

    monkeypatch.setattr(reporting, "write_figure", broken_figure)  # write_reports draws through reporting's
    with pytest.raises(ValueError, match="the figure failed"):
        evaluate.write_reports(evaluation, out, {"data": "two cases", "command": "pytest"})
    assert snapshot(out) == EARLIER_REPORT
    assert partial_files(out) == []


def test_evaluate_report_replaces_the_earlier_one_whole(tmp_path, cases_folder):
    from gastric_propagate.synthetic.generators import load_cases

    out = tmp_path / "report"
    write_earlier_report(out)
    (out / evaluate.CONFIDENCE_FILE).write_text("case,variant,slice,confidence,dice\nold,largest,3,0.9,0.8\n")
    evaluation = evaluate.run_evaluation(load_cases(str(cases_folder), 2), methods=["copy_slice"],
                                         variants=["largest"], progress=False)
    assert not evaluation.confidence  # no engine method: this report has no confidence rows

    paths = evaluate.write_reports(evaluation, out, {"data": "two cases", "command": "pytest"})

    assert sorted(path.name for path in out.iterdir()) == ["example.npz", "figure.png", "results.csv", "summary.md"]
    assert len(evaluate.read_csv(paths["csv"])) == 2 and "two cases" in paths["summary"].read_text()
    with np.load(paths["example"]) as example:
        assert str(example["case"]) == "case0" and example["mask_copy_slice"].any()


# ---------------------------------------------------------------------------------------------- train


def train_argv(data: Path, out: Path, *extra) -> list:
    """A train command that trains nothing (0 steps): it crops, runs the bundled proposer once, and saves."""
    return ["train", "--data", str(data), "--out", str(out), "--init", "bundled", "--proposer-steps", "0",
            "--refiner-steps", "0", "--validation-phantoms", "0", "--workers", "1", "--device", "cpu", *extra]


def earlier_weights(out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    for stage in ("proposer", "refiner"):
        (out / f"{stage}.pt").write_bytes(f"earlier {stage} weights".encode())
    return snapshot(out)


def test_train_stopped_while_saving_leaves_the_earlier_pair(tmp_path, cases_folder):
    out = tmp_path / "weights"
    before = earlier_weights(out)
    code, err = terminate_midway(f"""
        import gastric_propagate.cli as cli
        from gastric_propagate.data import outputs

        stage = outputs.OutputBatch.file

        def slow_file(self, path, write):  # waits once the proposer is staged, before the refiner
            staged = stage(self, path, write)
            print("midway", flush=True)
            time.sleep(60)
            return staged

        outputs.OutputBatch.file = slow_file
        sys.exit(cli.main({train_argv(cases_folder, out, "--overwrite")!r}))
    """, tmp_path)
    assert code == 143 and "terminated" in err and "Traceback" not in err, err
    assert snapshot(out) == before, "the earlier pair, not a new proposer beside an old refiner"
    assert partial_files(out) == []


def test_train_interrupted_while_exporting_to_onnx_leaves_the_earlier_weights_and_their_onnx_files(tmp_path,
                                                                                                    cases_folder):
    out = tmp_path / "weights"
    earlier_weights(out)
    for name in ("proposer.onnx", "refiner.onnx", "proposer.int8.onnx", "refiner.int8.onnx"):
        (out / name).write_bytes(f"earlier {name}".encode())
    before = snapshot(out)
    code, err = terminate_midway(f"""
        import gastric_propagate.cli as cli
        from gastric_propagate.inference import onnx_networks

        def slow_export(network):  # Ctrl-C comes while the first network is exported
            print("midway", flush=True)
            time.sleep(60)

        onnx_networks._exported_model = slow_export
        sys.exit(cli.main({train_argv(cases_folder, out, "--overwrite")!r}))
    """, tmp_path, send=signal.SIGINT)
    assert code == 130 and "cancelled: no output was half-written" in err and "Traceback" not in err, err
    assert snapshot(out) == before, "no new checkpoints beside the earlier ONNX files"
    assert partial_files(out) == []


def test_train_refuses_to_replace_weights_unless_overwrite(tmp_path, cases_folder, capsys, monkeypatch):
    import gastric_propagate.data.cases as cases

    out = tmp_path / "weights"
    out.mkdir()
    (out / "refiner.pt").write_bytes(b"earlier refiner weights")
    for stage in ("proposer", "refiner"):  # the int8 backend would refuse them beside new weights: they go with them
        (out / f"{stage}.int8.onnx").write_bytes(b"int8 copy of the earlier weights")
    before = snapshot(out)
    real_folder_cases = cases.folder_cases
    monkeypatch.setattr(cases, "folder_cases", lambda *args: pytest.fail("the data was read before the check"))

    assert cli.main(train_argv(cases_folder, out)) == 2
    err = capsys.readouterr().err
    assert f"The output {out / 'proposer.int8.onnx'} already exists" in err and "--overwrite" in err, err
    assert "Traceback" not in err and snapshot(out) == before

    monkeypatch.setattr(cases, "folder_cases", real_folder_cases)
    assert cli.main(train_argv(cases_folder, out, "--overwrite")) == 0
    for stage in ("proposer", "refiner"):
        assert load_checkpoint(out / f"{stage}.pt", stage=stage).training["command"].endswith("--overwrite")
    assert sorted(path.name for path in out.iterdir()) == ["proposer.onnx", "proposer.pt", "refiner.onnx",
                                                           "refiner.pt"]  # the checkpoints and their ONNX files
    said = capsys.readouterr().out
    assert f"removed {out / 'proposer.int8.onnx'}, {out / 'refiner.int8.onnx'}" in said
    assert f"'gastric-propagate export-onnx --int8 --weights {out}' makes new int8 copies" in said
    from gastric_propagate.training import quantization  # the command works as printed: the float pair is kept

    monkeypatch.setattr(quantization, "CALIBRATION", {"phantom": range(0, 1)})
    float_files = {path: path.stat().st_mtime_ns for path in out.glob("*[!8].onnx")}
    assert cli.main(["export-onnx", "--int8", "--weights", str(out)]) == 0, capsys.readouterr().err
    assert {path: path.stat().st_mtime_ns for path in out.glob("*[!8].onnx")} == float_files
    assert (out / "proposer.int8.onnx").is_file() and (out / "refiner.int8.onnx").is_file()


def test_an_onnx_export_that_fails_after_training_keeps_the_trained_weights(tmp_path, cases_folder, capsys,
                                                                           monkeypatch):
    """The weights are the training's result: an export that fails after it keeps them, removes the ONNX files of the
    weights they replace (they would not match), and says how to make new ones (exit 3)."""
    from gastric_propagate.errors import WeightsError
    from gastric_propagate.inference import onnx_networks

    out = tmp_path / "weights"
    earlier_weights(out)
    for name in ("proposer.onnx", "refiner.onnx", "proposer.int8.onnx", "refiner.int8.onnx"):
        (out / name).write_bytes(f"earlier {name}".encode())

    export = onnx_networks._exported_model
    calls = []

    def failing_export(network):  # the proposer's export staged, the refiner's fails
        calls.append(network)
        if len(calls) == 2:
            raise WeightsError("The exporter failed.")
        return export(network)

    monkeypatch.setattr(onnx_networks, "_exported_model", failing_export)
    assert cli.main(train_argv(cases_folder, out, "--overwrite")) == 3
    err = capsys.readouterr().err
    assert f"The weights were written to {out}, but their ONNX export failed (The exporter failed.)" in err, err
    assert f"export-onnx --weights {out}" in err and "Traceback" not in err
    assert sorted(path.name for path in out.iterdir()) == ["proposer.pt", "refiner.pt"]
    for stage in ("proposer", "refiner"):
        assert load_checkpoint(out / f"{stage}.pt", stage=stage).training["command"].endswith("--overwrite")
    assert partial_files(out) == []


def test_train_without_the_onnx_exporter_is_refused_before_it_trains(tmp_path, cases_folder, capsys, monkeypatch):
    import gastric_propagate.data.cases as cases
    from gastric_propagate.errors import WeightsError
    from gastric_propagate.inference import onnx_networks

    def missing():
        raise WeightsError("Exporting to ONNX needs the onnx and onnxscript packages (none here).")

    monkeypatch.setattr(onnx_networks, "check_exporter", missing)
    monkeypatch.setattr(cases, "folder_cases", lambda *args: pytest.fail("the data was read before the check"))
    assert cli.main(train_argv(cases_folder, tmp_path / "weights")) == 3
    assert "needs the onnx and onnxscript packages" in capsys.readouterr().err
    assert not (tmp_path / "weights").exists()


def test_train_never_replaces_the_weights_it_starts_from(tmp_path, cases_folder, capsys):
    out = tmp_path / "weights"
    before = earlier_weights(out)
    assert cli.main(train_argv(cases_folder, out, "--init", str(out), "--overwrite")) == 2
    err = capsys.readouterr().err
    assert "destroy your input" in err and "Traceback" not in err, err
    assert snapshot(out) == before


def test_train_with_zero_steps_keeps_the_networks_as_they_were(tmp_path, cases_folder):
    from gastric_propagate.inference.checkpoints import bundled_weights

    assert cli.main(train_argv(cases_folder, tmp_path / "weights", "--init", "bundled")) == 0
    for stage in ("proposer", "refiner"):
        written = load_checkpoint(tmp_path / "weights" / f"{stage}.pt", stage=stage)
        bundled = load_checkpoint(bundled_weights(stage), stage=stage)
        state = bundled.network.state_dict()
        assert all(torch.equal(tensor, state[name]) for name, tensor in written.network.state_dict().items())
        assert written.training["final_loss"] == {"proposer": None, "refiner": None}
        for started_from in ("proposer", "refiner"):  # the weights it started from, named by their bytes
            digest = hashlib.sha256(Path(bundled_weights(started_from)).read_bytes()).hexdigest()
            assert f"{started_from} sha256 {digest}" in written.training["data"]
        # What the weights it started from learned is what these have seen too (evaluate and the CV script read it).
        learned = set(bundled.training["case_names"])
        assert learned and learned <= set(written.training["earlier_case_names"])


def test_train_prompt_channel_with_zero_steps_widens_the_proposer_and_keeps_what_it_computes(tmp_path, cases_folder):
    from gastric_propagate.inference.checkpoints import bundled_weights

    assert cli.main(train_argv(cases_folder, tmp_path / "weights", "--init", "bundled", "--prompt-channel")) == 0
    written = load_checkpoint(tmp_path / "weights" / "proposer.pt", stage="proposer")
    bundled = load_checkpoint(bundled_weights("proposer"), stage="proposer")
    assert written.in_channels == 5 and written.training["config"]["prompt_channel"] is True
    x = torch.rand(2, 5, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(written.network(x), bundled.network(x[:, :4]), rtol=1e-5, atol=1e-5)


def test_train_from_scratch_builds_networks_of_the_size_asked_for(tmp_path, cases_folder):
    assert cli.main(["train", "--data", str(cases_folder), "--out", str(tmp_path / "weights"), "--proposer-steps", "1",
                     "--refiner-steps", "1", "--validation-phantoms", "0", "--workers", "1", "--device", "cpu",
                     "--depth", "4", "--base-channels", "4", "--window", "64"]) == 0
    for stage in ("proposer", "refiner"):
        written = load_checkpoint(tmp_path / "weights" / f"{stage}.pt", stage=stage)
        assert written.network.config["depth"] == 4 and written.network.config["base_channels"] == 4
        assert written.training["config"]["depth"] == 4 and written.training["config"]["window"] == 64


def test_checkpoint_written_alone_is_whole_or_absent(tmp_path, monkeypatch):
    from gastric_propagate.errors import InputError
    from gastric_propagate.inference.checkpoints import save_checkpoint
    from gastric_propagate.inference.networks import UNet2D
    from gastric_propagate.inference.preprocessing import Preprocessing

    path = tmp_path / "proposer.pt"
    path.write_bytes(b"earlier weights")

    def disk_full(payload, destination):
        Path(destination).write_bytes(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(InputError, match="No space left on device"):
        save_checkpoint(path, stage="proposer", network=UNet2D(in_channels=4, base_channels=2, depth=1),
                        preprocessing=Preprocessing(), training={})
    assert snapshot(tmp_path) == {Path("proposer.pt"): b"earlier weights"}


def test_a_fine_tuning_records_the_size_of_the_networks_it_started_from(tmp_path, cases_folder):
    from gastric_propagate.inference.checkpoints import save_checkpoint
    from gastric_propagate.inference.networks import UNet2D
    from gastric_propagate.inference.preprocessing import Preprocessing

    start = tmp_path / "start"
    for stage, channels in (("proposer", 4), ("refiner", 6)):
        save_checkpoint(start / f"{stage}.pt", stage=stage, network=UNet2D(in_channels=channels, base_channels=4,
                                                                           depth=2),
                        preprocessing=Preprocessing(), training={"case_names": ["lidc_0001_n1"]})
    assert cli.main(train_argv(cases_folder, tmp_path / "weights", "--init", str(start))) == 0
    for stage in ("proposer", "refiner"):
        written = load_checkpoint(tmp_path / "weights" / f"{stage}.pt", stage=stage)
        assert written.network.config["depth"] == 2
        assert (written.training["config"]["depth"], written.training["config"]["base_channels"]) == (2, 4)
        assert written.training["earlier_case_names"] == ["lidc_0001_n1"]
