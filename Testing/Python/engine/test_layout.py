"""The engine's stages stay apart: what Slicer runs never loads training material or training libraries."""

import subprocess
import sys


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


def test_advice_loads_without_torch():
    """The panel words the engine's advice itself, in Slicer's process."""
    assert "torch" not in _modules_after("import gastric_propagate.inference.advice")
