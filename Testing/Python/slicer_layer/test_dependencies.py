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
                 pyTorchExtension=True, pipFails=False, gpu=True, onnxruntimeVersion="1.20.1", torchInstallFails=False):
        self.installed = set(installed)
        self.versions = {"torch": torchVersion, "onnxruntime": onnxruntimeVersion, "scipy": "1.13.1"}
        self.answer = answer
        self.dialogs: list[str] = []
        self.calls: list[tuple] = []
        self.pipFails, self.torchInstallFails = pipFails, torchInstallFails
        monkeypatch.setattr(dependencies, "isInstalled", lambda name: name in self.installed)
        monkeypatch.setattr(dependencies, "installedVersion",
                            lambda name: self.versions.get(name) if name in self.installed else None)
        import gastric_propagate.inference.backends as backends

        monkeypatch.setattr(backends, "nvidia_driver_visible", lambda: gpu)
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
        for requirement in requirements:
            name = requirement.split(">")[0].split("=")[0]
            self.installed.add(name)
            self.versions[name] = requirement.split(">=")[-1] + ".0"

    def _torch(self, **kwargs):
        self.calls.append(("PyTorchUtils.installTorch", kwargs))
        if self.torchInstallFails:  # light-the-torch exits 0 without torch; installTorch then imports it
            raise ModuleNotFoundError("No module named 'torch'")
        self.installed.add("torch")
        self.versions["torch"] = "2.6.0"
        return object()


def test_nothing_missing_asks_nothing(monkeypatch):
    machine = Machine(monkeypatch)
    assert dependencies.ensureDependencies()
    assert machine.dialogs == [] and machine.calls == []


def test_torch_comes_from_the_pytorch_extension_with_a_lower_bound_after_one_confirmation(monkeypatch):
    machine = Machine(monkeypatch, installed=())
    assert dependencies.ensureDependencies()
    assert len(machine.dialogs) == 1
    assert all(package in machine.dialogs[0] for package in ("torch>=2.0", "scipy>=1.10", "onnxruntime>=1.18"))
    assert "Cancel and choose the 'cpu' device" in machine.dialogs[0], "the way around a large download"
    assert machine.calls == [
        ("pip", ["scipy>=1.10", "onnxruntime>=1.18"]),
        ("PyTorchUtils.installTorch", {"askConfirmation": False, "torchVersionRequirement": ">=2.0"}),
    ]


def test_declining_installs_nothing(monkeypatch):
    machine = Machine(monkeypatch, installed=("scipy", "onnxruntime"), answer=False)
    assert not dependencies.ensureDependencies()
    assert len(machine.dialogs) == 1 and machine.calls == []


def test_without_the_pytorch_extension_cuda_says_to_install_it_and_auto_runs_on_the_cpu(monkeypatch):
    machine = Machine(monkeypatch, installed=("scipy", "onnxruntime"), pyTorchExtension=False)
    with pytest.raises(RuntimeError, match="Install the 'PyTorch' extension from the Extensions Manager .*'cpu'"):
        dependencies.ensureDependencies(device="cuda")
    assert dependencies.ensureDependencies(device="auto"), "the CPU under ONNX Runtime, nothing asked"
    assert machine.dialogs == [] and machine.calls == []


def test_the_cpu_needs_no_pytorch_at_all(monkeypatch):
    """ONNX Runtime runs the networks on the CPU: a hospital machine without internet needs no 1 GB download."""
    machine = Machine(monkeypatch, installed=("scipy",), gpu=False)
    assert dependencies.ensureDependencies(device="auto")
    assert machine.calls == [("pip", ["onnxruntime>=1.18"])] and "PyTorch" not in machine.dialogs[0]
    for device in ("cpu", "cpu-int8", "auto"):
        assert dependencies.ready(device)
    assert not dependencies.ready("cuda")
    old = Machine(monkeypatch, installed=("torch", "scipy", "onnxruntime"), torchVersion="1.13.1", gpu=False)
    assert dependencies.ensureDependencies(device="cpu") and old.calls == [], "another extension's old torch: unused"


def test_an_onnxruntime_too_old_for_the_bundled_files_is_upgraded(monkeypatch):
    """onnxruntime 1.16 and 1.17 refuse the bundled files (IR version 10): the engine fell back to PyTorch, calling the
    bundled file corrupt."""
    machine = Machine(monkeypatch, installed=("scipy", "onnxruntime"), onnxruntimeVersion="1.17.3", gpu=False)
    assert not dependencies.ready("cpu")
    assert dependencies.ensureDependencies(device="cpu")
    assert machine.calls == [("pip", ["onnxruntime>=1.18"])]


@pytest.mark.parametrize("failure", ["pip", "torch"])
def test_an_install_that_fails_says_why_and_how_to_install_offline(monkeypatch, failure):
    """No internet or a proxy: pip's exit status, or light-the-torch that ends without torch ("No module named
    'torch'"), became a bare error; now the packages, the likely cause and the offline way are said."""
    installed = ("torch",) if failure == "pip" else ("scipy", "onnxruntime")
    machine = Machine(monkeypatch, installed=installed, pipFails=failure == "pip",
                      torchInstallFails=failure == "torch")
    with pytest.raises(RuntimeError) as refusal:
        dependencies.ensureDependencies(device="cuda")
    said = str(refusal.value)
    assert "could not be installed" in said and "internet access" in said and "--no-index --find-links" in said
    quoted = '"scipy>=1.10" "onnxruntime>=1.18"' if failure == "pip" else '"torch>=2.0"'
    assert f"pip download {quoted} --only-binary=:all:" in said, "quoted for any shell: '>' would redirect"
    assert f"pip_install('--no-index --find-links C:/path/to/wheels {quoted}')" in said, "versions kept: upgrades"
    assert len(machine.dialogs) == 1  # the confirmation only; the caller shows the error


