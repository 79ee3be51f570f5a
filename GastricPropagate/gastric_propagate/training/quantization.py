"""An int8 copy of the exported networks, for ``--backend onnx-int8``: the same engine, about two to three times
faster networks on a CPU with 8-bit integer instructions, slightly different masks.

``export_with_int8`` (``gastric-propagate export-onnx --int8``) exports the float pair, then ``quantize_pair``
writes ``<stage>.int8.onnx`` beside each float ``<stage>.onnx``: weights in int8 (7 bits used, one scale per output
channel), activations in uint8, with ONNX Runtime's static quantization (QDQ format). The activations' ranges are
calibrated on the inputs the networks themselves get while the float pair segments synthetic calibration cases
(``CALIBRATION``: training seeds of the phantom and thorax generators, never an evaluation case), so a run with the
int8 pair sees inputs of the same kind. Before the files are written, each stage's thresholded output is compared
with the float stage's on those inputs (``MIN_PIXEL_AGREEMENT``). The description of the float file rides along,
with ``precision`` "int8". How much the masks change on real CT: docs/profile.md.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from gastric_propagate.data.annotation import annotation_from_label
from gastric_propagate.data.output_checks import check_outputs
from gastric_propagate.data.outputs import OutputBatch
from gastric_propagate.errors import WeightsError
from gastric_propagate.inference.onnx_networks import INPUT, METADATA_KEY, OUTPUT, PRECISIONS, export_pair, onnx_path

#: generator -> the seeds whose cases calibrate the activations' ranges (training seeds: never evaluated on).
CALIBRATION = {"phantom": range(0, 6), "thorax": range(0, 4)}
#: Below this fraction of pixels on the same side of 0.5 as the float network, on the calibration inputs, the int8
#: copy is refused.
MIN_PIXEL_AGREEMENT = 0.995


def export_with_int8(weights: dict[str, Path], *, overwrite: bool) -> list[Path]:
    """The float ONNX pair beside ``weights`` (stage -> ``.pt``), then its int8 copies calibrated by running it; the
    files are checked before any work (refused unless ``overwrite`` when they exist). A float pair already exported
    from these very checkpoints (``train`` writes it) is kept as it is, unless ``overwrite``."""
    keep_floats = not overwrite and exported_from_these(weights)
    precisions = ("int8",) if keep_floats else PRECISIONS
    check_outputs({f"{stage} {precision} ONNX file": onnx_path(path, precision) for stage, path in weights.items()
                   for precision in precisions}, inputs=weights.values(), overwrite=overwrite)
    written = [] if keep_floats else export_pair(weights, overwrite=overwrite)
    with OutputBatch(overwrite=overwrite) as outputs:
        return written + quantize_pair(weights, outputs=outputs)


def exported_from_these(weights: dict[str, Path]) -> bool:
    """Whether each float ONNX file beside ``weights`` loads and was exported from the checkpoint beside it."""
    from gastric_propagate.inference.onnx_networks import load_onnx

    for stage, path in weights.items():
        if not onnx_path(path).is_file():
            return False
        try:
            load_onnx(onnx_path(path), stage=stage, threads=1)  # checks the checkpoint's SHA-256 it records
        except WeightsError:
            return False
    return True


def calibration_batches(weights: dict[str, Path]) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """stage -> (input batch, the float network's output on it) for each call while the float pair beside
    ``weights`` segments the calibration cases."""
    from gastric_propagate.inference.pipeline import Segmenter
    from gastric_propagate.synthetic.generators import generated_cases, load_all

    segmenter = Segmenter(weights["proposer"], weights["refiner"], device="cpu", backend="onnx")
    batches: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"proposer": [], "refiner": []}
    for stage in batches:
        network = getattr(segmenter, f"_{stage}")

        def recording(batch: np.ndarray, network=network, stage=stage) -> np.ndarray:
            batch = np.array(batch, dtype=np.float32)
            output = network(batch)
            batches[stage].append((batch, output))
            return output

        setattr(segmenter, f"_{stage}", recording)
    cases = [case for generator, seeds in CALIBRATION.items()
             for case in generated_cases(generator, len(seeds), seeds.start)]
    for data in load_all(cases):
        segmenter.segment(data.image, data.spacing_xyz, annotation_from_label(data.label))
    return batches


def quantize_pair(weights: dict[str, Path], *, outputs: OutputBatch) -> list[Path]:
    """Writes ``<stage>.int8.onnx`` beside each float ``<stage>.onnx`` of ``weights`` (stage -> its ``.pt``), staged
    in ``outputs``; returns their paths. Raises WeightsError when a copy disagrees with its float network."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, inputs: list[np.ndarray]):
            self._inputs = iter(inputs)

        def get_next(self):
            batch = next(self._inputs, None)
            return None if batch is None else {INPUT: batch}

    floats = {stage: onnx_path(path) for stage, path in weights.items()}
    batches = calibration_batches(weights)
    written = []
    with tempfile.TemporaryDirectory() as scratch:
        for stage, source in floats.items():
            prepared, quantized = Path(scratch) / f"{stage}.prepared.onnx", Path(scratch) / f"{stage}.int8.onnx"
            # ONNX Runtime's recommended preparation (shapes, graph optimisation); the free batch and crop sizes
            # leave symbolic shapes unknown, which quantization does not need.
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            # reduce_range: 7-bit weights. Without it, a CPU without 8-bit dot-product instructions (AVX2 without
            # VNNI) saturates ONNX Runtime's uint8 x int8 products and the copy drifts from its float network.
            quantize_static(str(prepared), str(quantized), Reader([batch for batch, _ in batches[stage]]),
                            quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
            agreement = _pixel_agreement(quantized, batches[stage])
            if agreement < MIN_PIXEL_AGREEMENT:
                raise WeightsError(f"The int8 copy of the {stage} network agrees with it on {100 * agreement:.2f} % "
                                   f"of the calibration pixels (at least {100 * MIN_PIXEL_AGREEMENT:g} % needed): "
                                   "nothing was written. Use --backend onnx.")
            payload = _described(source, quantized, agreement, sum(len(batch) for batch, _ in batches[stage]))
            written.append(outputs.file(onnx_path(weights[stage], precision="int8"),
                                        lambda temporary, payload=payload: temporary.write_bytes(payload)))
    return written


def _pixel_agreement(quantized: Path, recorded: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """The fraction of pixels the int8 copy puts on the same side of 0.5 as the float network's recorded outputs."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(quantized), providers=["CPUExecutionProvider"])
    same = total = 0
    for batch, reference in recorded:
        found = session.run([OUTPUT], {INPUT: batch})[0] > 0.5
        same, total = same + int(np.count_nonzero((reference > 0.5) == found)), total + found.size
    return same / max(1, total)


def _described(source: Path, quantized: Path, agreement: float, n_samples: int) -> bytes:
    """The quantized model's bytes, with the float file's description (precision int8, its calibration added)."""
    import onnx

    description = json.loads(next(p.value for p in onnx.load(str(source)).metadata_props if p.key == METADATA_KEY))
    description.update(precision="int8", calibration={
        "cases": {generator: [seeds.start, seeds.stop - 1] for generator, seeds in CALIBRATION.items()},
        "samples": n_samples, "pixel_agreement": round(agreement, 5)})
    model = onnx.load(str(quantized))
    del model.metadata_props[:]
    model.metadata_props.add(key=METADATA_KEY, value=json.dumps(description))
    return model.SerializeToString()
