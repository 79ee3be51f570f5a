"""Which runtime runs the networks, ONNX Runtime or PyTorch, decided before either is imported.

``choose_backend`` takes ONNX Runtime on the CPU where it can run (onnxruntime installed, the ``.onnx`` files beside
the checkpoints): a run then starts without torch's import, about a second. It takes PyTorch where an NVIDIA driver is
visible (``nvidia_driver_visible``, read from the system without torch), so the GPU runs the networks when there is
one. ``pipeline.Segmenter`` loads what it chose. ``resolve_device`` turns a device string into PyTorch's device for a
PyTorch run. Nothing here imports torch or onnxruntime at import time (``resolve_device`` imports torch when called).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gastric_propagate.errors import InputError, WeightsError
from gastric_propagate.inference.checkpoints import bundled_weights
from gastric_propagate.inference.onnx_networks import export_hint, onnx_path
from gastric_propagate.inference.options import ONNX_BACKENDS, TORCH_BACKENDS
from gastric_propagate.inference.options import backend as check_backend
from gastric_propagate.inference.options import device as check_device

if TYPE_CHECKING:
    import torch


def checkpoint_paths(proposer_path, refiner_path) -> dict:
    """stage -> its checkpoint: the one given, else the bundled one."""
    return {"proposer": proposer_path or bundled_weights("proposer"),
            "refiner": refiner_path or bundled_weights("refiner")}


def choose_backend(backend: str, device: str, proposer_path=None, refiner_path=None) -> str:
    """How ``pipeline.Segmenter`` runs the networks, "onnx", "onnx-int8", "torch" or "torch-bf16", for a ``backend``
    of auto, torch, torch-bf16, onnx or onnx-int8 (the int8 copies and bfloat16: only when asked for by name).

    auto is PyTorch when ``device`` is auto, torch is installed and an NVIDIA driver is visible
    (``nvidia_driver_visible``: the GPU when there is one); else ONNX Runtime when onnxruntime is installed, the
    ``.onnx`` files lie beside the checkpoints (the bundled ones when a path is None) and no CUDA device is asked for
    (``device`` auto or cpu); else PyTorch. onnx is refused (InputError, WeightsError) when ONNX Runtime cannot run.
    Nothing is imported or loaded here."""
    for check, name, value in ((check_backend, "Backend", backend), (check_device, "Device", device)):
        try:
            check(value)
        except InputError as error:
            raise InputError(f"{name}: {error}.") from None
    if backend in TORCH_BACKENDS:
        return backend
    if (backend == "auto" and device == "auto" and importlib.util.find_spec("torch") is not None
            and nvidia_driver_visible()):
        return "torch"
    weights = checkpoint_paths(proposer_path, refiner_path).values()
    precision = ONNX_BACKENDS.get(backend, "float32")  # auto: the float files
    missing = [str(onnx_path(path, precision)) for path in weights if not onnx_path(path, precision).is_file()]
    problem = None
    if device not in ("auto", "cpu"):
        problem = InputError(f"Device {device!r} was asked for, but ONNX Runtime runs the networks on the CPU here. "
                             "Use --device cpu, or --backend torch for CUDA.")
    elif importlib.util.find_spec("onnxruntime") is None:
        problem = InputError("The onnx backend needs onnxruntime, which is not installed: install it with "
                             "pip install onnxruntime, or use --backend torch.")
    elif missing:
        folders = {Path(path).parent for path in weights}  # export-onnx takes one folder holding both
        names = [Path(path).name for path in weights]
        folder = folders.pop() if len(folders) == 1 and names == ["proposer.pt", "refiner.pt"] else None
        problem = WeightsError(f"No {'int8 ' if precision == 'int8' else ''}ONNX file beside the weights "
                               f"({', '.join(missing)}). {export_hint(precision, folder)}.")
    if problem is None:
        return "onnx" if backend == "auto" else backend
    if backend in ONNX_BACKENDS:
        raise problem
    return "torch"


def nvidia_driver_visible() -> bool:
    """Whether this machine has an NVIDIA GPU driver, found without importing torch.

    ``choose_backend`` asks it for ``--backend auto --device auto``: PyTorch (on CUDA) when true, ONNX Runtime on the
    CPU otherwise. ``torch.cuda.is_available()`` would answer better but costs torch's import (about a second), the
    very cost ONNX Runtime saves on a machine without a GPU. A driver that torch cannot use still runs, on the CPU
    under PyTorch (``resolve_device``). Tests replace this function (``monkeypatch``)."""
    if sys.platform.startswith("linux"):
        return os.path.exists("/proc/driver/nvidia/version")
    if sys.platform == "win32":
        import ctypes.util

        return ctypes.util.find_library("nvcuda") is not None
    return False  # macOS: no CUDA


def resolve_device(device: str) -> torch.device:
    """"auto" -> the first CUDA device when there is one, else the CPU; a CUDA request without CUDA, or a device
    that is not one of auto, cpu, cuda, cuda:N, is refused (InputError)."""
    try:
        check_device(device)
    except InputError as error:
        raise InputError(f"Device: {error}.") from None
    try:
        import torch
    except ImportError as error:
        raise InputError(f"PyTorch cannot be loaded ({error}). Install torch, or run the networks with ONNX Runtime: "
                         "install onnxruntime, with the .onnx files beside the weights "
                         "('gastric-propagate export-onnx').") from None

    if device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"Device {device!r} was asked for, but this PyTorch has no CUDA device. Use --device cpu "
                         "or auto.")
    return resolved
