#!/usr/bin/env bash
# The project's test command: sets up .venv/ if needed, then runs the whole pytest suite
# (engine, CLI, and the Slicer Logic against real MRML from slicer-core).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
