"""GastricPropagateLib.dependencies: torch through the PyTorch extension, one confirmation before any install."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (real MRML): pip install -e '.[slicer]'")

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "GastricPropagate"))

from GastricPropagateLib import dependencies  # noqa: E402

pytestmark = pytest.mark.slicer


class Machine:
    """What is installed, what the user answers, and every install call made."""

    def __init__(self, monkeypatch, *, installed=("torch", "scipy", "onnxruntime"), torchVersion="2.5.1", answer=True,
                 pyTorchExtension=True, pipFails=False):
        self.installed = set(installed)
        self.torchVersion = torchVersion if "torch" in self.installed else None
        self.answer = answer
        self.dialogs: list[str] = []
        self.calls: list[tuple] = []
        self.pipFails = pipFails
        monkeypatch.setattr(dependencies, "isInstalled", lambda name: name in self.installed)
        monkeypatch.setattr(dependencies, "installedTorchVersion", lambda: self.torchVersion)
        monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", self._confirm, raising=False)
        monkeypatch.setattr(slicer.util, "pip_install", self._pip, raising=False)
        if pyTorchExtension:
            module = types.SimpleNamespace(PyTorchUtilsLogic=lambda: types.SimpleNamespace(installTorch=self._torch))
            monkeypatch.setitem(sys.modules, "PyTorchUtils", module)
        else:
            monkeypatch.setitem(sys.modules, "PyTorchUtils", None)  # "import PyTorchUtils" raises ImportError

    def _confirm(self, text, **kwargs):
        self.dialogs.append(text)
        return self.answer

    def _pip(self, requirements, **kwargs):
        self.calls.append(("pip", list(requirements)))
        if self.pipFails:
            raise RuntimeError("pip failed")
        self.installed.update(r.split(">")[0].split("=")[0] for r in requirements)

    def _torch(self, **kwargs):
        self.calls.append(("PyTorchUtils.installTorch", kwargs))
        self.installed.add("torch")
        self.torchVersion = "2.6.0"
        return object()


def test_nothing_missing_asks_nothing(monkeypatch):
    machine = Machine(monkeypatch)
    assert dependencies.ensureDependencies()
    assert machine.dialogs == [] and machine.calls == []


def test_torch_comes_from_the_pytorch_extension_with_a_lower_bound_after_one_confirmation(monkeypatch):
    machine = Machine(monkeypatch, installed=())
    assert dependencies.ensureDependencies()
    assert len(machine.dialogs) == 1
    assert all(package in machine.dialogs[0] for package in ("torch>=2.0", "scipy>=1.10", "onnxruntime>=1.16"))
    assert machine.calls == [
        ("PyTorchUtils.installTorch", {"askConfirmation": False, "torchVersionRequirement": ">=2.0"}),
        ("pip", ["scipy>=1.10", "onnxruntime>=1.16"]),
    ]


def test_declining_installs_nothing(monkeypatch):
    machine = Machine(monkeypatch, installed=("scipy", "onnxruntime"), answer=False)
    assert not dependencies.ensureDependencies()
    assert len(machine.dialogs) == 1 and machine.calls == []


def test_without_the_pytorch_extension_the_error_says_to_install_it(monkeypatch):
    machine = Machine(monkeypatch, installed=("scipy", "onnxruntime"), pyTorchExtension=False)
    with pytest.raises(RuntimeError, match="Install the 'PyTorch' extension from the Extensions Manager"):
        dependencies.ensureDependencies()
    assert machine.dialogs == [] and machine.calls == []


@pytest.mark.parametrize("installed, torchVersion, expected", [
    (("torch", "scipy", "onnxruntime"), "2.5.1", True),
    (("torch", "scipy"), "2.5.1", False),
    (("scipy", "onnxruntime"), None, False),
    (("torch", "scipy", "onnxruntime"), "1.13.1", False),
])
def test_ready_says_whether_everything_is_there_without_asking(monkeypatch, installed, torchVersion, expected):
    machine = Machine(monkeypatch, installed=installed, torchVersion=torchVersion)
    assert dependencies.ready() is expected
    assert machine.dialogs == [] and machine.calls == []


def test_a_too_old_torch_is_reported_not_replaced(monkeypatch):
    machine = Machine(monkeypatch, torchVersion="1.13.1+cu117")
    with pytest.raises(RuntimeError, match="2.0 or newer, but PyTorch 1.13.1"):
        dependencies.ensureDependencies()
    assert machine.calls == []


def test_onnxruntime_is_installed_with_pip_like_scipy(monkeypatch):
    machine = Machine(monkeypatch, installed=("torch", "scipy"))
    assert dependencies.ensureDependencies()
    assert len(machine.dialogs) == 1 and "onnxruntime>=1.16" in machine.dialogs[0]
    assert machine.calls == [("pip", ["onnxruntime>=1.16"])]


def test_a_failed_pip_install_raises_once_without_its_own_dialog(monkeypatch):
    machine = Machine(monkeypatch, installed=("torch",), pipFails=True)
    with pytest.raises(RuntimeError, match="pip failed"):
        dependencies.ensureDependencies()
    assert len(machine.dialogs) == 1  # the confirmation only; the caller shows the error


def test_version_comparison():
    assert dependencies.torchTooOld("1.13.1+cu117")
    assert not dependencies.torchTooOld("2.0.0")
    assert not dependencies.torchTooOld("2.13.0+cpu")
    assert not dependencies.torchTooOld(None)