@pytest.mark.parametrize("installed, torchVersion, expected", [
    (("torch", "scipy", "onnxruntime"), "2.5.1", True),
    (("torch", "scipy"), "2.5.1", False),
    (("scipy", "onnxruntime"), None, False),
    (("torch", "scipy", "onnxruntime"), "1.13.1", False),
])
def test_ready_says_whether_everything_is_there_without_asking(monkeypatch, installed, torchVersion, expected):
    machine = Machine(monkeypatch, installed=installed, torchVersion=torchVersion)  # an NVIDIA driver: torch wanted
    assert dependencies.ready() is expected
    assert machine.dialogs == [] and machine.calls == []


def test_a_too_old_torch_is_reported_not_replaced(monkeypatch):
    machine = Machine(monkeypatch, torchVersion="1.13.1+cu117")
    with pytest.raises(RuntimeError, match="2.0 or newer, but PyTorch 1.13.1.*Choose the 'cpu' device.*Uninstall"):
        dependencies.ensureDependencies()
    assert machine.calls == []


def test_onnxruntime_is_installed_with_pip_like_scipy(monkeypatch):
    machine = Machine(monkeypatch, installed=("torch", "scipy"))
    assert dependencies.ensureDependencies()
    assert len(machine.dialogs) == 1 and "onnxruntime>=1.18" in machine.dialogs[0]
    assert machine.calls == [("pip", ["onnxruntime>=1.18"])]


def test_version_comparison():
    assert dependencies.torchTooOld("1.13.1+cu117")
    assert not dependencies.torchTooOld("2.0.0")
    assert not dependencies.torchTooOld("2.13.0+cpu")
    assert not dependencies.torchTooOld(None)


def test_a_package_only_in_the_users_site_packages_is_missing_to_the_engine(monkeypatch, tmp_path):
    """Slicer may see the user's site-packages; PythonSlicer, which runs the engine, never does: "ready" there ended
    in the engine's ModuleNotFoundError, reported as a bug."""
    import site

    user, shared = tmp_path / "user-site", tmp_path / "site-packages"
    for folder, package in ((user, "gp_only_for_the_user"), (shared, "gp_for_everyone")):
        (folder / package).mkdir(parents=True)
        (folder / package / "__init__.py").write_text("")
        (folder / f"{package}-1.2.3.dist-info").mkdir()
        (folder / f"{package}-1.2.3.dist-info" / "METADATA").write_text(f"Name: {package}\nVersion: 1.2.3\n")
    monkeypatch.setattr(sys, "path", [str(user), str(shared), *sys.path])
    monkeypatch.setattr(site, "ENABLE_USER_SITE", True)
    monkeypatch.setattr(site, "getusersitepackages", lambda: str(user))
    assert not dependencies.isInstalled("gp_only_for_the_user")
    assert dependencies.installedVersion("gp_only_for_the_user") is None
    assert dependencies.isInstalled("gp_for_everyone") and dependencies.installedVersion("gp_for_everyone") == "1.2.3"


def test_a_partial_install_names_only_what_is_still_missing(monkeypatch):
    """pip installed scipy and onnxruntime, then PyTorch's install failed: the message named all three as failed,
    and the offline steps downloaded the two that were there."""
    machine = Machine(monkeypatch, installed=(), torchInstallFails=True)
    with pytest.raises(RuntimeError) as refusal:
        dependencies.ensureDependencies(device="cuda")
    said = str(refusal.value)
    assert said.startswith("These Python packages could not be installed: torch>=2.0 (")
    assert 'pip download "torch>=2.0" --only-binary' in said and "onnxruntime" not in said.split("(")[0]
    assert machine.calls[0] == ("pip", ["scipy>=1.10", "onnxruntime>=1.18"])


def test_a_package_folder_left_without_its_init_file_is_not_installed(monkeypatch, tmp_path):
    """What a failed uninstall leaves imports as an empty namespace: 'ready', then the engine failed to load it."""
    (tmp_path / "gp_half_removed").mkdir()
    (tmp_path / "gp_whole").mkdir()
    (tmp_path / "gp_whole" / "__init__.py").write_text("")
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    assert not dependencies.isInstalled("gp_half_removed") and dependencies.isInstalled("gp_whole")


@pytest.mark.parametrize("answer", [False, True])
def test_cuda_without_a_visible_nvidia_driver_says_so_before_the_pytorch_download(monkeypatch, answer):
    """Several GB for a GPU that may not be there; the driver check can miss one (WSL), so the reader decides."""
    machine = Machine(monkeypatch, installed=("scipy", "onnxruntime"), torchVersion=None, gpu=False, answer=answer)
    assert dependencies.ensureDependencies(device="cuda") is answer
    assert len(machine.dialogs) == 1 and "No NVIDIA driver is visible on this computer" in machine.dialogs[0]
    assert bool(machine.calls) is answer
