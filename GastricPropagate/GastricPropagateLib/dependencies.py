"""Python packages the engine needs inside Slicer: found, or installed after the user agrees.

Nothing happens at import time, and nothing is ever installed silently. The model weights are bundled with the
module (``gastric_propagate/weights/``): there is nothing to download besides the packages.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging

from .i18n import _

logger = logging.getLogger(__name__)

#: The torch the engine is tested with; the CPU build is enough, a CUDA build of the same version is used if present.
TORCH_REQUIREMENT = "torch==2.13.0"
#: import name -> pip requirement, for the engine's other dependencies (SimpleITK ships with Slicer).
OTHER_REQUIREMENTS = {
    "SimpleITK": "SimpleITK>=2.3",
    "scipy": "scipy>=1.10",
    "tqdm": "tqdm>=4.60",
}


def isInstalled(importName: str) -> bool:
    """True when ``importName`` can be imported (without importing it)."""
    return importlib.util.find_spec(importName) is not None


def missingRequirements() -> list[str]:
    """pip requirements of the engine that are not importable now (torch first)."""
    missing = [] if isInstalled("torch") else [TORCH_REQUIREMENT]
    missing += [requirement for name, requirement in OTHER_REQUIREMENTS.items() if not isInstalled(name)]
    return missing


def _pyTorchUtilsAvailable() -> bool:
    import slicer

    return hasattr(getattr(slicer, "modules", None), "pytorchutils")


def _installTorchWithPyTorchUtils() -> bool:
    """Installs torch through the PyTorch extension (it picks the CUDA build matching the driver)."""
    import PyTorchUtils  # provided by the PyTorch extension

    torchLogic = PyTorchUtils.PyTorchUtilsLogic()
    if torchLogic.torchInstalled():
        return True
    torch = torchLogic.installTorch(askConfirmation=True, torchVersionRequirement=">=2.0")
    return torch is not None


def ensureDependencies(askConfirmation: bool = True) -> bool:
    """Makes sure torch, scipy, tqdm and SimpleITK can be imported; returns True when they can.

    torch comes from the PyTorch extension's installer when that extension is present (it asks the user itself),
    otherwise from pip after the user confirms. Returns False when the user declines; raises RuntimeError when an
    installation fails.
    """
    import slicer

    missing = missingRequirements()
    if not missing:
        return True
    if TORCH_REQUIREMENT in missing and _pyTorchUtilsAvailable():
        if not _installTorchWithPyTorchUtils():
            logger.info("GastricPropagate: PyTorch installation declined or failed")
            return False
        missing = missingRequirements()
        if not missing:
            return True
    if askConfirmation and not slicer.util.confirmOkCancelDisplay(
            _("GastricPropagate needs these Python packages, which are not installed yet:\n\n{packages}\n\n"
              "Install them now? This downloads them with pip and can take several minutes (PyTorch is large).\n"
              "Tip: the PyTorch extension (Extensions Manager) installs a GPU build of PyTorch if you have one.")
            .format(packages="\n".join(missing)),
            windowTitle=_("GastricPropagate: install dependencies")):
        return False
    with slicer.util.tryWithErrorDisplay(_("Installing the Python packages failed."), waitCursor=True):
        slicer.util.pip_install(missing)
    importlib.invalidate_caches()
    stillMissing = missingRequirements()
    if stillMissing:
        raise RuntimeError(_("These packages are still missing after installation: {packages}. Restart Slicer and "
                             "try again.").format(packages=", ".join(stillMissing)))
    return True
