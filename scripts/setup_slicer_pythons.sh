#!/usr/bin/env bash
# Creates .venv-py39/ and .venv-py312/: the Pythons of the oldest Slicer the module supports (5.8: Python 3.9) and of
# Slicer 5.10 (Python 3.12), each with only what the module's child process needs to run the engine under ONNX
# Runtime: no torch, as in a Slicer without the PyTorch extension. Testing/Python/test_slicer_pythons.py runs a
# segmentation in each. A version not found here is skipped (and its test too); exit 0 either way. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
for version in 3.9 3.12; do
    venv=.venv-py${version/./}
    override=PYTHON${version/./}  # e.g. PYTHON39=/path/to/python3.9
    found=""
    # The first of: $PYTHON39 / $PYTHON312, pythonX.Y on the PATH (a pyenv shim may refuse to run), pyenv's own builds.
    for candidate in ${!override:-} "python$version" "$HOME"/.pyenv/versions/"$version".*/bin/python; do
        if "$candidate" -c "import sys; assert sys.version_info[:2] == tuple(map(int, '$version'.split('.')))" \
                >/dev/null 2>&1; then
            found=$candidate
            break
        fi
    done
    if [ -z "$found" ]; then
        echo "No Python $version here: $venv/ not made, its test is skipped."
        continue
    fi
    [ -x "$venv/bin/python" ] || "$found" -m venv "$venv"
    # The engine's run-time packages as pyproject.toml gives them, torch left out; onnxruntime pinned as there (1.32
    # needs Python 3.11: Python 3.9 takes 1.19.2, the last release for it).
    runtime="onnxruntime==1.32.0"
    [ "$version" = 3.9 ] && runtime="onnxruntime==1.19.2"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$runtime" "numpy>=1.24" \
        "SimpleITK>=2.3" "scipy>=1.10" "tqdm>=4.60"
    echo "Python $version for the Slicer test ($venv/): $("$venv/bin/python" -m pip show onnxruntime numpy \
        | awk '/^Name|^Version/ {printf "%s ", $2}')"
done
