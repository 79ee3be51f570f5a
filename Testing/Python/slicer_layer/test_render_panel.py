"""scripts/render_panel.py renders the real .ui offscreen (PyQt5, pinned in the ``qt`` extra; skipped without it,
except under scripts/test.sh, which sets GASTRIC_PROPAGATE_QT_TEST=required)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from scene_helpers import REPO, bundledWeightsOrSkip, pyQt5OrSkip

pytestmark = pytest.mark.slicer


def test_the_panel_renders_with_the_flagged_slices_highlighted(tmp_path):
    pyQt5OrSkip("PyQt5.QtWidgets", "needs PyQt5 to render the panel")
    bundledWeightsOrSkip()
    import SimpleITK as sitk

    from GastricPropagateLib.review import LEAST_CONFIDENT_COLOUR, REVIEW_COLOUR

    output = tmp_path / "panel.png"
    environment = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "OMP_NUM_THREADS": "1",
                   "PYTHONPATH": os.pathsep.join([str(REPO / "GastricPropagate"), os.environ.get("PYTHONPATH", "")])}
    # In a child process: a QApplication must not meet the QCoreApplication other tests may have made here.
    completed = subprocess.run([sys.executable, str(REPO / "scripts" / "render_panel.py"), "--out", str(output)],
                               env=environment, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(output)))  # (height, width, channels)
    assert image.shape[1] >= 400 and image.shape[0] >= 1000
    rgb = image[..., :3].reshape(-1, 3)
    for colour in (REVIEW_COLOUR, LEAST_CONFIDENT_COLOUR):
        assert (np.abs(rgb.astype(int) - colour).sum(axis=1) == 0).sum() > 500, f"no row shows {colour}"
