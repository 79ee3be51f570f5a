#!/usr/bin/env bash
# Creates .venv-py39/: Python 3.9 (Slicer 5.8's Python, the oldest Slicer the module supports) with only what the
# module's child process needs to run the engine under ONNX Runtime: no torch, as in a Slicer without the PyTorch
# extension. Testing/Python/test_python39.py runs a segmentation in it. Skipped (exit 0) where no Python 3.9 is found.
# Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
# The first of: $PYTHON39, python3.9 on the PATH (a pyenv shim may refuse to run), pyenv's own 3.9 builds.
PYTHON39_FOUND=""
for candidate in ${PYTHON39:-} python3.9 "$HOME"/.pyenv/versions/3.9*/bin/python; do
    if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 9)' >/dev/null 2>&1; then
        PYTHON39_FOUND=$candidate
        break
    fi
done
if [ -z "$PYTHON39_FOUND" ]; then
    echo "No Python 3.9 here: .venv-py39/ not made, its test is skipped."
    exit 0
fi
[ -x .venv-py39/bin/python ] || "$PYTHON39_FOUND" -m venv .venv-py39
# The engine's run-time packages as pyproject.toml gives them for Python < 3.11, torch left out.
.venv-py39/bin/python -m pip install --quiet --disable-pip-version-check "onnxruntime>=1.16" "numpy>=1.24" \
    "SimpleITK>=2.3" "scipy>=1.10" "tqdm>=4.60"
echo "Python 3.9 for the oldest-Slicer test: $(.venv-py39/bin/python -m pip show onnxruntime numpy \
    | awk '/^Name|^Version/ {printf "%s ", $2}')"
