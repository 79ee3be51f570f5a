#!/usr/bin/env bash
# Creates .venv/ in the project root and installs the project into it (torch 2.13.0, SimpleITK,
# the test tools, PyQt5 for the Qt launcher test, slicer-core for the headless MRML tests, and TorchIO for training). Safe to run again.
# (The Segment Editor test's own .venv-editor/ is made by scripts/setup_editor.sh, which scripts/test.sh runs.)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
PIP=(-m pip install --quiet --disable-pip-version-check)
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# torch first and pinned: the pin fixes the version only. Where pip finds a local CPU wheel of it (these machines'
# find-links) it takes that; from PyPI on Linux it is the CUDA build, several GB.
.venv/bin/python "${PIP[@]}" "torch==2.13.0"
.venv/bin/python "${PIP[@]}" -e ".[test,qt,slicer,train]"
echo "Installed: $(.venv/bin/gastric-propagate --version)"

