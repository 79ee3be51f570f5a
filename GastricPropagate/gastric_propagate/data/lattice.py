"""Whether one voxel grid's axes are another's in another order or direction (numpy only: the Slicer layer uses it
too, for a segment's labelmap against its volume)."""

from __future__ import annotations

import numpy as np


def signed_permutation(steps: np.ndarray, tolerance: float) -> np.ndarray | None:
    """``steps`` (3 x 3: each column one axis of a grid in the other grid's axes) rounded to a signed permutation
    matrix (each axis one of the other's, either way round), or None when it is not one within ``tolerance`` (a
    rotation, a shear, another spacing where ``steps`` holds index steps)."""
    whole = np.rint(steps)
    if np.abs(steps - whole).max() > tolerance:
        return None
    if not ((np.abs(whole).sum(axis=0) == 1).all() and (np.abs(whole).sum(axis=1) == 1).all()):
        return None
    return whole
