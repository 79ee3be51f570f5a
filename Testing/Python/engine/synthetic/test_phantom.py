"""Tests of the synthetic CT phantoms: reproducibility, geometry, tumour shape and size, contrast phases, I/O."""

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial import ConvexHull
from scipy.spatial.distance import pdist

from gastric_propagate.synthetic.phantom import HELD_OUT_SEED_START, PHASES, Phantom, make_phantom, write_phantoms

SMALL = {"size_xy": 128}  # keeps each phantom to a fraction of a second


def _points_mm(label, spacing_xyz):
    return np.argwhere(label > 0) * np.asarray(spacing_xyz)[::-1]


def _solidity(label, spacing_xyz):
    """Voxel volume over the convex hull of the voxel centres: about 1 or more for a convex body."""
    points = _points_mm(label, spacing_xyz)
    return label.sum() * np.prod(spacing_xyz) / ConvexHull(points).volume


def test_same_seed_same_phantom_and_different_seed_different():
    first, again, other = make_phantom(7, **SMALL), make_phantom(7, **SMALL), make_phantom(8, **SMALL)
    image, label = first.arrays()
    image_again, label_again = again.arrays()
    assert np.array_equal(image, image_again) and np.array_equal(label, label_again)
    assert first.image.GetOrigin() == again.image.GetOrigin()
    assert first.image.GetDirection() == again.image.GetDirection()
    assert first.phase == again.phase and first.seed == 7
    other_image, _ = other.arrays()
    assert other_image.shape != image.shape or not np.array_equal(other_image, image)


def test_types_and_geometry():
    phantom = make_phantom(11, **SMALL)
    assert isinstance(phantom, Phantom)
    image, label = phantom.arrays()
    assert image.dtype == np.int16 and label.dtype == np.uint8
    assert image.shape == label.shape
    assert set(np.unique(label)) == {0, 1}
    for getter in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(phantom.image, getter)() == getattr(phantom.label, getter)()
    assert phantom.spacing == phantom.image.GetSpacing()
    assert all(abs(v) > 0.5 for v in phantom.image.GetOrigin())
    assert phantom.phase in PHASES


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_oblique_sets_a_direction_that_keeps_k_as_the_slice_axis(seed):
    direction = np.array(make_phantom(seed, oblique=True, **SMALL).image.GetDirection()).reshape(3, 3)
    assert not np.allclose(direction, np.eye(3))
    assert np.allclose(direction @ direction.T, np.eye(3), atol=1e-6)
    assert np.allclose(direction[:, 2], [0, 0, 1]) and np.allclose(direction[2, :2], 0)
    straight = np.array(make_phantom(seed, oblique=False, **SMALL).image.GetDirection()).reshape(3, 3)
    assert np.allclose(straight, np.eye(3))


def test_oblique_draws_cover_flips_and_rotations():
    kinds = set()
    for seed in range(8):
        direction = np.array(make_phantom(seed, oblique=True, size_xy=96).image.GetDirection()).reshape(3, 3)
        kinds.add("flip" if np.allclose(np.abs(direction), np.eye(3)) else "rotation")
    assert kinds == {"flip", "rotation"}


@pytest.mark.parametrize("diameter", [30.0, 50.0])
def test_tumour_longest_diameter_matches_request(diameter):
    for seed in (21, 22):
        phantom = make_phantom(seed, size_xy=160, pixel_spacing=0.8, slice_spacing=1.0, tumour_diameter_mm=diameter)
        points = _points_mm(phantom.arrays()[1], phantom.spacing)
        feret = pdist(points[ConvexHull(points).vertices]).max()
        assert 0.85 * diameter <= feret <= 1.2 * diameter


@pytest.mark.parametrize("overrides", [{}, {"slice_spacing": 5.0, "tumour_diameter_mm": 15.0},
                                       {"n_slices": 20, "slice_spacing": 3.0, "tumour_diameter_mm": 20.0}])
def test_tumour_spans_three_slices_and_stays_off_the_edges(overrides):
    for seed in range(4):
        _, label = make_phantom(seed, **{**SMALL, **overrides}).arrays()
        assert label.reshape(label.shape[0], -1).any(axis=1).sum() >= 3
        for axis in range(3):
            assert not np.take(label, 0, axis=axis).any() and not np.take(label, -1, axis=axis).any()


def test_tumour_is_lobulated_not_an_ellipsoid():
    kwargs = {"size_xy": 160, "pixel_spacing": 0.8, "slice_spacing": 1.0, "tumour_diameter_mm": 45.0}
    solidities = []
    for seed in (31, 32, 33):
        phantom = make_phantom(seed, **kwargs)
        solidities.append(_solidity(phantom.arrays()[1], phantom.spacing))
    # The same measure on a voxelised ellipsoid of that size is about 1.03.
    z, y, x = np.mgrid[-30:31, -30:31, -30:31] * 0.8
    ellipsoid = ((x / 22.0) ** 2 + (y / 15.0) ** 2 + (z / 12.0) ** 2 <= 1).astype(np.uint8)
    assert _solidity(ellipsoid, (0.8, 0.8, 0.8)) > 1.0
    assert max(solidities) < 0.98 and np.mean(solidities) < 0.95


