#!/usr/bin/env bash
# The project's test command: sets up .venv/ (and, for the whole run, .venv-editor/) if needed, then runs the whole pytest suite
# (engine, CLI, and the Slicer Logic against real MRML from slicer-core 5.13) in .venv/, and after it the Segment
# Editor end-to-end test in .venv-editor/ (trame-slicer's editor, slicer-core 5.11; see docs/developers.md). The
# main suite also runs a segmentation under Python 3.9 and 3.12 (Slicer 5.8 and 5.10) without torch, in .venv-py39/
# and .venv-py312/, where those Pythons are found.
# Arguments go to the main suite's pytest; the Segment Editor test runs second only when none are given.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# PyQt5 (the qt extra) is installed: the tests of the QProcess launcher and the panel's render fail rather than skip
# without it (Testing/Python/slicer_layer/scene_helpers.py), and Qt draws offscreen (no display here).
export GASTRIC_PROPAGATE_QT_TEST=required
export QT_QPA_PLATFORM=${QT_QPA_PLATFORM:-offscreen}
if [ $# -gt 0 ]; then
    exec .venv/bin/python -m pytest "$@"
fi
editor=0
bash scripts/setup_editor.sh || editor=$?  # its failure fails the run, after the main suite has run
bash scripts/setup_slicer_pythons.sh  # .venv-py39/, .venv-py312/: the engine under Slicer 5.8 and 5.10 Pythons
status=0
.venv/bin/python -m pytest || status=$?
echo "== Segment Editor end-to-end test (.venv-editor/: trame-slicer, slicer-core 5.11) =="
if [ "$editor" -eq 0 ]; then
    GASTRIC_PROPAGATE_EDITOR_TEST=required .venv-editor/bin/python -m pytest \
        Testing/Python/slicer_layer/test_segment_editor.py || editor=$?
else
    echo "setup_editor.sh failed ($editor): the Segment Editor test could not run"
fi
if [ "$editor" -eq 0 ]; then echo "Segment Editor test: passed"; else echo "Segment Editor test: FAILED ($editor)"; fi
[ "$status" -ne 0 ] && echo "Main suite: FAILED ($status)"
exit $(( status != 0 ? status : editor ))
