"""Metrics against values worked out by hand."""

import math

import numpy as np
import pytest

from gastric_propagate.metrics import dice, hausdorff95_mm, volume_error_percent, volume_ml


def test_dice_by_hand():
    a = np.zeros((1, 4, 4)); a[0, :2] = 1      # 8 voxels
    b = np.zeros((1, 4, 4)); b[0, 1:3] = 1     # 8 voxels, 4 shared
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0 and dice(np.zeros(3), np.zeros(3)) == 1.0 and dice(a, np.zeros_like(a)) == 0.0


def test_volume_in_ml_and_error():
    mask = np.ones((10, 10, 10))
    assert volume_ml(mask, (1.0, 2.0, 5.0)) == pytest.approx(10.0)
    assert volume_error_percent(mask[:5], mask) == pytest.approx(-50.0)


def test_hausdorff_of_a_shifted_cube_uses_the_spacing():
    a = np.zeros((20, 20, 20), bool); a[5:15, 5:15, 5:15] = True
    b = np.roll(a, 2, axis=2)  # shifted 2 voxels along x
    assert hausdorff95_mm(a, b, (3.0, 1.0, 1.0)) == pytest.approx(6.0)
    assert hausdorff95_mm(a, a, (1.0, 1.0, 1.0)) == 0.0
    assert math.isinf(hausdorff95_mm(a, np.zeros_like(a), (1.0, 1.0, 1.0)))
