"""The ONNX Runtime backend: exported networks give PyTorch's outputs, a run through them loads no torch, auto takes
PyTorch where an NVIDIA driver is visible, and a missing onnxruntime or ONNX file falls back to PyTorch (auto) or is
refused clearly (onnx)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch import nn

from conftest import SPACING, make_volume, segment_demo_phantom
from gastric_propagate.cli import main
from gastric_propagate.errors import InputError, WeightsError
from gastric_propagate.data.annotation import annotation_from_label
from gastric_propagate.inference.checkpoints import bundled_weights, load_checkpoint, save_checkpoint
from gastric_propagate.inference.networks import TorchRunner, UNet2D, inference_copy
from gastric_propagate.inference.onnx_networks import (METADATA_KEY, TOLERANCE, available_threads, export_onnx,
                                                       export_pair, load_onnx, onnx_path, weights_path)
from gastric_propagate.inference import backends
from gastric_propagate.inference.backends import choose_backend
from gastric_propagate.inference.pipeline import Segmenter
from gastric_propagate.inference.preprocessing import Preprocessing

STAGES = {"proposer": 4, "refiner": 6}


def _tiny(in_channels: int, seed: int = 0) -> UNet2D:
    """A tiny U-Net whose batch norms hold statistics away from their initial values, as after training."""
    torch.manual_seed(seed)
    network = UNet2D(in_channels=in_channels, base_channels=4, depth=2)
    for module in network.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 1.5)
    return network.eval()


def _save_pair(folder, seed: int = 0) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    return {stage: save_checkpoint(folder / f"{stage}.pt", stage=stage, network=_tiny(channels, seed),
                                   preprocessing=Preprocessing(), training={"data": "unit test"})
            for stage, channels in STAGES.items()}


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    """A tiny proposer and refiner saved as checkpoints, with their ONNX files beside them."""
    weights = _save_pair(tmp_path_factory.mktemp("tiny-weights"))
    export_pair(weights, overwrite=False)
    return weights


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_onnx_runtime_gives_pytorchs_probabilities(tiny_pair, stage):
    network = load_checkpoint(tiny_pair[stage], stage=stage).network
    loaded = load_onnx(onnx_path(tiny_pair[stage]), stage=stage)
    expected = TorchRunner(inference_copy(network))
    rng = np.random.default_rng(1)
    for shape in ((1, STAGES[stage], 16, 16), (5, STAGES[stage], 24, 40)):  # batch, height and width are free
        batch = rng.normal(size=shape).astype(np.float32)
        found = loaded(batch)
        assert found.shape == (shape[0], shape[2], shape[3]) and found.dtype == np.float32
        np.testing.assert_allclose(found, expected(batch), rtol=0, atol=TOLERANCE)
    assert loaded.preprocessing == Preprocessing() and loaded.training == {"data": "unit test"}
    description = json.loads(loaded.session.get_modelmeta().custom_metadata_map[METADATA_KEY])
    assert description["stage"] == stage and description["max_difference"] <= TOLERANCE



@pytest.mark.parametrize("threads, halves, second_session", [(1, False, False), (2, True, False), (3, True, False),
                                                             (4, True, True)])
def test_a_batch_run_in_halves_gives_each_sample_what_one_run_gives(tiny_pair, threads, halves, second_session):
    """Two or more threads cut a batch in two, run side by side (one session for one thread per half, a session
    each for more); every sample's probabilities are those of one single-threaded run over the whole batch."""
    path = onnx_path(tiny_pair["refiner"])
    whole = load_onnx(path, stage="refiner", threads=1)
    split = load_onnx(path, stage="refiner", threads=threads)
    assert (split.halves is not None, split.second_session is not None) == (halves, second_session)
    if second_session:
        assert split.second_session is not split.session
    rng = np.random.default_rng(2)
    for size in (1, 2, 3, 6):
        batch = rng.normal(size=(size, STAGES["refiner"], 24, 16)).astype(np.float32)
        found = split(batch)
        assert found.shape == (size, 24, 16)
        np.testing.assert_array_equal(found, whole(batch))
        np.testing.assert_array_equal(found[-1], whole(batch[-1:])[0])  # the last sample, run alone


