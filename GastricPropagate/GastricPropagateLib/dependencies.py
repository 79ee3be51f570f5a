"""Python packages the engine needs inside Slicer: found, or installed after the user agrees.

- onnxruntime (and scipy, where a Slicer build lacks it) is installed with ``slicer.util.pip_install``; numpy, SimpleITK
  and, in Slicer's own builds, scipy come with Slicer.
  onnxruntime runs the bundled networks (their ``.onnx`` files) on the CPU without torch: the engine's
  ``--backend auto`` where no NVIDIA driver is visible, and the cpu and cpu-int8 devices.
- torch is needed only to run the networks on an NVIDIA GPU (the cuda device, or auto where a driver is visible). It
  comes from the **PyTorch extension** (the extension's ``EXTENSION_DEPENDS``): its ``PyTorchUtils`` picks the CPU or
  CUDA build that fits the machine. Only a lower bound is asked for, so the torch that other extensions sharing
  Slicer's Python installed (TotalSegmentator, MONAI Auto3DSeg) is used as it is. On auto, a machine where torch
  cannot be had (no PyTorch extension) runs on the CPU instead.

Nothing happens at import time. Nothing is installed before the user has agreed, in one dialog that lists
everything. A failure raises one exception with what to do (offline: install from wheel files); the caller shows it.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.metadata
import logging
import os
import re
import site
import sys

from .i18n import _

logger = logging.getLogger(__name__)

#: The oldest torch the engine works with (``torch.load(weights_only=True)``, ``torch.inference_mode``).
MINIMUM_TORCH_VERSION = "2.0"
#: The oldest onnxruntime that reads the bundled ONNX files (IR version 10, opset 18; 1.16 and 1.17 refuse them).
MINIMUM_ONNXRUNTIME_VERSION = "1.18"
#: import name -> (pip requirement, the oldest version that works, or None), for the engine's dependencies that
#: Slicer does not ship; pip picks the newest that fits Slicer's Python.
OTHER_REQUIREMENTS = {
    "scipy": ("scipy>=1.10", None),
    "onnxruntime": (f"onnxruntime>={MINIMUM_ONNXRUNTIME_VERSION}", MINIMUM_ONNXRUNTIME_VERSION),
}


def _enginePath() -> list[str]:
    """``sys.path`` as the engine's process sees it: PythonSlicer turns the user's site-packages off
    (``PYTHONNOUSERSITE``) where Slicer itself may not, so a package found only there is missing to the engine."""
    userSite = os.path.abspath(site.getusersitepackages()) if site.ENABLE_USER_SITE else None
    return [entry for entry in sys.path if userSite is None or os.path.abspath(entry or ".") != userSite]


def isInstalled(importName: str) -> bool:
    """True when the engine's process can import ``importName`` (found without importing it). A folder of that name
    without its ``__init__.py`` (what a failed uninstall leaves) would import as an empty namespace: not installed."""
    spec = importlib.machinery.PathFinder.find_spec(importName, _enginePath())
    return spec is not None and spec.origin not in (None, "namespace")


def _versionTuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])


def installedVersion(name: str) -> str | None:
    """The installed version of package ``name``, or None when it is not installed (or does not say)."""
    if not isInstalled(name):
        return None
    return next((found.version for found in importlib.metadata.distributions(name=name, path=_enginePath())), None)


def installedTorchVersion() -> str | None:
    """The installed torch's version, or None when torch is not installed."""
    return installedVersion("torch")


def _older(version: str | None, minimum: str | None) -> bool:
    return version is not None and minimum is not None and _versionTuple(version) < _versionTuple(minimum)


def torchTooOld(version: str | None) -> bool:
    return _older(version, MINIMUM_TORCH_VERSION)


def torchNeeded(device: str = "auto") -> bool:
    """Whether the panel's ``device`` runs the networks with PyTorch: cuda, or auto where an NVIDIA driver is
    visible (the engine's ``--backend auto``); cpu and cpu-int8 run them under ONNX Runtime."""
    return str(device).startswith("cuda") or (device == "auto" and _nvidiaDriverVisible())


def missingRequirements(device: str = "auto") -> list[str]:
    """What is missing now: "torch>=..." first (when ``device`` needs torch and it is absent), then pip requirements
    (also those installed in a version too old to work: pip upgrades them)."""
    missing = [f"torch>={MINIMUM_TORCH_VERSION}"] if torchNeeded(device) and not isInstalled("torch") else []
    missing += [requirement for name, (requirement, minimum) in OTHER_REQUIREMENTS.items()
                if not isInstalled(name) or _older(installedVersion(name), minimum)]
    return missing


def ready(device: str = "auto") -> bool:
    """True when everything the engine needs for ``device`` is installed and new enough; asks nothing and installs
    nothing."""
    return not missingRequirements(device) and not (torchNeeded(device) and torchTooOld(installedTorchVersion()))


def _nvidiaDriverVisible() -> bool:
    from gastric_propagate.inference.backends import nvidia_driver_visible  # the engine's, where it is looked up

    return nvidia_driver_visible()


def _pyTorchUtilsLogic():
    """The PyTorch extension's logic, or None when that extension is not installed."""
    try:
        import PyTorchUtils
    except ImportError:
        return None
    return PyTorchUtils.PyTorchUtilsLogic()


