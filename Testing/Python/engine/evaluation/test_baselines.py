"""The comparison methods on tiny synthetic tumours: sensible Dice, and their contracts."""

import numpy as np
import pytest

from gastric_propagate.data.annotation import annotation_from_label
from gastric_propagate.errors import InputError
from gastric_propagate.evaluation import baselines
from gastric_propagate.metrics import dice

SPACING = (1.0, 1.0, 2.0)


def _volume(shape_fn, seed=0):
    """A (30, 56, 56) CT: fat, an air column at the edge, a bright tumour from ``shape_fn``, noise."""
    z, y, x = np.mgrid[:30, :56, :56]
    dx, dy, dz = (x - 28) * SPACING[0], (y - 27) * SPACING[1], (z - 15) * SPACING[2]
    truth = shape_fn(dx, dy, dz).astype(np.uint8)
    image = np.where(truth > 0, 70.0, -80.0) + np.random.default_rng(seed).normal(0, 12, truth.shape)
    image[:, :, :4] = -1000
    return image.astype(np.int16), truth


def _sphere(dx, dy, dz):
    return dx ** 2 + dy ** 2 + dz ** 2 <= 12.5 ** 2


def _bicone(dx, dy, dz):
    """Radius falling linearly from 13 mm at the centre to 0 at ±20 mm: what linear interpolation recovers."""
    return np.sqrt(dx ** 2 + dy ** 2) <= 13.0 * (1 - np.abs(dz) / 20.0)


@pytest.fixture(scope="module")
def sphere():
    image, truth = _volume(_sphere)
    return image, truth, annotation_from_label(truth)


ALL = [baselines.copy_slice, baselines.region_growing, baselines.registration_propagation,
       baselines.fill_between_slices_ideal]


@pytest.mark.parametrize("method", ALL, ids=lambda m: m.__name__)
def test_contract_shape_dtype_and_painted_slice_kept(sphere, method):
    image, truth, annotation = sphere
    mask = method(image, SPACING, annotation, truth_label=truth)
    assert mask.shape == image.shape and mask.dtype == np.uint8
    k = int(np.argmax(annotation.sum(axis=(1, 2))))
    np.testing.assert_array_equal(mask[k], annotation[k])
    assert set(np.unique(mask)) <= {0, 1}


def test_region_growing_finds_an_easy_sphere(sphere):
    image, truth, annotation = sphere
    assert dice(baselines.region_growing(image, SPACING, annotation), truth) > 0.85


def test_registration_follows_an_easy_sphere(sphere):
    image, truth, annotation = sphere
    assert dice(baselines.registration_propagation(image, SPACING, annotation), truth) > 0.75
    demons = baselines.registration_propagation(image, SPACING, annotation, transform="demons", iterations=10)
    assert dice(demons, truth) > 0.75


def test_copy_slice_spans_the_equivalent_radius(sphere):
    image, truth, annotation = sphere
    mask = baselines.copy_slice(image, SPACING, annotation)
    slices = np.flatnonzero(mask.any(axis=(1, 2)))
    k = int(np.argmax(annotation.sum(axis=(1, 2))))
    radius_mm = np.sqrt(annotation[k].sum() * SPACING[0] * SPACING[1] / np.pi)
    assert slices[0] == k - round(radius_mm / SPACING[2]) and slices[-1] == k + round(radius_mm / SPACING[2])
    # a cylinder around a sphere: right extent, too much volume at the ends
    assert 0.6 < dice(mask, truth) < 0.9


def test_fill_between_ideal_beats_copy_slice_and_recovers_a_bicone():
    image, truth = _volume(_bicone)
    annotation = annotation_from_label(truth)
    ideal = baselines.fill_between_slices_ideal(image, SPACING, annotation, truth_label=truth)
    assert dice(ideal, truth) > 0.9
    assert dice(baselines.copy_slice(image, SPACING, annotation), truth) < dice(ideal, truth) - 0.2
    slices = np.flatnonzero(truth.any(axis=(1, 2)))
    for k in (slices[0], slices[-1]):
        np.testing.assert_array_equal(ideal[k], truth[k])


def test_fill_between_ideal_ignores_the_annotation(sphere):
    image, truth, annotation = sphere
    other = annotation_from_label(truth, int(np.flatnonzero(truth.any(axis=(1, 2)))[2]))
    np.testing.assert_array_equal(
        baselines.fill_between_slices_ideal(image, SPACING, annotation, truth_label=truth),
        baselines.fill_between_slices_ideal(image, SPACING, other, truth_label=truth))


def test_region_growing_stays_in_its_bounding_region():
    """A tumour touching a large organ of the same density: growth stops near the painted outline."""
    image, truth = _volume(_sphere)
    image[:, 40:, :] = 70  # a wide bright neighbour below the tumour, same HU
    mask = baselines.region_growing(image, SPACING, annotation_from_label(truth))
    assert mask[:, 50:, :].sum() == 0


@pytest.mark.parametrize("method", ALL[:3], ids=lambda m: m.__name__)
def test_refuses_an_empty_or_multi_slice_annotation(sphere, method):
    image, truth, annotation = sphere
    with pytest.raises(InputError):
        method(image, SPACING, np.zeros_like(annotation))
    two = annotation.copy()
    two[3] = two[15]
    with pytest.raises(InputError):
        method(image, SPACING, two)
