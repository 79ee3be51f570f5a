"""Bad input is refused before any network runs, with a message that says what to do."""

import numpy as np
import pytest

from conftest import SPACING
from gastric_propagate.data.annotation import annotation_from_label
from gastric_propagate.data.validation import check_spacing
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


@pytest.mark.parametrize("spacing", [(0.0008, 0.0008, 0.0025), (0.8, 0.8, 80.0), (0.05, 0.8, 2.5)])
def test_a_spacing_no_ct_has_is_refused_by_the_engine_itself(oracle_segmenter, volume, spacing):
    """The engine's own contract (segment_volume), not only the command line: a header in metres or an absurd slice
    distance is named as such, before any check in mm calls the painted slice a dot."""
    image, label = volume
    with pytest.raises(InputError, match=r"outside that of any CT \(0.1 to 50 mm\).*millimetres"):
        run(oracle_segmenter, image, annotation_from_label(label), spacing=spacing)


@pytest.mark.parametrize("spacing", [(0.1, 0.1, 0.5), (2.0, 2.0, 50.0)])
def test_the_spacing_range_holds_its_ends(spacing):
    check_spacing(spacing)  # no refusal at either end


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_infinite_voxels(oracle_segmenter, volume, value):
    image, label = volume
    image = image.astype(np.float64)
    image[3, 4, 5] = value
    with pytest.raises(InputError, match="1 Inf voxels"):
        run(oracle_segmenter, image, annotation_from_label(label))


@pytest.mark.parametrize("value, message", [(-1, "negative"), (np.nan, "NaN or Inf")])
def test_annotation_with_values_no_label_map_holds(oracle_segmenter, volume, value, message):
    image, label = volume
    annotation = annotation_from_label(label).astype(np.float32)
    annotation[annotation > 0] = value
    with pytest.raises(InputError, match=f"{message}.*label map"):
        run(oracle_segmenter, image, annotation)


def test_one_voxel_annotation(oracle_segmenter, volume):
    image, _ = volume
    annotation = np.zeros(image.shape, np.uint8)
    annotation[20, 64, 60] = 1
    with pytest.raises(InputError, match="slice 20 is 1 voxel.*not a dot"):
        run(oracle_segmenter, image, annotation)


def test_float64_volume_is_limited_by_its_bytes(oracle_segmenter, monkeypatch, volume):
    import gastric_propagate.data.validation as validation

    image, label = volume
    monkeypatch.setattr(validation, "MAX_BYTES", image.size * 2)  # room for int16, not for float64
    run(oracle_segmenter, image, annotation_from_label(label))
    with pytest.raises(InputError, match="16-bit"):
        run(oracle_segmenter, image.astype(np.float64), annotation_from_label(label))


def test_a_label_map_given_as_the_ct_is_named_a_label_map(oracle_segmenter, volume):
    """A label map (0 and a few labels) given as the CT: said to be one, not "MR or normalised"."""
    image, label = volume
    with pytest.raises(InputError, match="a label map .a segmentation., not the CT") as refusal:
        run(oracle_segmenter, (label > 0).astype(np.uint8) * 3, annotation_from_label(label))
    assert "MR" not in str(refusal.value)
    with pytest.raises(InputError, match="does not look like a CT") as refusal:  # an MR-like image: no such words
        run(oracle_segmenter, (image - image.min()).astype(np.float32) * 0.37 + 0.5, annotation_from_label(label))
    assert "label map" not in str(refusal.value)
    small = np.zeros(image.shape, np.uint8)
    small[20, 64, 60] = 1  # a label map of one voxel: still named one, not blank
    with pytest.raises(InputError, match="a label map .a segmentation., not the CT"):
        run(oracle_segmenter, small, annotation_from_label(label))


@pytest.mark.parametrize("value", [0, -1024])
def test_a_blank_volume_is_named_blank_not_a_label_map(oracle_segmenter, volume, value):
    """A volume of one value everywhere (a failed load): said to be blank, whatever the value."""
    image, label = volume
    with pytest.raises(InputError, match=f"All its voxels hold {value}: the volume is blank") as refusal:
        run(oracle_segmenter, np.full(image.shape, value, np.int16), annotation_from_label(label))
    assert "label map" not in str(refusal.value)


@pytest.mark.parametrize("dtype, offset", [(np.int8, -128), (np.uint8, 0)])
def test_an_8_bit_windowed_export_is_refused_as_such(oracle_segmenter, volume, dtype, offset):
    """A viewer's 0-255 window (screen grey levels) passed the HU checks when stored signed: no CT fits in 8 bits."""
    image, label = volume
    window = np.clip((image.astype(np.float32) + 160.0) / 400.0 * 255.0, 0, 255) + offset  # W 400, L 40
    with pytest.raises(InputError, match=rf"8-bit values \({np.dtype(dtype)}\).*windowed export"):
        run(oracle_segmenter, window.astype(dtype), annotation_from_label(label))
    with pytest.raises(InputError, match="a label map .a segmentation., not the CT"):  # still named a label map
        run(oracle_segmenter, (label > 0).astype(dtype) * 3, annotation_from_label(label))
    with pytest.raises(InputError, match="the volume is blank"):  # and a blank one blank
        run(oracle_segmenter, np.full(image.shape, 7, dtype), annotation_from_label(label))


@pytest.mark.parametrize("value", [1e39, -1e300])
def test_one_voxel_beyond_float32_is_refused(oracle_segmenter, volume, value):
    """Percentiles miss one voxel; 1e39 overflowed float32 into NaN in the networks' input and cut the result."""
    image, label = volume
    corrupt = image.astype(np.float64)
    corrupt[5, 10, 10] = value
    with pytest.raises(InputError, match="beyond any CT in Hounsfield units"):
        run(oracle_segmenter, corrupt, annotation_from_label(label))
    for padding in (-32768.0, -2147483648.0):  # a sentinel outside the field of view (float32 holds it): a CT
        corrupt[5, 10, 10] = padding
        run(oracle_segmenter, corrupt, annotation_from_label(label))


@pytest.mark.parametrize("voxel_mm, width", [(0.8, 300), (8.0, 30)])
def test_a_painting_wider_than_a_tumour_is_refused_and_a_spacing_ten_times_too_large_is_named(voxel_mm, width):
    """240 mm across either way: 300 voxels of 0.8 mm, or 30 of 8 mm (an in-plane spacing written 8 for 0.8)."""
    from gastric_propagate.data.validation import check_annotation

    annotation = np.zeros((10, width + 20, width + 20), np.uint8)
    annotation[5, 10:10 + width, 10:10 + width // 2] = 1
    with pytest.raises(InputError, match="240 mm across, wider than one gastric tumour") as refused:
        check_annotation(annotation, annotation.shape, (voxel_mm, voxel_mm, 2.5), keyframes=False)
    assert ("in-plane voxels are 8 mm" in str(refused.value)) is (voxel_mm == 8.0)
