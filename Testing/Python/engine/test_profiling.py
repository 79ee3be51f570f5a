"""``benchmark --profile``'s profiled child: the real segment command, with every part of the run timed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import SimpleITK as sitk

from conftest import SPACING, make_volume
from gastric_propagate.profiling import ROWS

ENGINE = os.path.dirname(os.path.dirname(os.path.abspath(sys.modules["gastric_propagate"].__file__)))


def test_the_profiled_child_runs_the_segment_command_and_times_each_part(tmp_path):
    image, label = make_volume(depth=16, size=64, centre_z=8, radius_mm=10.0)
    annotation = np.zeros_like(label)
    annotation[8] = label[8]
    for name, array in (("ct.nrrd", image), ("painted.nrrd", annotation)):
        written = sitk.GetImageFromArray(array)
        written.SetSpacing(SPACING)
        sitk.WriteImage(written, str(tmp_path / name))
    out = tmp_path / "profile.json"
    completed = subprocess.run(
        [sys.executable, "-m", "gastric_propagate.profiling", str(out), "segment", "--image", str(tmp_path / "ct.nrrd"),
         "--annotation", str(tmp_path / "painted.nrrd"), "--output", str(tmp_path / "out.nrrd"), "--report",
         str(tmp_path / "report.json"), "--device", "cpu"],
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ENGINE), timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("tumour: ")  # the command's own line: the real command ran
    run = json.loads(out.read_text())
    parent_rows = {"process_start", "process_exit"}  # measured by the parent, around the child
    assert {key for key, _ in ROWS} - parent_rows <= set(run)
    assert all(run[key] >= 0 for key, _ in ROWS if key not in parent_rows | {"other"})
    assert run["import_runtime"] > 0 and run["weights"] > 0 and run["read"] > 0 and run["write"] > 0
    assert run["runtime"] == "onnxruntime"  # the bundled ONNX files, run without torch
    assert run["registration"] > 0  # the vote ran, and its registration was timed apart
    assert run["started"] <= run["finished"] and run["device"] == "cpu"
    report = json.loads((tmp_path / "report.json").read_text())
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out.nrrd"))).sum() == report["voxels"] > 0
    engine = sum(run[key] for key in ("preprocessing", "proposer", "refiner", "paste_back", "vote", "confidence"))
    assert abs(engine - report["seconds"]) < 0.01  # the parts add up to the engine's own figure
    assert run["registration"] < engine  # it ran beside the networks, inside the engine's time
