"""scripts/thick_slices.py: a thin series made again as thick slices, the HU averaged and the label by coverage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

SCRIPT = Path(__file__).resolve().parents[4] / "scripts" / "thick_slices.py"


def _write_case(folder: Path, name: str, image: np.ndarray, label: np.ndarray, slice_mm: float) -> None:
    for suffix, array in (("image", image), ("label", label)):
        volume = sitk.GetImageFromArray(array)
        volume.SetSpacing((0.8, 0.8, slice_mm))
        volume.SetOrigin((-10.0, 5.0, 100.0))
        sitk.WriteImage(volume, str(folder / f"{name}_{suffix}.nii.gz"))


@pytest.mark.parametrize("value", [1, 2])  # a label stored as 2 is the same lesion
def test_thick_slices_average_the_thin_ones_and_label_where_the_lesion_covers_more_than_a_quarter(tmp_path, value):
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    # 21 slices of 1 mm: HU rises 10 per slice; the lesion on thin slices 5-11 (7 mm, centred on 8 mm)
    image = np.repeat(np.arange(21, dtype=np.int16)[:, None, None] * 10, 6, axis=1).repeat(6, axis=2)
    label = np.zeros_like(image, dtype=np.uint8)
    label[5:12, 2:4, 2:4] = value
    _write_case(data, "thin", image, label, 1.0)
    _write_case(data, "thick", image[::5], label[::5], 5.0)  # already 5 mm: left out
    done = subprocess.run([sys.executable, str(SCRIPT), "--data", str(data), "--out", str(out), "--thickness", "5"],
                          capture_output=True, text=True, check=True)
    assert "thick: slices already 5.00 mm, left out" in done.stdout
    assert not (out / "thick_image.nii.gz").exists()

    thick_image = sitk.ReadImage(str(out / "thin_image.nii.gz"))
    thick_label = sitk.ReadImage(str(out / "thin_label.nii.gz"))
    assert thick_image.GetSize() == (6, 6, 4)  # 20 mm between the first and last thin centres: four 5 mm slabs
    assert np.allclose(thick_image.GetSpacing(), (0.8, 0.8, 5.0))
    assert np.allclose(thick_image.GetOrigin(), (-10.0, 5.0, 102.25), atol=0.01)  # the first slab's centre
    assert thick_label.GetSize() == thick_image.GetSize()
    assert np.allclose(thick_label.GetOrigin(), thick_image.GetOrigin())
    hu = sitk.GetArrayFromImage(thick_image)[:, 0, 0]
    # Each slab's HU is the mean over the thin series it spans: 10 HU per mm at its centre's position.
    centres = (np.array(thick_image.GetOrigin()[2]) + 5.0 * np.arange(4)) - 100.0
    assert np.allclose(hu, 10.0 * centres, atol=1.0)
    # The lesion lies on thin centres 5-11 mm, half-covered at 4.5 and 11.5 once interpolated: the slabs [0, 5),
    # [5, 10) and [10, 15) are 0.05, 1 and 0.35 lesion. Labelled above a quarter: the second and the third.
    covered = sitk.GetArrayFromImage(thick_label).any(axis=(1, 2))
    assert covered.tolist() == [False, True, True, False]
    assert sitk.GetArrayFromImage(thick_label)[1].sum() == 4  # in-plane the lesion's 2 x 2 pixels, untouched
