"""The networks as ONNX files, run by ONNX Runtime: a segment run that loads no PyTorch.

``export_onnx`` (PyTorch and the ``onnx``/``onnxscript`` packages: training time) writes ``<stage>.onnx`` beside a
checkpoint ``<stage>.pt``: the network as it runs for inference (batch norms folded, ``networks.inference_copy``)
followed by its sigmoid, input ``image`` (N, C, H, W) float32 -> output ``probability`` (N, H, W), with the batch,
height and width free. The checkpoint's description (stage, architecture, preprocessing, training) and the SHA-256
of the .pt file it came from ride along as one JSON metadata property, so the file describes itself as the
checkpoint does; ONNX Runtime's probabilities are checked against PyTorch's before the file is written.
``load_onnx`` (onnxruntime and numpy alone) reads it back and checks it as ``load_checkpoint`` checks a checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gastric_propagate import __version__
from gastric_propagate.data.output_checks import check_outputs
from gastric_propagate.data.outputs import OutputBatch
from gastric_propagate.digests import file_sha256
from gastric_propagate.errors import WeightsError
from gastric_propagate.inference.checkpoints import (MAX_FILE_BYTES, accepted_channels, checked_preprocessing,
                                                     load_checkpoint)
from gastric_propagate.inference.preprocessing import Preprocessing

FORMAT = "gastric-propagate-onnx"
FORMAT_VERSION = 1
#: The metadata property that holds the description (JSON).
METADATA_KEY = "gastric_propagate"
INPUT, OUTPUT = "image", "probability"
# Opset 18 and the IR version PyTorch writes with it (10) are read by onnxruntime 1.18 and later (1.16 and 1.17 refuse
# IR version 10).
OPSET = 18
#: The largest difference allowed between ONNX Runtime's and PyTorch's probabilities when a network is exported.
TOLERANCE = 1e-4
#: The precisions an ONNX pair comes in: float32 (``export_onnx``) and its int8 copy (``training.quantization``).
PRECISIONS = ("float32", "int8")


def export_hint(precision: str = "float32", folder: str | Path | None = None) -> str:
    """What to run to make the ONNX files of ``precision`` from the weights in ``folder`` (DIR when not known): with
    --overwrite where a file that command writes is there already (the float pair too, for int8), since it refuses
    to replace one without."""
    flag = "" if precision == "float32" else f" --{precision}"
    there = folder is not None and any(onnx_path(Path(folder) / f"{stage}.pt", kind).exists()
                                       for stage in ("proposer", "refiner") for kind in {"float32", precision})
    command = f"gastric-propagate export-onnx{flag} --weights {shell_word(str(folder)) if folder else 'DIR'}"
    return f"Make the ONNX files from the weights with '{command}{' --overwrite' if there else ''}'"


def shell_word(text: str) -> str:
    """``text`` as one word of a command a user pastes into their shell: as it is when nothing needs quoting, else
    in double quotes (not single ones: the advice quotes the whole command in single quotes), as cmd.exe wants them
    on Windows."""
    if os.name == "nt":
        return subprocess.list2cmdline([text])
    if shlex.quote(text) == text:
        return text
    return '"' + re.sub(r'([\\"$`])', r"\\\1", text) + '"'


def onnx_path(weights: str | Path, precision: str = "float32") -> Path:
    """Where the ONNX file of the checkpoint ``weights`` lies: beside it, ``<name>.onnx`` (float32) or
    ``<name>.int8.onnx``."""
    return Path(weights).with_suffix(".onnx" if precision == "float32" else f".{precision}.onnx")


def weights_path(onnx_file: str | Path) -> Path:
    """The checkpoint an ONNX file of either precision was made from: ``<name>.pt`` beside it (``onnx_path``'s
    inverse; ``<name>`` may hold dots of its own)."""
    onnx_file = Path(onnx_file)
    name = onnx_file.name[:-len(".onnx")] if onnx_file.name.endswith(".onnx") else onnx_file.stem
    for precision in PRECISIONS[1:]:
        if name.endswith(f".{precision}"):
            name = name[:-len(precision) - 1]
    return onnx_file.with_name(name + ".pt")


@dataclass
class OnnxNetwork:
    """A loaded ONNX stage, run like a ``propagation.NetworkRunner``: a float32 batch (N, C, S, S) in,
    probabilities (N, S, S) out.

    With ``halves`` a batch of two or more is cut in two, each half run on its own share of the threads beside the
    other (the first in ``halves``' thread, the second in the caller's), instead of one run over every thread: the
    proposer's batch is its two chains, whose small convolutions would otherwise wait at a barrier of ONNX Runtime's
    threads after every operator, a wait that grows when the registration's threads, or other programs, hold the
    cores. Each sample's probabilities are those of a run over the whole batch.
    """

    stage: str
    session: object  # onnxruntime.InferenceSession
    preprocessing: Preprocessing
    training: dict
    path: Path | None = None
    halves: ThreadPoolExecutor | None = None  # runs the first half of a batch while the caller runs the second
    second_session: object | None = None  # the second half's own session when each half has several threads

    @property
    def in_channels(self) -> int:
        return self.session.get_inputs()[0].shape[1]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.halves is None or len(batch) < 2:
            return self._run(self.session, batch)
        middle = (len(batch) + 1) // 2
        first = self.halves.submit(self._run, self.session, batch[:middle])
        second = self._run(self.second_session or self.session, batch[middle:])
        return np.concatenate([first.result(), second])

    @staticmethod
    def _run(session, batch: np.ndarray) -> np.ndarray:
        return session.run([OUTPUT], {INPUT: batch})[0]


def load_onnx(path: str | Path, *, stage: str, threads: int | None = None,
              precision: str = "float32") -> OnnxNetwork:
    """Loads and checks an ONNX file written by ``export_onnx`` (or its int8 copy, ``quantization``); raises
    WeightsError saying what to do when it cannot be used, also when the checkpoint beside it is not the one it was
    exported from.

    Args:
        precision: the precision the file must hold, float32 or int8.
        threads: the threads the network may use; None: ``OMP_NUM_THREADS`` when it is set (as PyTorch reads it),
            else one per CPU this process may run on. Two or more: a batch runs in two halves, each on half of them
            (``OnnxNetwork``).
    """
    import onnxruntime

    path = Path(path)
    # export-onnx writes <stage>.onnx beside <stage>.pt only: another file name gets the command with DIR.
    standard = path.name in {onnx_path(f"{name}.pt", precision).name for name in ("proposer", "refiner")}
    again = f"{export_hint(precision, path.parent if standard else None)} (or run with --backend torch)."
    if not path.is_file():
        raise WeightsError(f"The {stage} ONNX file {path} does not exist. {again}")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise WeightsError(f"The {stage} ONNX file {path} is {path.stat().st_size / 1e9:.1f} GB, larger than any "
                           f"network this tool builds: it is not a GastricPropagate network. {again}")
    threads = available_threads() if threads is None else threads
    per_half = max(1, threads // 2)
    try:
        session = onnxruntime.InferenceSession(str(path), _session_options(onnxruntime, per_half),
                                               providers=["CPUExecutionProvider"])
        description = json.loads(session.get_modelmeta().custom_metadata_map[METADATA_KEY])
    except Exception as error:  # onnxruntime raises its own types for truncated or foreign files
        raise WeightsError(f"The {stage} ONNX file {path} cannot be read ({error.__class__.__name__}): it is corrupt "
                           f"or was not made by 'gastric-propagate export-onnx'. {again}") from error
    if not isinstance(description, dict) or description.get("format") != FORMAT \
            or description.get("format_version") != FORMAT_VERSION:
        raise WeightsError(f"{path} is not a GastricPropagate ONNX network of format {FORMAT_VERSION}. {again}")
    if description.get("precision", "float32") != precision:
        raise WeightsError(f"{path} holds a {description.get('precision', 'float32')} network, but a {precision} one "
                           f"was expected. {again}")
    if description.get("stage") != stage:
        raise WeightsError(f"{path} holds the {description.get('stage')!r} network, but the {stage!r} one was "
                           "expected: check that the proposer and refiner files are not swapped.")
    inputs = session.get_inputs()
    if [i.name for i in inputs] != [INPUT] or inputs[0].shape[1] not in accepted_channels(stage):
        channels = " or ".join(map(str, accepted_channels(stage)))
        raise WeightsError(f"{path} does not read the {channels} channels the {stage} is given. {again}")
    weights = weights_path(path)
    if weights.is_file() and file_sha256(weights) != description.get("weights_sha256"):
        raise WeightsError(f"{path} was not exported from the {stage} weights beside it ({weights.name}, changed "
                           f"since). {again}")
    preprocessing = checked_preprocessing(description, path, stage, again)
    halves = second_session = None
    if threads >= 2:
        # One thread per half runs in the calling thread, and one session serves both; more need a session each,
        # since a session's threads are shared by the runs made on it.
        halves = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{stage}-half")
        if per_half > 1:
            second_session = onnxruntime.InferenceSession(str(path), _session_options(onnxruntime, per_half),
                                                          providers=["CPUExecutionProvider"])
    return OnnxNetwork(stage=stage, session=session, preprocessing=preprocessing,
                       training=dict(description.get("training") or {}), path=path, halves=halves,
                       second_session=second_session)


def export_onnx(weights: str | Path, *, stage: str, outputs: OutputBatch | None = None) -> Path:
    """Writes ``<weights>.onnx`` beside the checkpoint ``weights`` (checked as ``load_checkpoint`` checks it) and
    returns its path; staged in ``outputs`` when given (renamed into place with the batch's other outputs). A
    checkpoint that ``outputs`` itself stages (``train``'s) is read where it is staged: the pair and its ONNX files
    then appear together.

    Raises:
        WeightsError: the checkpoint cannot be used, or ONNX Runtime's probabilities differ from PyTorch's by more
            than ``TOLERANCE`` (nothing is written then).
    """
    import onnxruntime

    weights = Path(weights)
    source = (outputs.staged(weights) if outputs is not None else None) or weights
    checkpoint = load_checkpoint(source, stage=stage)
    model = _exported_model(checkpoint.network)
    description = {"format": FORMAT, "format_version": FORMAT_VERSION, "package_version": __version__,
                   "stage": stage, "architecture": {"name": "UNet2D", "config": dict(checkpoint.network.config)},
                   "preprocessing": checkpoint.preprocessing.to_dict(), "training": checkpoint.training,
                   "weights_sha256": file_sha256(source), "opset": OPSET}
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    description["max_difference"] = difference = _largest_difference(checkpoint.network, session)
    if not difference <= TOLERANCE:
        raise WeightsError(f"The {stage} network exported from {weights} gives probabilities up to {difference:.2g} "
                           f"away from PyTorch's under ONNX Runtime (at most {TOLERANCE:g} allowed): nothing was "
                           "written. Run with --backend torch.")
    for holder in (model, model.graph, *model.graph.node):  # the exporter's notes on PyTorch's graph: not needed
        del holder.metadata_props[:]
    model.metadata_props.add(key=METADATA_KEY, value=json.dumps(description))
    payload = model.SerializeToString()
    if outputs is not None:
        return outputs.file(onnx_path(weights), lambda temporary: temporary.write_bytes(payload))
    with OutputBatch() as alone:
        return alone.file(onnx_path(weights), lambda temporary: temporary.write_bytes(payload))


def export_pair(weights: dict[str, str | Path], *, overwrite: bool) -> list[Path]:
    """Exports each stage's checkpoint (stage -> ``.pt`` path) beside it, the ONNX files renamed into place together;
    existing ONNX files are refused (InputError, before any work) unless ``overwrite``."""
    check_outputs({f"{stage} ONNX file": onnx_path(path) for stage, path in weights.items()}, inputs=weights.values(),
                  overwrite=overwrite)
    with OutputBatch(overwrite=overwrite) as outputs:
        return [export_onnx(path, stage=stage, outputs=outputs) for stage, path in weights.items()]


def _session_options(onnxruntime, threads: int):
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    # Threads that wait for work sleep instead of spinning: on a busy machine (Slicer renders, other jobs run) a
    # spinning thread takes the core its partner needs (docs/profile.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def available_threads() -> int:
    """``OMP_NUM_THREADS`` when it is a whole number of 1 or more, else the CPUs this process may run on."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None  # Linux: the CPUs it is given
    return len(cpus) if cpus else (os.cpu_count() or 1)


def check_exporter() -> None:
    """WeightsError when the ONNX exporter's packages are missing: ``train`` checks it before it trains, not after."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise _exporter_missing(error) from error


def _exporter_missing(error: ImportError) -> WeightsError:
    return WeightsError(f"Exporting to ONNX needs the onnx and onnxscript packages ({error}): install them with pip "
                        "install 'gastric-propagate[train]'.")


def _exported_model(network):
    """The ONNX model (``onnx.ModelProto``) of ``network`` as the engine runs it, its sigmoid included."""
    import logging
    import warnings

    import torch

    from gastric_propagate.inference.networks import inference_copy

    class Probabilities(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.inner(image))[:, 0]

    wrapped = Probabilities(inference_copy(network).to(memory_format=torch.contiguous_format)).eval()
    size = 4 * 2 ** network.config["depth"]
    example = torch.zeros(2, network.config["in_channels"], size, size)
    free = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height"), 3: torch.export.Dim("width")}
    exporter = logging.getLogger("torch.onnx")
    level = exporter.level
    exporter.setLevel(logging.ERROR)  # it lists the torchvision operators it skips, which these networks never use
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PyTorch's own deprecation notes, of no use to the user
            program = torch.onnx.export(wrapped, (example,), dynamo=True, input_names=[INPUT], output_names=[OUTPUT],
                                        dynamic_shapes=(free,), opset_version=OPSET, optimize=True, verbose=False)
    except ImportError as error:
        raise _exporter_missing(error) from error
    finally:
        exporter.setLevel(level)
    return program.model_proto


def _largest_difference(network, session) -> float:
    """The largest difference between PyTorch's and ONNX Runtime's probabilities, on random inputs of two shapes."""
    from gastric_propagate.inference.networks import TorchRunner, inference_copy

    torch_runner = TorchRunner(inference_copy(network))
    multiple, channels = 2 ** network.config["depth"], network.config["in_channels"]
    rng = np.random.default_rng(0)
    largest = 0.0
    for shape in ((3, channels, 6 * multiple, 6 * multiple), (1, channels, 3 * multiple, 5 * multiple)):
        batch = rng.normal(size=shape).astype(np.float32)
        batch[:, 3:] = batch[:, 3:] > 0  # the mask channels hold 0 or 1
        expected = torch_runner(batch)
        found = session.run([OUTPUT], {INPUT: batch})[0]
        difference = float(np.abs(found - expected).max())
        largest = max(largest, difference if np.isfinite(difference) else float("inf"))  # NaN: no match at all
    return largest
