"""The lung-nodule generator: deterministic per seed, a nodule that ends inside the volume, surrounded by air."""

import numpy as np
import pytest
from scipy import ndimage

pytest.importorskip("torchio")

from gastric_propagate.synthetic.generators import generated_cases  # noqa: E402
from gastric_propagate.synthetic.thorax import NODULE_DIAMETER_MM, SLICE_MM, make_thorax_case  # noqa: E402


def test_same_seed_same_case():
    first, again = make_thorax_case(2), make_thorax_case(2)
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.label, again.label)
    assert first.spacing_xyz == again.spacing_xyz
    assert [c.name for c in generated_cases("thorax", 2, seed_start=5)] == ["thorax_5", "thorax_6"]


@pytest.mark.parametrize("seed", [0, 2, 3, 4])
def test_a_nodule_in_air_on_a_ct_like_grid(seed):
    case = make_thorax_case(seed)
    assert case.image.dtype == np.int16 and case.label.dtype == np.uint8 and case.image.shape == case.label.shape
    assert SLICE_MM[0] <= case.spacing_xyz[2] <= SLICE_MM[1]
    areas = case.label.reshape(case.label.shape[0], -1).sum(axis=1)
    assert areas[0] == 0 and areas[-1] == 0, "the nodule ends inside the volume, as the proposer must learn"
    k = int(areas.argmax())
    diameter = 2.0 * np.sqrt(areas[k] * case.spacing_xyz[0] * case.spacing_xyz[1] / np.pi)
    assert 0.5 * NODULE_DIAMETER_MM[0] < diameter < 1.5 * NODULE_DIAMETER_MM[1]
    # Lung around it: most of a 2-4 mm ring outside the nodule's largest cross-section is air-dense.
    nodule = case.label[k] > 0
    pixels = 1.0 / case.spacing_xyz[0]
    ring = ndimage.binary_dilation(nodule, iterations=int(4 * pixels)) & ~ndimage.binary_dilation(
        nodule, iterations=int(2 * pixels))
    assert np.median(case.image[k][ring]) < -500
