"""Slicer's Grow from seeds baseline (slicer.vtkImageGrowCutSegment from the slicer-core wheel), seeded from one slice.

The bounds below were measured with the defaults (ring_mm=1, extent_factor=0.5) and set a little under
what the method gives; the algorithm and the synthetic volumes are deterministic.
"""

import subprocess
import sys

import numpy as np
import pytest

from gastric_propagate.data.annotation import annotation_from_label
from gastric_propagate.evaluation import baselines
from gastric_propagate.inference.masks import equivalent_diameter_mm, slices_for
from gastric_propagate.evaluation.grow_from_seeds import grow_from_seeds
from gastric_propagate.metrics import dice
from gastric_propagate.synthetic.phantom import HELD_OUT_SEED_START, make_phantom

SPACING = (0.8, 0.8, 2.5)


@pytest.fixture(scope="module")
def slicer_core():
    return pytest.importorskip(
        "slicer", reason="needs the slicer-core wheel (slicer.vtkImageGrowCutSegment): pip install -e '.[slicer]'")


def _sphere_volume(seed: int = 0):
    """A (28, 72, 72) CT: a 14 mm radius sphere at 60 HU in 10 HU tissue, noise SD 15 HU, an air strip at one edge."""
    z, y, x = np.mgrid[:28, :72, :72]
    dx, dy, dz = (x - 37) * SPACING[0], (y - 34) * SPACING[1], (z - 13) * SPACING[2]
    truth = (dx ** 2 + dy ** 2 + dz ** 2 <= 14.0 ** 2).astype(np.uint8)
    image = np.where(truth > 0, 60.0, 10.0) + np.random.default_rng(seed).normal(0, 15, truth.shape)
    image[:, :, :6] = -1000
    return image.astype(np.int16), truth


@pytest.fixture(scope="module")
def sphere():
    image, truth = _sphere_volume()
    return image, truth, annotation_from_label(truth)


def _painted_index(annotation):
    return int(np.argmax(annotation.reshape(annotation.shape[0], -1).sum(axis=1)))


@pytest.mark.slicer
def test_contract_shape_dtype_painted_slice_and_extra_keywords(slicer_core, sphere):
    image, truth, annotation = sphere
    mask = grow_from_seeds(image, SPACING, annotation, truth_label=truth)  # unknown keywords are ignored
    assert mask.shape == image.shape and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 1}
    k = _painted_index(annotation)
    np.testing.assert_array_equal(mask[k], annotation[k])


@pytest.mark.slicer
def test_sphere_in_noise(slicer_core, sphere):
    image, truth, annotation = sphere
    result = grow_from_seeds(image, SPACING, annotation)
    # Measured 0.957-0.967 over noise seeds 0-3; copy_slice gets 0.73 on the same volume.
    assert dice(result, truth) >= 0.93
    assert dice(result, truth) > dice(baselines.copy_slice(image, SPACING, annotation), truth) + 0.15


@pytest.mark.slicer
@pytest.mark.parametrize("extent_factor", [0.3, 0.5, 0.75])
def test_stays_before_the_background_slices(slicer_core, sphere, extent_factor):
    image, _truth, annotation = sphere
    k = _painted_index(annotation)
    diameter = equivalent_diameter_mm(annotation[k] > 0, SPACING)
    mask = grow_from_seeds(image, SPACING, annotation, extent_factor=extent_factor)
    reached = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    # Never past the slices copy_slice would fill with the same extent_factor: the next ones are background seeds.
    assert np.all(np.abs(reached - k) <= slices_for(extent_factor * diameter, SPACING))
    assert len(reached) > 1  # it did grow off the painted slice


@pytest.mark.slicer
def test_a_smaller_outline_on_another_slice_is_kept_exactly(slicer_core, sphere):
    """An outline drawn inside the tumour, off its largest cross-section, comes back unchanged on its slice."""
    image, truth, _annotation = sphere
    k = _painted_index(annotation_from_label(truth)) + 1
    annotation = np.zeros_like(truth)
    yy, xx = np.nonzero(truth[k])
    annotation[k, yy.min() + 3:yy.max() - 2, xx.min() + 3:xx.max() - 2] = 1
    annotation[k] &= truth[k]
    mask = grow_from_seeds(image, SPACING, annotation)
    np.testing.assert_array_equal(mask[k], annotation[k])
    assert mask[k - 1].sum() > annotation[k].sum()  # while the neighbours grew to the real tumour


@pytest.fixture(scope="module")
def phantoms():
    cases = {}
    for offset in range(4):
        phantom = make_phantom(HELD_OUT_SEED_START + offset, size_xy=128, pixel_spacing=0.9)
        image, label = phantom.arrays()
        cases[offset] = (image, phantom.spacing, label, annotation_from_label(label))
    return cases


# Dice measured on these held-out phantoms (not used to choose the defaults), and copy_slice's for reference:
# 0.919 (0.77), 0.783 (0.76), 0.876 (0.81), 0.842 (0.79).
@pytest.mark.slicer
@pytest.mark.parametrize("offset, measured", [(0, 0.919), (1, 0.783), (2, 0.876), (3, 0.842)])
def test_held_out_phantoms(slicer_core, phantoms, offset, measured):
    image, spacing, label, annotation = phantoms[offset]
    mask = grow_from_seeds(image, spacing, annotation)
    assert dice(mask, label) >= measured - 0.04
    k = _painted_index(annotation)
    np.testing.assert_array_equal(mask[k], annotation[k])
    reached = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    diameter = equivalent_diameter_mm(annotation[k] > 0, spacing)
    assert np.all(np.abs(reached - k) <= slices_for(0.5 * diameter, spacing))  # 0.5: the default extent_factor


@pytest.mark.slicer
def test_a_two_slice_volume_is_padded_for_the_filter(slicer_core):
    """The filter needs three voxels along every axis; a thinner crop is padded and cut back."""
    image = np.full((2, 24, 24), 10, dtype=np.int16)
    image[:, 8:16, 8:16] = 60
    annotation = np.zeros(image.shape, dtype=np.uint8)
    annotation[0, 8:16, 8:16] = 1
    mask = grow_from_seeds(image, (1.0, 1.0, 1.0), annotation, extent_factor=2.0)
    assert mask.shape == image.shape
    np.testing.assert_array_equal(mask[0], annotation[0])
    np.testing.assert_array_equal(mask[1], annotation[0])  # same intensities: the tumour continues


def test_missing_slicer_core_says_what_to_install(monkeypatch, sphere):
    image, _truth, annotation = sphere
    monkeypatch.setitem(sys.modules, "slicer", None)  # makes `import slicer` fail
    with pytest.raises(RuntimeError, match=r"pip install slicer-core==5\.13\.31053\.0"):
        grow_from_seeds(image, SPACING, annotation)


def test_importing_the_module_does_not_import_slicer_or_vtk():
    code = ("import sys, gastric_propagate.evaluation.grow_from_seeds; "
            "assert 'slicer' not in sys.modules and 'vtk' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)