def test_phases_change_enhancement_only():
    arrays = {phase: make_phantom(6, phase=phase, **SMALL).arrays() for phase in PHASES}  # the aorta in view
    label = arrays["arterial"][1]
    assert all(np.array_equal(arrays[phase][1], label) for phase in PHASES)
    arterial, venous, delayed = (arrays[phase][0].astype(np.float32) for phase in PHASES)
    # The aorta (and arteries) are far brighter in the arterial phase; bone and air do not change.
    assert ((arterial - delayed) > 100).sum() > 100
    assert ((arterial - venous) > 50).sum() > 100
    inside = label > 0
    # Gastric carcinoma enhances late: darker than the wall early, brighter in the delayed phase.
    assert delayed[inside].mean() > arterial[inside].mean() + 3


@pytest.mark.parametrize("seed", [5, 9])
def test_low_density_parts_darken_the_tumour_up_to_its_outline_and_change_nothing_else(seed):
    plain, dark = make_phantom(seed, **SMALL), make_phantom(seed, low_density_parts=True, **SMALL)
    (image, label), (dark_image, dark_label) = plain.arrays(), dark.arrays()
    assert np.array_equal(label, dark_label) and plain.phase == dark.phase
    inside = label > 0
    drop = image.astype(np.float32) - dark_image
    # The anatomy and noise are the seed's: only the tumour and its partial-volume edge change.
    from_tumour = ndimage.distance_transform_edt(~inside, sampling=plain.spacing[::-1])
    assert from_tumour[drop != 0].max() <= 2.5 * max(plain.spacing)
    assert 0.15 < np.mean(drop[inside] > 20) < 0.8  # parts of it, not all of it
    outline = inside & ~ndimage.binary_erosion(inside)
    assert np.mean(drop[outline] > 20) > 0.15  # they reach the outline, not only a central core
    assert np.median(drop[inside]) >= 0 and drop[inside].max() > 40


def test_hounsfield_units_are_plausible():
    phantom = make_phantom(12, size_xy=400, pixel_spacing=1.0, n_slices=30, tumour_diameter_mm=30.0)
    image, label = phantom.arrays()
    assert image.min() >= -1024 and image.max() <= 3071
    corners = np.concatenate([image[:, :12, :12].ravel(), image[:, -12:, -12:].ravel()])
    assert abs(np.median(corners) + 1000) < 30  # air around the patient
    assert image.max() > 500  # vertebral cortex
    tumour = image[label > 0].mean()
    assert 20 < tumour < 160
    soft_tissue = np.mean((image > -150) & (image < 250))
    assert soft_tissue > 0.2  # 0.24-0.36 of a 400 mm view on seeds 10-14: the body's size varies


def test_overrides_are_respected():
    phantom = make_phantom(3, size_xy=200, n_slices=50, slice_spacing=2.5, pixel_spacing=0.75, phase="venous",
                           tumour_diameter_mm=25.0)
    image, _ = phantom.arrays()
    assert image.shape == (50, 200, 200)
    assert np.allclose(phantom.spacing, (0.75, 0.75, 2.5))
    assert phantom.phase == "venous"


@pytest.mark.parametrize("kwargs", [{"size_xy": 10}, {"size_xy": 200.5}, {"n_slices": 3}, {"slice_spacing": 0.0},
                                    {"pixel_spacing": float("nan")}, {"phase": "portal"}, {"oblique": "yes"},
                                    {"low_density_parts": 1},
                                    {"tumour_diameter_mm": 300.0}])
def test_bad_overrides_are_refused(kwargs):
    with pytest.raises(ValueError):
        make_phantom(0, **kwargs)


def test_impossible_requests_say_what_to_do():
    with pytest.raises(ValueError, match="field of view"):
        make_phantom(0, size_xy=100, pixel_spacing=0.6, tumour_diameter_mm=70.0)
    with pytest.raises(ValueError, match="n_slices"):
        make_phantom(0, size_xy=160, n_slices=10, slice_spacing=1.0, tumour_diameter_mm=60.0)
    with pytest.raises(ValueError, match="seed"):
        make_phantom(-1)
    with pytest.raises(TypeError):
        make_phantom(0, colour="red")


@pytest.mark.parametrize("fmt", ["nrrd", "nii.gz"])
def test_write_phantoms_round_trips(tmp_path, fmt):
    pairs = write_phantoms(tmp_path / "cases", [4, 9], fmt=fmt, oblique=True, size_xy=96)
    assert [p.name for pair in pairs for p in pair] == [f"case_{s}_{kind}.{fmt}" for s in (4, 9)
                                                        for kind in ("image", "label")]
    for seed, (image_path, label_path) in zip((4, 9), pairs):
        expected = make_phantom(seed, oblique=True, size_xy=96)
        for path, original in ((image_path, expected.image), (label_path, expected.label)):
            read = sitk.ReadImage(str(path))
            assert read.GetPixelID() == original.GetPixelID()
            assert np.array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(original))
            assert np.allclose(read.GetSpacing(), original.GetSpacing(), atol=1e-5)
            assert np.allclose(read.GetOrigin(), original.GetOrigin(), atol=1e-3)
            assert np.allclose(read.GetDirection(), original.GetDirection(), atol=1e-5)


def test_write_phantoms_refuses_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="fmt"):
        write_phantoms(tmp_path, [0], fmt="mha")


def test_full_size_volume():
    phantom = make_phantom(HELD_OUT_SEED_START, size_xy=512, n_slices=100)
    image, label = phantom.arrays()
    assert image.shape == label.shape == (100, 512, 512)
    assert label.sum() > 0