def ensureDependencies(askConfirmation: bool = True, device: str = "auto") -> bool:
    """Makes sure the packages the engine needs for ``device`` can be imported (scipy and onnxruntime; torch for an
    NVIDIA GPU); returns True when they can, False when the user declines.

    Raises:
        RuntimeError: with what to do, when torch is needed and the PyTorch extension is missing or the installed
            torch is too old, or an installation fails.
    """
    import slicer

    version = installedTorchVersion()
    wanted = torchNeeded(device)
    if wanted and torchTooOld(version):
        raise RuntimeError(_(
            "Running on the GPU needs PyTorch {minimum} or newer, but PyTorch {version} is installed (perhaps by "
            "another extension). Choose the 'cpu' device, which runs without PyTorch, or replace PyTorch in "
            "Utilities > PyTorch Utils (Uninstall, restart Slicer, Install; other extensions that use it may need "
            "the old one), then run again.").format(minimum=MINIMUM_TORCH_VERSION, version=version))
    missing = missingRequirements(device)
    torchLogic = _pyTorchUtilsLogic() if wanted and version is None else None
    if wanted and version is None and torchLogic is None:
        if not str(device).startswith("cuda"):  # auto: the CPU under ONNX Runtime, without asking for torch
            logger.info("GastricPropagate: no PyTorch extension; the networks run on the CPU (ONNX Runtime)")
            missing = [requirement for requirement in missing if not requirement.startswith("torch")]
        else:
            raise RuntimeError(_(
                "Running on the GPU needs PyTorch, which the PyTorch extension installs. Install the 'PyTorch' "
                "extension from the Extensions Manager and restart Slicer, or choose the 'cpu' device, then run "
                "again."))
    if not missing:
        return True
    torchMissing = any(requirement.startswith("torch") for requirement in missing)
    note = "" if not torchMissing else _(
        " PyTorch (for the GPU) is large; the PyTorch extension installs it (with torchvision, through its "
        "light-the-torch), with a GPU build when this computer has a suitable one. To run on the CPU without it, "
        "Cancel and choose the 'cpu' device.")
    if torchMissing and not _nvidiaDriverVisible():  # asked for 'cuda' by name: the driver check can miss one (WSL)
        note += " " + _("No NVIDIA driver is visible on this computer, so PyTorch may find no GPU to run on: unless "
                        "you know there is one, Cancel and choose 'auto' or 'cpu'.")
    if askConfirmation and not slicer.util.confirmOkCancelDisplay(
            _("GastricPropagate needs these Python packages, which are not installed yet:\n\n{packages}\n\n"
              "Install them now? It downloads them and can take several minutes; the Python console shows the "
              "progress.{note}").format(packages="\n".join(missing), note=note),
            windowTitle=_("GastricPropagate: install Python packages")):
        logger.info("GastricPropagate: installing %s declined", ", ".join(missing))
        return False
    others = [requirement for requirement in missing if not requirement.startswith("torch")]
    try:
        if others:
            slicer.util.pip_install(others)
        if torchMissing:
            torchLogic.installTorch(askConfirmation=False, torchVersionRequirement=f">={MINIMUM_TORCH_VERSION}")
    except Exception as error:  # pip's exit status, a download that failed: said with what to do
        importlib.invalidate_caches()  # what did install is not named as failed
        failed = [requirement for requirement in missingRequirements(device) if requirement in missing] or missing
        raise RuntimeError(_installFailed(failed, error)) from error
    importlib.invalidate_caches()
    stillMissing = missingRequirements(device)
    if stillMissing:
        raise RuntimeError(_installFailed(stillMissing, None))
    return True


def _installFailed(packages: list[str], error: BaseException | None) -> str:
    """What to tell the user when ``packages`` could not be installed (``error``: what failed, when known), with the
    offline way: wheel files downloaded on another computer (requirements quoted for any shell, versions kept so that
    an older installed one is upgraded, the folder written with '/' for ``pip_install``'s own splitting)."""
    quoted = " ".join(f'"{package}"' for package in packages)
    return _(
        "These Python packages could not be installed: {packages}{error}. The download needs internet access "
        "(PyPI, and download.pytorch.org for PyTorch; a proxy may block it) and write access to Slicer's folder. "
        "Without internet: on another computer with Python, run\n"
        "pip download {quoted} --only-binary=:all: --python-version {python} --platform PLATFORM -d wheels\n"
        "with PLATFORM this computer's (win_amd64; on Linux 'manylinux_2_28_x86_64 --platform manylinux2014_x86_64'; "
        "macosx_11_0_arm64 or macosx_10_15_x86_64), on a computer with the same operating system (pip picks the "
        "packages' own dependencies for the one it runs on), copy the wheels folder here, and in Slicer's Python "
        "console run (the folder written with /)\n"
        "slicer.util.pip_install('--no-index --find-links C:/path/to/wheels {quoted}')\n"
        "Then restart Slicer and run again.").format(
            packages=", ".join(packages), error=f" ({error})" if error is not None else "", quoted=quoted,
            python=f"{sys.version_info.major}.{sys.version_info.minor}")
