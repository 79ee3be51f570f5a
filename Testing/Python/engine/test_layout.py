"""The engine's stages stay apart: what Slicer runs never loads training material or training libraries, and no lower
layer (data/, inference/) imports a higher one (synthetic/, training/, evaluation/)."""

import ast
import subprocess
import sys
from pathlib import Path


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return set(output.split())


def test_inference_loads_no_synthetic_data_training_or_evaluation():
    loaded = _modules_after("import gastric_propagate.inference.pipeline, gastric_propagate.file_segmentation")
    for stage in ("gastric_propagate.synthetic", "gastric_propagate.training", "gastric_propagate.evaluation"):
        assert not any(name == stage or name.startswith(stage + ".") for name in loaded), stage
    assert "torchio" not in loaded and "slicer" not in loaded and "vtk" not in loaded


def test_options_load_without_torch():
    """The Slicer panel builds options in Slicer's own process; the networks run in a child process."""
    assert "torch" not in _modules_after("from gastric_propagate.inference.options import PropagationOptions")


def test_what_a_segment_run_imports_loads_no_torch():
    """torch is imported only when PyTorch runs the networks: the ONNX Runtime backend never loads it."""
    loaded = _modules_after("import gastric_propagate.cli, gastric_propagate.worker, "
                            "gastric_propagate.file_segmentation, gastric_propagate.inference.pipeline, "
                            "gastric_propagate.inference.onnx_networks")
    assert "torch" not in loaded and "onnxruntime" not in loaded  # each runtime is loaded when a Segmenter needs it


def test_advice_loads_without_torch():
    """The panel words the engine's advice itself, in Slicer's process."""
    assert "torch" not in _modules_after("import gastric_propagate.inference.advice")


# ---------------------------------------------------------------------------------------------- layers

ENGINE = Path(__file__).resolve().parents[3] / "GastricPropagate" / "gastric_propagate"
# Each lower layer and the packages it must never import (not even inside a function).
FORBIDDEN = {"data": ("synthetic", "training", "evaluation"),
             "inference": ("synthetic", "training", "evaluation")}


def _imported(path: Path, package: str) -> set[str]:
    """Every gastric_propagate module a file imports, anywhere in it, relative imports resolved."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.update([base] + [f"{base}.{alias.name}" for alias in node.names])
    return {name for name in found if name == "gastric_propagate" or name.startswith("gastric_propagate.")}


def _upward_imports(engine: Path) -> list[str]:
    wrong = []
    for layer, higher in FORBIDDEN.items():
        for path in sorted((engine / layer).rglob("*.py")):
            package = "gastric_propagate." + ".".join(path.relative_to(engine).parent.parts)
            for name in sorted(_imported(path, package)):
                parts = name.split(".")
                if len(parts) > 1 and parts[1] in higher:
                    wrong.append(f"{path.relative_to(engine)} imports {name}")
    return wrong


def test_no_lower_layer_imports_a_higher_one():
    """data/ and inference/ (what Slicer runs) never import synthetic/, training/ or evaluation/."""
    assert (ENGINE / "data").is_dir() and (ENGINE / "inference").is_dir()
    assert _upward_imports(ENGINE) == []


def test_the_layer_check_finds_an_upward_import(tmp_path):
    """The check can fail: lazy, aliased and relative upward imports are each reported."""
    for layer in ("data", "inference", "synthetic"):
        (tmp_path / layer).mkdir()
    (tmp_path / "data" / "bad.py").write_text(
        "def load():\n    from gastric_propagate.synthetic.phantom import make_phantom\n    return make_phantom\n")
    (tmp_path / "inference" / "worse.py").write_text(
        "import gastric_propagate.evaluation.baselines as b\nfrom ..training import train\nfrom . import masks\n")
    (tmp_path / "synthetic" / "fine.py").write_text("from gastric_propagate.data import cases\n")
    assert _upward_imports(tmp_path) == [
        "data/bad.py imports gastric_propagate.synthetic.phantom",
        "data/bad.py imports gastric_propagate.synthetic.phantom.make_phantom",
        "inference/worse.py imports gastric_propagate.evaluation.baselines",
        "inference/worse.py imports gastric_propagate.training",
        "inference/worse.py imports gastric_propagate.training.train",
    ]
