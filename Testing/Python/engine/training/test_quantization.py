"""The int8 copies of the networks (--backend onnx-int8): calibrated and checked when written, described as int8,
tied to the weights they came from, close to the float networks' masks, and refused clearly when missing or wrong."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import segment_demo_phantom
from gastric_propagate.data.outputs import OutputBatch
from gastric_propagate.errors import WeightsError
from gastric_propagate.inference.backends import choose_backend
from gastric_propagate.inference.checkpoints import bundled_weights
from gastric_propagate.inference.onnx_networks import METADATA_KEY, load_onnx, onnx_path
from gastric_propagate.inference.pipeline import Segmenter
from gastric_propagate.metrics import dice
from gastric_propagate.training import quantization

STAGES = ("proposer", "refiner")
ONE_CASE_EACH = {"phantom": range(0, 1), "thorax": range(0, 1)}  # a short calibration, for the tests


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The bundled checkpoints copied to a folder of their own, exported there with their int8 copies."""
    folder = tmp_path_factory.mktemp("weights")
    weights = {stage: shutil.copy(bundled_weights(stage), folder / f"{stage}.pt") for stage in STAGES}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(quantization, "CALIBRATION", ONE_CASE_EACH)
        written = quantization.export_with_int8(weights, overwrite=False)
    return weights, written


def test_export_writes_int8_copies_that_describe_their_calibration(exported):
    weights, written = exported
    assert sorted(path.name for path in written) == ["proposer.int8.onnx", "proposer.onnx", "refiner.int8.onnx",
                                                     "refiner.onnx"]
    for stage, path in weights.items():
        int8 = onnx_path(path, "int8")
        assert int8.stat().st_size < onnx_path(path).stat().st_size / 2  # 8-bit weights
        loaded = load_onnx(int8, stage=stage, precision="int8")
        description = json.loads(loaded.session.get_modelmeta().custom_metadata_map[METADATA_KEY])
        assert description["precision"] == "int8"
        assert description["calibration"]["cases"] == {"phantom": [0, 0], "thorax": [0, 0]}
        assert description["calibration"]["pixel_agreement"] >= quantization.MIN_PIXEL_AGREEMENT
        with pytest.raises(WeightsError, match="holds a int8 network, but a float32 one was expected"):
            load_onnx(int8, stage=stage)
        with pytest.raises(WeightsError, match="holds a float32 network, but a int8 one was expected"):
            load_onnx(onnx_path(path), stage=stage, precision="int8")
    assert choose_backend("onnx-int8", "cpu", weights["proposer"], weights["refiner"]) == "onnx-int8"
    assert choose_backend("auto", "cpu", weights["proposer"], weights["refiner"]) == "onnx"  # auto never takes int8


def test_int8_copies_are_added_beside_the_float_pair_train_wrote_without_overwrite(tmp_path, monkeypatch):
    """Right after train (which writes the float pair): --int8 adds the copies, keeps the float files untouched."""
    from gastric_propagate.inference.onnx_networks import export_pair

    weights = {stage: shutil.copy(bundled_weights(stage), tmp_path / f"{stage}.pt") for stage in STAGES}
    export_pair(weights, overwrite=False)
    floats = {stage: onnx_path(path).read_bytes() for stage, path in weights.items()}
    monkeypatch.setattr(quantization, "CALIBRATION", ONE_CASE_EACH)
    written = quantization.export_with_int8(weights, overwrite=False)
    assert sorted(path.name for path in written) == ["proposer.int8.onnx", "refiner.int8.onnx"]
    assert {stage: onnx_path(path).read_bytes() for stage, path in weights.items()} == floats
    # A float file from other weights is no export of these: refused, as any file in the way.
    shutil.copy(tmp_path / "proposer.pt", tmp_path / "refiner.pt")  # the refiner checkpoint changed since
    for stage, path in weights.items():
        onnx_path(path, "int8").unlink()
    with pytest.raises(Exception, match="already exists"):
        quantization.export_with_int8(weights, overwrite=False)


def test_an_int8_copy_that_disagrees_with_its_network_is_not_written(exported, monkeypatch):
    weights, _ = exported
    before = {stage: onnx_path(path, "int8").read_bytes() for stage, path in weights.items()}
    monkeypatch.setattr(quantization, "CALIBRATION", ONE_CASE_EACH)
    monkeypatch.setattr(quantization, "MIN_PIXEL_AGREEMENT", 1.01)  # no copy can agree that well
    with pytest.raises(WeightsError, match="agrees with it on .* of the calibration pixels.*--backend onnx"):
        with OutputBatch(overwrite=True) as outputs:
            quantization.quantize_pair(weights, outputs=outputs)
    assert {stage: onnx_path(path, "int8").read_bytes() for stage, path in weights.items()} == before


def test_missing_int8_copies_are_refused_with_the_command_that_makes_them(exported, tmp_path, monkeypatch, capsys):
    import shlex

    import gastric_propagate.cli as cli

    weights = {}
    for stage, path in exported[0].items():  # the checkpoints and their float files, without the int8 copies
        weights[stage] = shutil.copy(path, tmp_path / path.name)
        shutil.copy(onnx_path(path), onnx_path(weights[stage]))
    with pytest.raises(WeightsError, match=r"No int8 ONNX file beside the weights .*proposer\.int8\.onnx.*"
                                           r"export-onnx --int8") as refused:
        Segmenter(weights["proposer"], weights["refiner"], backend="onnx-int8")
    assert Segmenter(weights["proposer"], weights["refiner"], backend="onnx").backend == "onnx"
    # The command it gives works as printed: the float files there need --overwrite.
    command = str(refused.value).split("'")[-2]
    assert command == f"gastric-propagate export-onnx --int8 --weights {tmp_path} --overwrite"
    monkeypatch.setattr(quantization, "CALIBRATION", ONE_CASE_EACH)
    assert cli.main(shlex.split(command)[1:]) == 0, capsys.readouterr().err
    assert Segmenter(weights["proposer"], weights["refiner"], backend="onnx-int8").backend == "onnx-int8"


def test_the_bundled_int8_copies_segment_the_demo_phantom_close_to_the_float_networks():
    """Fails when the bundled weights change without their int8 copies: run 'gastric-propagate export-onnx --weights
    GastricPropagate/gastric_propagate/inference/weights --overwrite --int8'."""
    label, results = segment_demo_phantom("onnx", "onnx-int8")
    float32, int8 = results["onnx"], results["onnx-int8"]
    assert dice(int8.network_mask, float32.network_mask) > 0.97
    assert dice(int8.mask, float32.mask) > 0.97
    assert abs(dice(int8.mask, label) - dice(float32.mask, label)) < 0.02


@pytest.mark.parametrize("source", ["exported", "bundled"])
def test_int8_weights_use_7_bits_so_that_a_cpu_without_vnni_does_not_saturate(source, exported):
    """reduce_range: on AVX2 without VNNI, ONNX Runtime's uint8 x int8 products saturate with full 8-bit weights (the
    copies drifted from the float networks there: docs/profile.md, stop 48). Fails on copies quantized without it."""
    import onnx
    from onnx import numpy_helper

    folder = exported[0] if source == "exported" else {stage: bundled_weights(stage) for stage in STAGES}
    for stage in STAGES:
        model = onnx.load(str(onnx_path(folder[stage], "int8")))
        weights = [numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
        assert weights, f"{stage}: no int8 weights"
        assert max(int(abs(w.astype(int)).max()) for w in weights) <= 64, stage
