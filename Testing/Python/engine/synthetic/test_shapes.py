"""The random-shape generator: deterministic per seed, a real lesion, the promised spacing range."""

import numpy as np
import pytest

pytest.importorskip("torchio")

from gastric_propagate.synthetic.generators import GENERATORS, generated_cases, load_all  # noqa: E402
from gastric_propagate.synthetic.shapes import SLICE_MM, make_shapes_case  # noqa: E402


def test_same_seed_same_case_other_seed_other_case():
    first, again, other = make_shapes_case(3), make_shapes_case(3), make_shapes_case(4)
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.label, again.label)
    assert first.spacing_xyz == again.spacing_xyz
    assert first.image.shape != other.image.shape or not np.array_equal(first.image, other.image)


@pytest.mark.parametrize("seed", range(3))
def test_a_lesion_on_a_ct_like_grid(seed):
    case = make_shapes_case(seed)
    assert case.image.dtype == np.int16 and case.label.dtype == np.uint8
    assert case.image.shape == case.label.shape
    assert SLICE_MM[0] <= case.spacing_xyz[2] <= SLICE_MM[1]
    assert case.label.any()
    areas = case.label.reshape(case.label.shape[0], -1).sum(axis=1)
    assert areas[0] == 0 and areas[-1] == 0, "the lesion ends inside the volume, as the proposer must learn"
    assert -1024 <= case.image.min() and case.image.max() <= 3071


def test_generators_by_name_load_in_parallel_as_in_series():
    assert GENERATORS == ("phantom", "shapes", "thorax")
    cases = generated_cases("shapes", 2, seed_start=10)
    assert [c.name for c in cases] == ["shapes_10", "shapes_11"]
    series, parallel = load_all(cases, workers=1), load_all(cases, workers=2)
    for a, b in zip(series, parallel):
        np.testing.assert_array_equal(a.image, b.image)
    with pytest.raises(ValueError, match="unknown generator"):
        generated_cases("magic", 1)


def test_the_hypodense_variant_is_the_phantom_with_low_density_parts_under_its_own_name():
    (case,) = load_all(generated_cases("hypodense", 1, seed_start=3))
    (phantom,) = load_all(generated_cases("phantom", 1, seed_start=3))
    assert case.name == "hypodense_3" and phantom.name == "phantom_3"
    np.testing.assert_array_equal(case.label, phantom.label)
    inside = case.label > 0
    assert case.image[inside].mean() < phantom.image[inside].mean() - 5
