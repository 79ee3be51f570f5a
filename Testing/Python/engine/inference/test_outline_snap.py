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


def _weak_edge(contrast: float):
    """A disc (radius 12 mm) ``contrast`` HU above its surroundings, blurred, in noise of 20 HU: how well one
    threshold splits its painted outline's band depends on the contrast."""
    z, y, x = np.mgrid[:15, :64, :64]
    inside = (x - 32) ** 2 + (y - 32) ** 2 <= 12 ** 2
    image = ndimage.gaussian_filter(np.where(inside, contrast, 0.0), (0, 1.2, 1.2))
    image = (image + np.random.default_rng(0).normal(0, 20, image.shape)).astype(np.float32)
    tight = np.stack([ndimage.binary_erosion(s, iterations=1) for s in inside]).astype(np.uint8)
    tight[7] = inside[7]
    return image, inside[7], tight


def test_the_outline_is_snapped_only_when_the_painted_band_is_split_with_a_balanced_accuracy_of_0_8():
    image, painted, mask = _weak_edge(30.0)
    assert 0.7 < edge_threshold(image[7], painted, SPACING)[2] < MIN_FIT
    np.testing.assert_array_equal(snap_outline(mask, image, SPACING, 7, painted), mask)
    image, painted, mask = _weak_edge(55.0)
    assert MIN_FIT <= edge_threshold(image[7], painted, SPACING)[2] < 0.85
    assert not np.array_equal(snap_outline(mask, image, SPACING, 7, painted), mask)


def test_the_snap_moves_the_outline_by_one_pixel_at_most():
    """A result two pixels inside a generous outline: the one-pixel band lets it grow by one pixel, not two."""
    image = _blurred_tumour()
    drawn = image > -60.0
    k = 7
    shrunk = np.stack([ndimage.binary_erosion(s, iterations=2) for s in drawn]).astype(np.uint8)
    shrunk[k] = drawn[k]
    snapped = snap_outline(shrunk, image, SPACING, k, drawn[k])
    cross = ndimage.generate_binary_structure(2, 1)
    for z in range(15):
        if z != k and shrunk[z].any():
            assert (snapped[z] <= ndimage.binary_dilation(shrunk[z], cross)).all(), z
            assert (snapped[z] >= ndimage.binary_erosion(shrunk[z], cross)).all(), z
    assert snapped.sum() > shrunk.sum()


def test_a_slice_whose_snap_would_keep_less_than_half_of_it_keeps_the_voted_outline():
    """Slice 3 holds a thin bar over fat, where no pixel is at the painted edge's level: snapping it would leave only
    its middle row (a third of it), so it stays as voted; the other slices are snapped."""
    image = _blurred_tumour()
    drawn = image > -60.0
    k = 7
    mask = np.stack([ndimage.binary_erosion(s, iterations=1) for s in drawn]).astype(np.uint8)
    mask[k] = drawn[k]
    mask[3] = 0
    mask[3, 4:7, 4:30] = 1  # far from the tumour: fat
    snapped = snap_outline(mask, image, SPACING, k, drawn[k])
    np.testing.assert_array_equal(snapped[3], mask[3])
    assert not np.array_equal(snapped[6], mask[6])
