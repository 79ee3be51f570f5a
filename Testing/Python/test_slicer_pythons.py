"""What Slicer runs must work on the oldest supported Slicer's Python (5.8, Python 3.9) and on 5.10's (3.12).

Slicer loads the module files and the engine's ``inference/`` and ``data/`` packages, and runs the engine's CLI
(``cli.py`` -> ``file_segmentation.py``) in PythonSlicer. ``vermin`` checks the syntax, library calls and
arguments they use. It does not see annotations evaluated at run time, so two AST checks cover those: in a file
without ``from __future__ import annotations`` no annotation may use ``X | Y``, and a ``@parameterNodeWrapper``
class (whose annotations Slicer evaluates) may not use it at all.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "GastricPropagate"
ENGINE = MODULE / "gastric_propagate"
OLDEST_PYTHON = (3, 9)

#: Everything the Slicer application imports or runs, as files.
SLICER_FILES = sorted(
    [MODULE / "GastricPropagate.py", *(MODULE / "GastricPropagateLib").glob("*.py"),
     *(ENGINE / "inference").glob("*.py"), *(ENGINE / "data").glob("*.py"),
     *(ENGINE / name for name in ("__init__.py", "digests.py", "errors.py", "cli.py", "file_segmentation.py",
                                  "metrics.py", "protocol.py", "worker.py"))])


def _id(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_the_file_list_is_complete():
    assert len(SLICER_FILES) >= 20 and all(path.is_file() for path in SLICER_FILES)


def _vermin(paths) -> subprocess.CompletedProcess:
    pytest.importorskip("vermin", reason="vermin is in the test extra: pip install -e '.[test]'")
    target = "-t={}.{}-".format(*OLDEST_PYTHON)
    code = "import sys, vermin; sys.argv[0] = 'vermin'; sys.exit(vermin.main())"
    return subprocess.run([sys.executable, "-c", code, target, "--no-tips", "--violations", "--eval-annotations",
                           *map(str, paths)], capture_output=True, text=True, timeout=300)


def test_vermin_finds_nothing_newer_than_python_3_9():
    completed = _vermin(SLICER_FILES)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_vermin_flags_a_python_3_10_call(tmp_path):
    path = tmp_path / "newer.py"
    path.write_text("pairs = list(zip([1], [2], strict=True))\n")
    completed = _vermin([path])
    assert completed.returncode != 0 and "zip(strict)" in completed.stdout


@pytest.mark.parametrize("path", SLICER_FILES, ids=_id)
def test_parses_with_the_python_3_9_grammar(path):
    ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=OLDEST_PYTHON)


def _annotations(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            arguments = node.args
            for argument in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs,
                             arguments.vararg, arguments.kwarg]:
                if argument is not None and argument.annotation is not None:
                    yield argument.annotation
            if node.returns is not None:
                yield node.returns
        elif isinstance(node, ast.AnnAssign):
            yield node.annotation


def _usesUnionOperator(annotation: ast.AST) -> bool:
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        try:
            annotation = ast.parse(annotation.value, mode="eval")
        except SyntaxError:
            return False
    return any(isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr) for node in ast.walk(annotation))


def _hasFutureAnnotations(tree: ast.Module) -> bool:
    return any(isinstance(node, ast.ImportFrom) and node.module == "__future__"
               and any(alias.name == "annotations" for alias in node.names) for node in tree.body)


@pytest.mark.parametrize("path", SLICER_FILES, ids=_id)
def test_union_annotations_are_never_evaluated(path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    problems = []
    if not _hasFutureAnnotations(tree):
        problems += [f"line {a.lineno}: 'X | Y' annotation without 'from __future__ import annotations'"
                     for a in _annotations(tree) if _usesUnionOperator(a)]
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any("parameterNodeWrapper" in ast.dump(d) for d in node.decorator_list):
            problems += [f"line {a.lineno}: 'X | Y' in a parameterNodeWrapper class (Slicer evaluates these; use "
                         "Optional/Union)" for a in _annotations(node) if _usesUnionOperator(a)]
    assert not problems, "\n".join(problems)


def test_the_checks_catch_what_python_3_9_refuses():
    """The checks themselves: each flags a known 3.10 construct."""
    dataclassWithoutFuture = ast.parse("from dataclasses import dataclass\n@dataclass\nclass A:\n    x: int | None\n")
    assert not _hasFutureAnnotations(dataclassWithoutFuture)
    assert any(_usesUnionOperator(a) for a in _annotations(dataclassWithoutFuture))
    assert _hasFutureAnnotations(ast.parse("from __future__ import annotations\n"))
    with pytest.raises(SyntaxError):
        ast.parse("match x:\n    case 1:\n        pass\n", feature_version=OLDEST_PYTHON)


#: Slicer's Pythons the engine's child process is run under: 5.8's (the oldest supported) and 5.10's, each in the
#: virtual environment scripts/setup_slicer_pythons.sh makes where that Python is found.
SLICER_PYTHONS = {"3.9": REPO / ".venv-py39" / "bin" / "python", "3.12": REPO / ".venv-py312" / "bin" / "python"}


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8"])
@pytest.mark.parametrize("version", sorted(SLICER_PYTHONS))
def test_the_engine_segments_under_slicers_pythons_without_torch(version, backend, tmp_path):
    """The child process as Slicer 5.8 (Python 3.9, the oldest onnxruntime pip gives it) and 5.10 (Python 3.12) run
    it, without torch. The mask must be the one the main environment's Python writes."""
    import SimpleITK as sitk

    from gastric_propagate.data.annotation import annotation_from_label
    from gastric_propagate.demo import DEMO_SEED
    from gastric_propagate.synthetic.phantom import make_phantom

    slicer_python = SLICER_PYTHONS[version]
    if not slicer_python.exists():
        pytest.skip(f"no {slicer_python.parent.parent.name}/ (scripts/setup_slicer_pythons.sh makes it where Python "
                    f"{version} is found; scripts/test.sh runs it)")
    phantom = make_phantom(DEMO_SEED)
    image, label = phantom.arrays()
    for name, array in (("ct.nrrd", image), ("painted.nrrd", annotation_from_label(label))):
        written = sitk.GetImageFromArray(array)
        written.SetSpacing(phantom.spacing)
        sitk.WriteImage(written, str(tmp_path / name))
    masks = {}
    for python in (slicer_python, Path(sys.executable)):
        output = tmp_path / f"{python.parent.parent.name}.nrrd"
        command = [str(python), "-m", "gastric_propagate.cli", "segment", "--image", str(tmp_path / "ct.nrrd"),
                   "--annotation", str(tmp_path / "painted.nrrd"), "--output", str(output), "--backend", backend]
        run = subprocess.run(command, capture_output=True, text=True, timeout=300,
                             env={"PYTHONPATH": str(MODULE), "PATH": "/usr/bin:/bin"})
        assert run.returncode == 0, run.stdout + run.stderr
        masks[python] = sitk.GetArrayFromImage(sitk.ReadImage(str(output)))
    assert masks[slicer_python].any()
    assert (masks[slicer_python] == masks[Path(sys.executable)]).all()
    no_torch = subprocess.run([str(slicer_python), "-c", "import torch"], capture_output=True, timeout=60)
    assert no_torch.returncode != 0  # the run above loaded no torch: there is none
