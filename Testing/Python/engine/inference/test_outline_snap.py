"""inference.outline_snap: the result's outline moved onto the HU level at which the painted outline was drawn."""

import numpy as np
from scipy import ndimage

from gastric_propagate.inference.outline_snap import MIN_FIT, edge_threshold, snap_outline
from gastric_propagate.metrics import dice

SPACING = (1.0, 1.0, 2.0)


def _blurred_tumour(brightness: float = 60.0, seed: int = 0):
    """A bright ellipsoid (radius 12 mm in-plane) in fat, its edge blurred like a CT's."""
    z, y, x = np.mgrid[:15, :64, :64]
    radius = 12.0 * np.sqrt(np.clip(1 - ((z - 7) * SPACING[2] / 20.0) ** 2, 0, 1))
    inside = (x - 32) ** 2 + (y - 32) ** 2 <= radius ** 2
    image = ndimage.gaussian_filter(np.where(inside, brightness, -90.0), (0, 1.2, 1.2))
    return (image + np.random.default_rng(seed).normal(0, 4, image.shape)).astype(np.float32)


def test_a_generous_outline_is_followed_on_the_other_slices():
    image = _blurred_tumour()
    drawn = image > -60.0  # this reader draws the edge far out in the blur: a generous outline, every slice
    k = 7
    shrunk = np.stack([ndimage.binary_erosion(s, iterations=1) for s in drawn]).astype(np.uint8)
    shrunk[k] = drawn[k]  # a result one pixel inside the reader's edge, the painted slice kept
    snapped = snap_outline(shrunk, image, SPACING, k, drawn[k])
    np.testing.assert_array_equal(snapped[k], drawn[k])
    assert dice(snapped, drawn) > dice(shrunk, drawn) + 0.03
    threshold, brighter, fit = edge_threshold(image[k], drawn[k], SPACING)
    assert brighter and fit >= MIN_FIT and -80.0 < threshold < -40.0


def test_a_dark_tumour_is_snapped_too():
    image = _blurred_tumour(brightness=-300.0)
    drawn = image < -200.0
    k = 7
    grown = np.stack([ndimage.binary_dilation(s, iterations=1) for s in drawn]).astype(np.uint8)
    grown[k] = drawn[k]
    assert dice(snap_outline(grown, image, SPACING, k, drawn[k]), drawn) > dice(grown, drawn) + 0.03
    assert not edge_threshold(image[k], drawn[k], SPACING)[1]


def test_an_outline_along_no_edge_changes_nothing():
    """A tumour as dense as its neighbour: no HU level explains the outline, so the result stays as voted."""
    image = np.random.default_rng(1).normal(40.0, 15.0, (15, 64, 64)).astype(np.float32)
    z, y, x = np.mgrid[:15, :64, :64]
    mask = ((x - 32) ** 2 + (y - 32) ** 2 <= 10 ** 2).astype(np.uint8)
    assert edge_threshold(image[7], mask[7] > 0, SPACING)[2] < MIN_FIT
    np.testing.assert_array_equal(snap_outline(mask, image, SPACING, 7, mask[7] > 0), mask)


def test_an_outline_with_no_outside_has_no_threshold():
    painted = np.ones((20, 20), dtype=bool)
    assert edge_threshold(np.zeros((20, 20), np.float32), painted, SPACING) is None
