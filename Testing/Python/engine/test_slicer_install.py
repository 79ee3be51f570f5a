"""What the extension installs into Slicer: the files GastricPropagate/CMakeLists.txt names, and nothing more.

The install list is worked out as CMake would (its ``set``, ``file(GLOB ...)`` and ``list`` commands emulated here),
copied into a folder, and the segment command is run from that folder alone, as Slicer's child process runs it.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk

from conftest import SPACING, make_volume
from gastric_propagate.protocol import EXIT_WITH_PARENT_ENV

MODULE_DIR = Path(__file__).resolve().parents[3] / "GastricPropagate"
NOT_FOR_SLICER = ("gastric_propagate/synthetic/", "gastric_propagate/training/", "gastric_propagate/evaluation/",
                  "gastric_propagate/benchmark.py", "gastric_propagate/profiling.py", "gastric_propagate/demo.py")


# ------------------------------------------------------------------------------------------- CMake emulation


def _commands(text: str):
    """(name, arguments) of each command in a CMake file, comments removed; quotes are not needed here."""
    text = re.sub(r"#[^\n]*", "", text)
    for match in re.finditer(r"(\w+)\s*\(([^()]*)\)", text):
        yield match.group(1), match.group(2).split()


def _expand(arguments: list[str], variables: dict[str, list[str]]) -> list[str]:
    expanded = []
    for argument in arguments:
        value = re.sub(r"\$\{(\w+)\}", lambda m: ";".join(variables.get(m.group(1), [])), argument)
        expanded += [part for part in value.split(";") if part]
    return expanded


def _glob(source: Path, pattern: str, recurse: bool) -> list[str]:
    """CMake's file(GLOB) (``*`` stays within a folder, folders listed too) or file(GLOB_RECURSE) (files of every
    folder below the pattern's folder), relative to ``source``."""
    folder, name = os.path.split(pattern)
    if not recurse:
        return sorted(path.relative_to(source).as_posix() for path in source.glob(pattern))
    found = []
    for top in (source.glob(folder) if folder else [source]):
        for root, _, files in os.walk(top):
            found += [(Path(root) / file).relative_to(source).as_posix()
                      for file in files if fnmatch.fnmatchcase(file, name)]
    return sorted(found)


