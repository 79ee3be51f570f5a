"""A grid's axes as another's in another order or direction: every signed permutation is one, nothing else is."""

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from gastric_propagate.data.lattice import signed_permutation

SIGNED_PERMUTATIONS = [np.diag(signs)[list(order)] for order in itertools.permutations(range(3))
                       for signs in itertools.product((1, -1), repeat=3)]


def test_each_of_the_48_signed_permutations_is_one_within_the_tolerance():
    noise = np.full((3, 3), 0.9e-3)
    for matrix in SIGNED_PERMUTATIONS:
        np.testing.assert_array_equal(signed_permutation(matrix + noise, 1e-3), matrix)
        assert signed_permutation(matrix + 2 * noise, 1e-3) is None


@settings(max_examples=60, deadline=None)
@given(degrees=st.floats(2.0, 43.0), axis=st.sampled_from(["x", "y", "z"]), which=st.integers(0, 47))
def test_a_rotation_between_the_axes_is_not_one(degrees, axis, which):
    rotated = SIGNED_PERMUTATIONS[which] @ Rotation.from_euler(axis, degrees, degrees=True).as_matrix()
    assert signed_permutation(rotated, 1e-3) is None


def test_another_spacing_or_two_axes_onto_one_is_not_one():
    assert signed_permutation(np.diag([2.0, 1.0, 1.0]), 1e-3) is None  # index steps twice as long along i
    assert signed_permutation(np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), 1e-3) is None
