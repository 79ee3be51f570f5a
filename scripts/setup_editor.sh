#!/usr/bin/env bash
# Creates .venv-editor/ for the Segment Editor end-to-end test only (scripts/test.sh runs it; users of the module or
# the command line do not need it). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
PIP=(-m pip install --quiet --disable-pip-version-check)
# .venv-editor/: the Segment Editor end-to-end test (Testing/Python/slicer_layer/test_segment_editor.py) on
# trame-slicer's editor, whose slicer-layer-dm is built for slicer-core 5.11 only (.venv/ has 5.13).
if [ ! -x .venv-editor/bin/python ]; then
    "$PYTHON" -m venv .venv-editor
fi
.venv-editor/bin/python "${PIP[@]}" "torch==2.13.0"
.venv-editor/bin/python "${PIP[@]}" -e ".[test,editor]"
# Its slice views render offscreen through VTK's EGL with Mesa's software renderer: install those where missing.
if command -v dpkg-query >/dev/null 2>&1; then
    missing=()
    for package in libegl1 libegl-mesa0 libgl1-mesa-dri; do
        dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null | grep -qx installed || missing+=("$package")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        sudo=""
        [ "$(id -u)" -eq 0 ] || sudo=sudo
        $sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}"
    fi
fi
echo "Installed for the Segment Editor test: $(.venv-editor/bin/python -m pip show trame-slicer slicer-core \
    | awk '/^Name|^Version/ {printf "%s ", $2}')"
