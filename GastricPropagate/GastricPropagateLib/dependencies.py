"""Python packages the engine needs inside Slicer: found, or installed after the user agrees.

- torch comes from the **PyTorch extension** (declared in the extension's ``EXTENSION_DEPENDS``): its
  ``PyTorchUtils`` picks the CPU or CUDA build that fits the machine. Only a lower bound is asked for, so the torch
  that other extensions sharing Slicer's Python installed (TotalSegmentator, MONAI Auto3DSeg) is used as it is.
- scipy and onnxruntime are installed with ``slicer.util.pip_install``. numpy and SimpleITK come with Slicer.
  onnxruntime runs the bundled networks (their ``.onnx`` files) on the CPU without loading torch, which is faster to
  start (the engine's ``--backend auto`` where no NVIDIA driver is visible); torch runs them on a CUDA device, and
  wherever ONNX Runtime cannot.

Nothing happens at import time. Nothing is installed before the user has agreed, in one dialog that lists
everything. A failure raises one exception with what to do; the caller shows it (one dialog, not two).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import re

from .i18n import _

logger = logging.getLogger(__name__)

#: The oldest torch the engine works with (``torch.load(weights_only=True)``, ``torch.inference_mode``).
MINIMUM_TORCH_VERSION = "2.0"
#: import name -> pip requirement, for the engine's dependencies that Slicer does not ship. onnxruntime: the oldest
#: that reads the bundled ONNX files (opset 18); pip picks the newest that fits Slicer's Python.
OTHER_REQUIREMENTS = {
    "scipy": "scipy>=1.10",
    "onnxruntime": "onnxruntime>=1.16",
}


def isInstalled(importName: str) -> bool:
    """True when ``importName`` can be imported (without importing it)."""
    return importlib.util.find_spec(importName) is not None


def _versionTuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])


def installedTorchVersion() -> str | None:
    """The installed torch's version, or None when torch is not installed."""
    if not isInstalled("torch"):
        return None
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def torchTooOld(version: str | None) -> bool:
    return version is not None and _versionTuple(version) < _versionTuple(MINIMUM_TORCH_VERSION)


def missingRequirements() -> list[str]:
    """What is missing now: "torch>=..." first (when torch is absent), then pip requirements."""
    missing = [] if isInstalled("torch") else [f"torch>={MINIMUM_TORCH_VERSION}"]
    missing += [requirement for name, requirement in OTHER_REQUIREMENTS.items() if not isInstalled(name)]
    return missing


def ready() -> bool:
    """True when everything the engine needs is installed and new enough; asks nothing and installs nothing."""
    return not missingRequirements() and not torchTooOld(installedTorchVersion())


def _pyTorchUtilsLogic():
    """The PyTorch extension's logic, or None when that extension is not installed."""
    try:
        import PyTorchUtils
    except ImportError:
        return None
    return PyTorchUtils.PyTorchUtilsLogic()


def ensureDependencies(askConfirmation: bool = True) -> bool:
    """Makes sure torch, scipy and onnxruntime can be imported; returns True when they can, False when the user
    declines.

    Raises:
        RuntimeError: with what to do, when the PyTorch extension is missing, the installed torch is too old, or an
            installation fails.
    """
    import slicer

    version = installedTorchVersion()
    if torchTooOld(version):
        raise RuntimeError(_(
            "GastricPropagate needs PyTorch {minimum} or newer, but PyTorch {version} is installed. Update it with "
            "the PyTorch Utils module (Utilities > PyTorch Utils), restart Slicer, then run again.").format(
                minimum=MINIMUM_TORCH_VERSION, version=version))
    missing = missingRequirements()
    if not missing:
        return True
    torchMissing = version is None
    torchLogic = _pyTorchUtilsLogic() if torchMissing else None
    if torchMissing and torchLogic is None:
        raise RuntimeError(_(
            "GastricPropagate needs PyTorch, which the PyTorch extension installs. Install the 'PyTorch' extension "
            "from the Extensions Manager, restart Slicer, then run again."))
    if askConfirmation and not slicer.util.confirmOkCancelDisplay(
            _("GastricPropagate needs these Python packages, which are not installed yet:\n\n{packages}\n\n"
              "Install them now? It downloads them and can take several minutes (PyTorch is large). PyTorch is "
              "installed by the PyTorch extension, which picks a GPU build when this computer has a suitable one.")
            .format(packages="\n".join(missing)),
            windowTitle=_("GastricPropagate: install Python packages")):
        logger.info("GastricPropagate: installing %s declined", ", ".join(missing))
        return False
    if torchMissing:
        torch = torchLogic.installTorch(askConfirmation=False,
                                        torchVersionRequirement=f">={MINIMUM_TORCH_VERSION}")
        if torch is None:
            raise RuntimeError(_("PyTorch could not be installed. Try the PyTorch Utils module (Utilities > "
                                 "PyTorch Utils), restart Slicer, then run again."))
    others = [requirement for requirement in missing if not requirement.startswith("torch")]
    if others:
        slicer.util.pip_install(others)
    importlib.invalidate_caches()
    stillMissing = missingRequirements()
    if stillMissing:
        raise RuntimeError(_("These packages are still missing after installation: {packages}. Restart Slicer and "
                             "try again.").format(packages=", ".join(stillMissing)))
    return True
