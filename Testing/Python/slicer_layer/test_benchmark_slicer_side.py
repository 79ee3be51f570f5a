"""``scripts/benchmark_slicer_side.py`` runs against real MRML and prints a figure for each of the four steps and for
Cancel at each stage that lasts."""

from __future__ import annotations

import re
import subprocess
import sys

from scene_helpers import REPO, slicer  # noqa: F401  (slicer: skipped without slicer-core)


def test_the_slicer_side_benchmark_prints_its_figures():
    completed = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark_slicer_side.py"), "--repeats", "1"],
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-2000:]
    figures = dict(re.findall(r"^  (\w+)\s+([\d.]+) ms", completed.stdout, flags=re.MULTILINE))
    assert set(figures) == {"prepare", "apply", "prepareCorrections", "sendAhead"}, completed.stdout
    assert all(float(value) > 0 for value in figures.values())
    cancels = dict(re.findall(r"^  during (\w+)\s+(.+)$", completed.stdout, flags=re.MULTILINE))
    assert set(cancels) == {"load", "proposer", "refiner"}, completed.stdout
    assert all(re.fullmatch(r"[\d.]+ ms|the run ended before it was seen", text) for text in cancels.values())