def installed_files(cmake_file: Path) -> list[str]:
    """The SCRIPTS and RESOURCES that ``slicerMacroBuildScriptedModule`` installs, relative to the module folder."""
    source = cmake_file.parent
    variables = {"CMAKE_CURRENT_SOURCE_DIR": [str(source)]}
    for name, arguments in _commands(cmake_file.read_text()):
        arguments = _expand(arguments, variables)
        if name == "set":
            variables[arguments[0]] = arguments[1:]
        elif name == "file":
            mode, variable, *patterns = arguments
            assert mode in ("GLOB", "GLOB_RECURSE"), f"file({mode} ...) is not emulated"
            patterns = [p for p in patterns if p not in ("CONFIGURE_DEPENDS", "RELATIVE", str(source))]
            variables[variable] = [path for pattern in patterns
                                   for path in _glob(source, pattern, recurse=mode == "GLOB_RECURSE")]
        elif name == "list":
            mode, variable, *rest = arguments
            if mode == "FILTER":
                keep = rest[0] == "INCLUDE"
                variables[variable] = [v for v in variables.get(variable, []) if bool(re.search(rest[2], v)) == keep]
            elif mode == "APPEND":
                variables[variable] = variables.get(variable, []) + rest
            elif mode == "REMOVE_ITEM":
                variables[variable] = [v for v in variables.get(variable, []) if v not in rest]
            else:
                raise AssertionError(f"list({mode} ...) is not emulated")
        elif name == "slicerMacroBuildScriptedModule":
            keywords = {"NAME", "SCRIPTS", "RESOURCES", "WITH_GENERIC_TESTS", "WITH_SUBDIR"}
            files, section = [], None
            for argument in arguments:
                if argument in keywords:
                    section = argument
                elif section in ("SCRIPTS", "RESOURCES"):
                    files.append(argument)
            return files
    raise AssertionError(f"{cmake_file} builds no scripted module")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The module folder as Slicer gets it: only the files CMake would install."""
    folder = tmp_path_factory.mktemp("slicer-install")
    for relative in installed_files(MODULE_DIR / "CMakeLists.txt"):
        assert (MODULE_DIR / relative).is_file(), f"CMakeLists.txt installs {relative}, which does not exist"
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(MODULE_DIR / relative, folder / relative)
    return folder


# ------------------------------------------------------------------------------------------------- the tests


def test_the_install_list_holds_the_module_the_engine_slicer_runs_and_the_weights():
    files = installed_files(MODULE_DIR / "CMakeLists.txt")
    for needed in ("GastricPropagate.py", "GastricPropagateLib/logic.py", "GastricPropagateLib/widget.py",
                   "GastricPropagateLib/controller.py", "GastricPropagateLib/self_test.py",
                   "GastricPropagateLib/testdata.py", "Resources/UI/GastricPropagate.ui",
                   "gastric_propagate/cli.py", "gastric_propagate/worker.py", "gastric_propagate/protocol.py",
                   "gastric_propagate/inference/pipeline.py", "gastric_propagate/inference/backends.py",
                   "gastric_propagate/inference/result.py",
                   "gastric_propagate/data/volumes.py", "gastric_propagate/data/output_checks.py",
                   "gastric_propagate/data/mask_boxes.py",
                   "gastric_propagate/data/outputs.py", "gastric_propagate/inference/weights/proposer.pt",
                   "gastric_propagate/inference/onnx_networks.py", "gastric_propagate/inference/weights/proposer.onnx",
                   "gastric_propagate/inference/weights/refiner.onnx"):
        assert needed in files, needed
    assert not [path for path in files if path.startswith(NOT_FOR_SLICER) or "__pycache__" in path]


def test_the_emulation_sees_what_a_recursive_glob_would_install(tmp_path):
    """The check above can fail: the old GLOB_RECURSE of the whole engine installed synthetic/ and training/."""
    cmake = tmp_path / "CMakeLists.txt"
    cmake.write_text("file(GLOB_RECURSE ENGINE RELATIVE ${CMAKE_CURRENT_SOURCE_DIR} gastric_propagate/*.py)\n"
                     'list(FILTER ENGINE EXCLUDE REGEX "__pycache__")  # a comment (with parentheses)\n'
                     "slicerMacroBuildScriptedModule(NAME X SCRIPTS ${ENGINE} WITH_GENERIC_TESTS)\n")
    shutil.copytree(MODULE_DIR / "gastric_propagate", tmp_path / "gastric_propagate")
    files = installed_files(cmake)
    assert "gastric_propagate/synthetic/phantom.py" in files and "gastric_propagate/training/train.py" in files
    assert not any("__pycache__" in path for path in files)


def test_the_segment_command_runs_from_the_installed_files_alone(installed, tmp_path):
    """As Slicer's child process runs it (``python -m gastric_propagate.cli segment``), with only the installed
    folder on sys.path for the engine (onnxruntime, numpy, SimpleITK come from this environment): the installed ONNX
    files run without torch."""
    _write_case(tmp_path)
    loaded = tmp_path / "modules.json"
    run = _run_installed(installed, loaded, tmp_path, [
        "segment", "--image", str(tmp_path / "ct.nrrd"), "--annotation", str(tmp_path / "painted.nrrd"),
        "--output", str(tmp_path / "out.nrrd"), "--report", str(tmp_path / "report.json"), "--device", "cpu",
        "--progress"])
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out.nrrd").is_file() and json.loads((tmp_path / "report.json").read_text())["volume_ml"] > 0
    modules = json.loads(loaded.read_text())
    engine = {name: file for name, file in modules.items() if name.split(".")[0] == "gastric_propagate"}
    assert engine and all(Path(file).resolve().is_relative_to(installed.resolve()) for file in engine.values())
    assert not [name for name in engine if name.split(".")[1:2] in (["synthetic"], ["training"], ["evaluation"])]
    assert "onnxruntime" in modules and "torch" not in modules
    for absent in ("synthetic", "training", "evaluation"):
        assert not (installed / "gastric_propagate" / absent).exists()



@pytest.mark.parametrize("command", [["train", "--phantoms", "1", "--out", "w"], ["demo"],
                                     ["make-phantoms", "--out", "p"]])
def test_a_command_the_extension_does_not_install_says_where_to_run_it(installed, tmp_path, command):
    """The extension installs what segment and serve need: the other commands of the installed CLI name where they
    run (the project's own environment), not a ModuleNotFoundError traceback."""
    run = _run_installed(installed, tmp_path / "modules.json", tmp_path, command)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert f"gastric-propagate {command[0]} is not part of this install" in run.stderr
    assert f".venv/bin/gastric-propagate {command[0]}" in run.stderr

def _write_case(folder: Path) -> None:
    """A small CT (ct.nrrd) and its painted slice (painted.nrrd)."""
    image, label = make_volume(depth=16, size=64, centre_z=8, radius_mm=10.0)
    annotation = label * 0
    annotation[8] = label[8]
    for name, array in (("ct.nrrd", image), ("painted.nrrd", annotation)):
        written = sitk.GetImageFromArray(array)
        written.SetSpacing(SPACING)
        sitk.WriteImage(written, str(folder / name))


def _run_installed(installed: Path, loaded: Path, folder: Path, arguments: list[str],
                   stdin: str | None = None) -> subprocess.CompletedProcess:
    """``python -m gastric_propagate.cli <arguments>`` with only the installed folder on sys.path for the engine;
    the modules it loaded are written to ``loaded`` (JSON: name -> file) by an exit handler (the command ends the
    process once its exit handlers have run: ``cli.exit_now``)."""
    boot = (
        "import atexit, json, runpy, sys\n"
        "from pathlib import Path\n"
        f"source = Path({str(MODULE_DIR)!r}).resolve()\n"
        "sys.path[:] = [sys.argv[1]] + [p for p in sys.path if p and Path(p).resolve() != source]\n"
        "out, sys.argv = sys.argv[2], ['gastric_propagate.cli', *sys.argv[3:]]\n"
        "atexit.register(lambda: Path(out).write_text(json.dumps({name: getattr(module, '__file__', None)\n"
        "                                                         for name, module in list(sys.modules.items())})))\n"
        "runpy.run_module('gastric_propagate.cli', run_name='__main__', alter_sys=True)\n")
    # As the module starts it: asked to end with its parent (launchers.childEnvironment), which loads parent_watch.
    environment = {**os.environ, EXIT_WITH_PARENT_ENV: "1"}
    return subprocess.run([sys.executable, "-I", "-c", boot, str(installed), str(loaded), *arguments], cwd=folder,
                          capture_output=True, text=True, timeout=300, input=stdin, env=environment)


def test_the_warm_worker_runs_from_the_installed_files_alone(installed, tmp_path):
    """``gastric-propagate serve``, as the module would start it: one request, answered, then stdin closed."""
    _write_case(tmp_path)
    request = json.dumps({"id": 7, "image": str(tmp_path / "ct.nrrd"), "annotation": str(tmp_path / "painted.nrrd"),
                          "output": str(tmp_path / "out.nrrd")})
    loaded = tmp_path / "modules.json"
    run = _run_installed(installed, loaded, tmp_path, ["serve", "--device", "cpu"], stdin=request + "\n")
    assert run.returncode == 0, run.stderr
    results = [json.loads(line[len("RESULT "):]) for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert [(result["id"], result["code"]) for result in results] == [(7, 0)]
    assert (tmp_path / "out.nrrd").is_file()
    modules = json.loads(loaded.read_text())
    engine = [file for name, file in modules.items() if name.split(".")[0] == "gastric_propagate"]
    assert engine and all(Path(file).resolve().is_relative_to(installed.resolve()) for file in engine)


def _engine_modules_named(path: Path) -> set[str]:
    """Every ``gastric_propagate.*`` module a file imports, at the top or inside a function."""
    named = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            named |= {alias.name for alias in node.names if alias.name.split(".")[0] == "gastric_propagate"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("gastric_"):
            named.add(node.module)
            named |= {f"{node.module}.{alias.name}" for alias in node.names
                      if (MODULE_DIR / (node.module + "." + alias.name).replace(".", "/")).with_suffix(".py").is_file()}
    return named


def _missing(installed: Path, files) -> list[str]:
    return sorted(f"{file.name}: {module}" for file in files for module in _engine_modules_named(file)
                  if not (installed / module.replace(".", "/")).with_suffix(".py").is_file()
                  and not (installed / module.replace(".", "/") / "__init__.py").is_file())


def test_every_engine_module_the_slicer_layer_imports_is_installed(installed):
    """The module's own process (panel, Logic, scene I/O) imports a few torch-free parts of the engine."""
    assert not _missing(installed, sorted((installed / "GastricPropagateLib").glob("*.py")))


def _libModulesNamed(path: Path) -> set[str]:
    """Every ``GastricPropagateLib`` module a file imports, absolutely or (inside the package) relatively."""
    inLib = path.parent.name == "GastricPropagateLib"
    named = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and inLib:
                named |= {node.module} if node.module else {alias.name for alias in node.names}
            elif node.level == 0 and (node.module or "").startswith("GastricPropagateLib."):
                named.add(node.module.split(".")[1])
    return named


def test_the_module_file_and_its_self_test_import_only_installed_modules(installed):
    """The self-test runs in Slicer from the installed files: it builds its CT itself (GastricPropagateLib.testdata),
    not with the engine's synthetic/ phantoms, which Slicer does not get."""
    files = [installed / "GastricPropagate.py", installed / "GastricPropagateLib" / "self_test.py"]
    assert not _missing(installed, files)
    named = _libModulesNamed(files[0]) | _libModulesNamed(files[1])
    assert {"widget", "self_test", "testdata"} <= named
    assert not [name for name in named if not (installed / "GastricPropagateLib" / f"{name}.py").is_file()]