def test_the_threads_follow_omp_num_threads_else_the_cpus_given(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert available_threads() == 3
    for unset in ("", "0", "two"):
        monkeypatch.setenv("OMP_NUM_THREADS", unset)
        assert available_threads() == (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                       else os.cpu_count())

@pytest.mark.parametrize("name", ["proposer.pt", "my.tuned.proposer.pt"])
@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_an_onnx_file_names_the_checkpoint_it_came_from(tmp_path, name, precision):
    """The staleness check reads the checkpoint beside an ONNX file: its name must come back, dots and all."""
    checkpoint = tmp_path / name
    expected = name[:-len(".pt")] + (".int8.onnx" if precision == "int8" else ".onnx")
    assert onnx_path(checkpoint, precision).name == expected
    assert weights_path(onnx_path(checkpoint, precision)) == checkpoint


def test_the_bundled_onnx_files_were_exported_from_the_bundled_weights():
    """Fails when the bundled weights change without their ONNX files: run
    'gastric-propagate export-onnx --weights GastricPropagate/gastric_propagate/inference/weights --overwrite'."""
    for stage in STAGES:
        path = onnx_path(bundled_weights(stage))
        assert path.stat().st_size < 5e6, "the bundled ONNX files stay small"
        assert load_onnx(path, stage=stage).preprocessing == load_checkpoint(bundled_weights(stage),
                                                                             stage=stage).preprocessing


def test_the_onnx_path_segments_a_phantom_as_the_pytorch_path_does():
    """The bundled networks under ONNX Runtime and under PyTorch: the same masks, confidence and stop reasons."""
    _, results = segment_demo_phantom("onnx", "torch")
    onnx, pytorch = results["onnx"], results["torch"]
    assert onnx.mask.any()
    for name in ("mask", "proposer_mask", "network_mask"):
        np.testing.assert_array_equal(getattr(onnx, name), getattr(pytorch, name), err_msg=name)
    assert onnx.slice_confidence == pytorch.slice_confidence and onnx.stop_reasons == pytorch.stop_reasons


def _segment_in_a_child(folder, flags: list, before: str = "") -> str:
    """Runs ``segment`` on a small volume in a fresh interpreter (after the statements ``before``); returns its exit
    code and whether torch and onnxruntime were imported, as one line "0 False True"."""
    image, label = make_volume(depth=16, size=64, centre_z=8, radius_mm=10.0)
    for name, array in (("ct.nrrd", image), ("painted.nrrd", annotation_from_label(label))):
        written = sitk.GetImageFromArray(array)
        written.SetSpacing(SPACING)
        sitk.WriteImage(written, str(folder / name))
    code = ("import sys\n"
            f"{before}"
            "from gastric_propagate.cli import main\n"
            f"code = main(['segment', '--image', {str(folder / 'ct.nrrd')!r}, '--annotation', "
            f"{str(folder / 'painted.nrrd')!r}, '--output', {str(folder / 'out.nrrd')!r}] + {flags!r})\n"
            "print(code, 'torch' in sys.modules, 'onnxruntime' in sys.modules)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    return run.stdout.splitlines()[-1] if run.stdout else run.stderr


def test_a_segment_run_through_onnx_runtime_loads_no_torch(tmp_path):
    assert _segment_in_a_child(tmp_path, ["--backend", "onnx"]) == "0 False True"


def test_auto_without_a_visible_gpu_driver_runs_onnx_runtime_and_never_imports_torch(tmp_path):
    no_driver = ("import gastric_propagate.inference.backends as backends\n"
                 "backends.nvidia_driver_visible = lambda: False\n")
    assert _segment_in_a_child(tmp_path, [], before=no_driver) == "0 False True"  # --backend auto --device auto


def test_auto_with_a_visible_gpu_driver_chooses_pytorch(tiny_pair, monkeypatch):
    proposer, refiner = tiny_pair["proposer"], tiny_pair["refiner"]
    monkeypatch.setattr(backends, "nvidia_driver_visible", lambda: True)
    assert choose_backend("auto", "auto", proposer, refiner) == "torch"  # then CUDA when torch can use it
    assert choose_backend("auto", "cpu", proposer, refiner) == "onnx"  # the CPU asked for: ONNX Runtime still
    assert choose_backend("onnx", "auto", proposer, refiner) == "onnx"
    segmenter = Segmenter(proposer, refiner)
    assert segmenter.backend == "torch"
    assert segmenter.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed: ONNX Runtime on the CPU
    assert choose_backend("auto", "auto", proposer, refiner) == "onnx"


@pytest.mark.parametrize("platform, found, expected", [
    ("linux", {"/proc/driver/nvidia/version"}, True), ("linux", set(), False),
    ("win32", {"nvcuda"}, True), ("win32", set(), False), ("darwin", {"/proc/driver/nvidia/version", "nvcuda"}, False)])
def test_the_gpu_driver_check_looks_where_each_system_keeps_it(monkeypatch, platform, found, expected):
    import ctypes.util

    monkeypatch.setattr(backends.sys, "platform", platform)
    monkeypatch.setattr(backends.os.path, "exists", lambda path: path in found)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: name if name in found else None)
    assert backends.nvidia_driver_visible() is expected


def test_auto_chooses_onnx_runtime_only_where_it_can_run(tiny_pair, tmp_path, monkeypatch):
    proposer, refiner = tiny_pair["proposer"], tiny_pair["refiner"]
    monkeypatch.setattr(backends, "nvidia_driver_visible", lambda: False)  # as on a machine without a GPU
    assert choose_backend("auto", "auto", proposer, refiner) == "onnx"
    assert choose_backend("auto", "cpu", proposer, refiner) == "onnx"
    assert choose_backend("torch", "cpu", proposer, refiner) == "torch"
    assert choose_backend("auto", "cuda", proposer, refiner) == "torch"
    with pytest.raises(InputError, match="ONNX Runtime runs the networks on the CPU.*--backend torch"):
        choose_backend("onnx", "cuda:0", proposer, refiner)
    without = _save_pair(tmp_path / "no-onnx")  # checkpoints without ONNX files beside them
    assert choose_backend("auto", "cpu", without["proposer"], without["refiner"]) == "torch"
    with pytest.raises(WeightsError, match=r"No ONNX file beside the weights .*proposer\.onnx.*export-onnx"):
        choose_backend("onnx", "cpu", without["proposer"], without["refiner"])
    with pytest.raises(InputError, match="'tensorrt' is not a backend: use auto, torch, torch-bf16, onnx or onnx-int8"):
        choose_backend("tensorrt", "cpu")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if onnxruntime were not installed
    assert choose_backend("auto", "cpu", proposer, refiner) == "torch"
    with pytest.raises(InputError, match="needs onnxruntime, which is not installed"):
        choose_backend("onnx", "cpu", proposer, refiner)
    assert Segmenter(proposer, refiner, device="cpu").backend == "torch"


def test_an_onnxruntime_that_is_installed_but_does_not_load_is_named_as_the_cause(tiny_pair, monkeypatch, caplog):
    """A DLL missing on Windows: the run fell back to PyTorch, and without it the only error named PyTorch, or (onnx
    asked for) ended in a traceback."""
    from gastric_propagate.inference import pipeline

    def unloadable(*args, **kwargs):
        raise ImportError("DLL load failed while importing onnxruntime_pybind11_state")

    monkeypatch.setattr(pipeline, "load_onnx", unloadable)
    monkeypatch.setattr(pipeline, "choose_backend", lambda backend, *args: "onnx" if backend == "auto" else backend)
    cause = r"ONNX Runtime, .* is installed but cannot be loaded \(DLL load failed .*Visual C\+\+ Redistributable"
    with pytest.raises(InputError, match=cause):
        Segmenter(tiny_pair["proposer"], tiny_pair["refiner"], device="cpu", backend="onnx")
    with caplog.at_level(logging.WARNING):
        assert Segmenter(tiny_pair["proposer"], tiny_pair["refiner"], device="cpu").backend == "torch"
    assert "cannot be loaded (DLL load failed" in caplog.text and "with PyTorch instead" in caplog.text

    def no_torch(device):
        raise InputError("PyTorch cannot be loaded (No module named 'torch').")

    monkeypatch.setattr(pipeline, "resolve_device", no_torch)
    with pytest.raises(InputError, match=cause):
        Segmenter(tiny_pair["proposer"], tiny_pair["refiner"], device="cpu")


def test_an_onnx_file_not_made_from_the_weights_beside_it_is_not_used(tiny_pair, tmp_path, caplog):
    weights = _save_pair(tmp_path / "stale", seed=1)  # other weights
    for stage, path in weights.items():
        onnx_path(path).write_bytes(onnx_path(tiny_pair[stage]).read_bytes())  # exported from other weights
    with pytest.raises(WeightsError, match="was not exported from the proposer weights beside it.*export-onnx"):
        Segmenter(weights["proposer"], weights["refiner"], device="cpu", backend="onnx")
    with caplog.at_level(logging.WARNING):
        segmenter = Segmenter(weights["proposer"], weights["refiner"], device="cpu")
    assert segmenter.backend == "torch" and "Running the networks with PyTorch instead" in caplog.text


def test_swapped_corrupt_and_missing_onnx_files_are_refused_clearly(tiny_pair, tmp_path):
    with pytest.raises(WeightsError, match="swapped"):
        load_onnx(onnx_path(tiny_pair["refiner"]), stage="proposer")
    (tmp_path / "proposer.onnx").write_bytes(b"not a network")
    with pytest.raises(WeightsError, match="cannot be read .*corrupt"):
        load_onnx(tmp_path / "proposer.onnx", stage="proposer")
    with pytest.raises(WeightsError, match="does not exist.*export-onnx"):
        load_onnx(tmp_path / "refiner.onnx", stage="refiner")


def test_export_refuses_a_checkpoint_it_cannot_use_and_writes_nothing(tmp_path):
    path = save_checkpoint(tmp_path / "proposer.pt", stage="proposer", network=_tiny(4), preprocessing=Preprocessing(),
                           training={})
    with pytest.raises(WeightsError, match="swapped"):
        export_onnx(path, stage="refiner")
    assert not onnx_path(path).exists()


def test_the_export_command_writes_both_files_and_keeps_existing_ones_unless_overwrite(tmp_path, capsys):
    """Files exported from these very checkpoints (as 'train' leaves them) are up to date: nothing to do, exit 0.
    Other files in the way are kept and refused without --overwrite."""
    weights = _save_pair(tmp_path / "weights")
    assert main(["export-onnx", "--weights", str(tmp_path / "weights")]) == 0
    assert "proposer.onnx" in capsys.readouterr().out
    written = {stage: onnx_path(path).read_bytes() for stage, path in weights.items()}
    assert main(["export-onnx", "--weights", str(tmp_path / "weights")]) == 0
    assert "were exported from these weights already: nothing to do" in capsys.readouterr().out
    assert {stage: onnx_path(path).read_bytes() for stage, path in weights.items()} == written
    onnx_path(weights["refiner"]).write_bytes(written["proposer"])  # not the refiner's export
    assert main(["export-onnx", "--weights", str(tmp_path / "weights")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert onnx_path(weights["refiner"]).read_bytes() == written["proposer"]
    assert main(["export-onnx", "--weights", str(tmp_path / "weights"), "--overwrite"]) == 0
    assert all(load_onnx(onnx_path(path), stage=stage) for stage, path in weights.items())


def test_an_onnx_output_holding_nan_never_passes_the_export_check():
    """max(0.0, nan) is 0.0 in Python: a NaN difference must count as no match, not as none."""
    from gastric_propagate.inference import onnx_networks

    network = _tiny(4)

    class NanSession:
        def run(self, outputs, feeds):
            batch = next(iter(feeds.values()))
            return [np.full((batch.shape[0], *batch.shape[2:]), np.nan, dtype=np.float32)]

    assert not onnx_networks._largest_difference(network, NanSession()) <= TOLERANCE


@pytest.mark.skipif(os.name == "nt", reason="a POSIX shell")
@pytest.mark.parametrize("folder", ["/data/weights", "/data/my weights", "/data/it's", '/data/a"b$c`d\\e'])
def test_the_export_advice_is_a_command_a_shell_reads_back_as_printed(folder):
    from gastric_propagate.inference.onnx_networks import export_hint

    command = export_hint("int8", folder).split(" with '", 1)[1].rsplit("'", 1)[0]
    words = subprocess.run(["sh", "-c", "printf '%s\\0' " + command], capture_output=True, check=True).stdout
    assert words.decode().split("\0")[:-1] == ["gastric-propagate", "export-onnx", "--int8", "--weights", folder]
