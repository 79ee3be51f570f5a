"""Bad input is refused before any network runs, with a message that says what to do."""

import numpy as np
import pytest

from conftest import SPACING
from gastric_propagate.data.annotation import annotation_from_label
from gastric_propagate.errors import InputError


def run(segmenter, image, annotation, spacing=SPACING):
    return segmenter.segment(image, spacing, annotation)


def test_empty_annotation(oracle_segmenter, volume):
    image, label = volume
    with pytest.raises(InputError, match="empty.*Paint"):
        run(oracle_segmenter, image, np.zeros_like(label))


def test_annotation_touching_the_edge(oracle_segmenter, volume):
    image, label = volume
    annotation = annotation_from_label(label)
    k = int(np.flatnonzero(annotation.any(axis=(1, 2)))[0])
    annotation[k, 64, 0:70] = 1
    with pytest.raises(InputError, match=f"slice {k} touches the edge"):
        run(oracle_segmenter, image, annotation)


def test_annotation_on_another_grid(oracle_segmenter, volume):
    image, label = volume
    with pytest.raises(InputError, match="grid"):
        run(oracle_segmenter, image, annotation_from_label(label)[:, :100])


def test_two_dimensional_image(oracle_segmenter, volume):
    image, label = volume
    with pytest.raises(InputError, match="3D CT"):
        run(oracle_segmenter, image[20], label[20])


@pytest.mark.parametrize("make", [
    lambda image: (image - image.min()) / float(image.max() - image.min()),  # a normalised 0-1 image
    lambda image: np.abs(image.astype(np.float32)) * 3 + 100,               # MR-like: no air, positive values
])
def test_not_ct_intensities(oracle_segmenter, volume, make):
    image, label = volume
    with pytest.raises(InputError, match="Hounsfield"):
        run(oracle_segmenter, make(image), annotation_from_label(label))


def test_raw_detector_values_get_a_rescale_hint(oracle_segmenter, volume):
    image, label = volume
    with pytest.raises(InputError, match="Rescale Slope/Intercept"):
        run(oracle_segmenter, image.astype(np.int32) + 1024, annotation_from_label(label))


def test_nan_voxels(oracle_segmenter, volume):
    image, label = volume
    image = image.astype(np.float32)
    image[3, 4, 5] = np.nan
    with pytest.raises(InputError, match="1 NaN"):
        run(oracle_segmenter, image, annotation_from_label(label))


def test_huge_volume_is_refused_without_allocating(oracle_segmenter, monkeypatch, volume):
    import gastric_propagate.data.validation as validation

    image, label = volume
    monkeypatch.setattr(validation, "MAX_VOXELS", image.size - 1)
    with pytest.raises(InputError, match="Crop Volume"):
        run(oracle_segmenter, image, annotation_from_label(label))


def test_bad_spacing(oracle_segmenter, volume):
    image, label = volume
    with pytest.raises(InputError, match="spacing"):
        run(oracle_segmenter, image, annotation_from_label(label), spacing=(0.8, 0.0, 2.5))
