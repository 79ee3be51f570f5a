"""What a user chooses for one run: how far and from what the propagation runs.

Kept apart from the pipeline (and free of torch) so that the Slicer panel and the CLI can build options
without loading the networks' libraries.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass

from gastric_propagate.errors import InputError

# How far the vote's registration and tapered copy reach each way along z, in painted equivalent diameters (how it
# was chosen: docs/decisions.md). Here, free of the engine's libraries, for the CLI.
VOTE_REACH = 0.75
# How far the vote's registration reaches when the painted slice is not the largest cross-section, in painted
# equivalent diameters (how it was chosen: docs/decisions.md).
NOT_LARGEST_REGISTRATION_REACH = 3.0
DEVICES = re.compile(r"auto|cpu|cuda(:\d+)?")


# The checks of the option values, shared by ``PropagationOptions``, the engine and the command line's parser. Each
# returns the value as a number (or the device) and raises InputError saying why not, in words that follow the value:
# "'nan' is not a finite distance of 0 mm or more".

def slice_index(value) -> int:
    """An axial slice index (0 or more)."""
    number = _number(value, "a whole number")
    if not math.isfinite(number) or number != int(number):
        raise InputError(f"{value!r} is not a slice index: give a whole number of 0 or more")
    if number < 0:
        raise InputError(f"{value!r} is too small for a slice index: give 0 or more")
    return int(number)


def distance_mm(value) -> float:
    """A distance along the slice axis: finite, 0 mm or more."""
    number = _number(value, "a number of millimetres")
    if not math.isfinite(number) or number < 0:
        raise InputError(f"{value!r} is not a finite distance of 0 mm or more")
    return number


def vote_reach(value) -> float:
    """How far the vote reaches, in painted equivalent diameters: finite, above 0."""
    number = _number(value, "a number of painted diameters")
    if not math.isfinite(number) or number <= 0:
        raise InputError(f"{value!r} is not a finite reach above 0 painted diameters")
    return number


def device(value) -> str:
    """A device the engine can be asked for: auto, cpu, cuda or cuda:N."""
    if not isinstance(value, str) or not DEVICES.fullmatch(value):
        raise InputError(f"{value!r} is not a device: use auto, cpu, cuda or cuda:N")
    return value


def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
        raise InputError(f"{value!r} is not {what}")
    try:
        return float(value)
    except (ValueError, OverflowError):
        raise InputError(f"{value!r} is not {what}") from None


@dataclass(frozen=True)
class PropagationOptions:
    """How far and from what the propagation runs.

    Attributes:
        keyframes: accept several painted slices; each one is a fixed anchor that is never changed.
            Without it, an annotation on more than one slice is refused (the single-slice contract).
        min_slice: lowest axial index the result may reach (inclusive), or None.
        max_slice: highest axial index the result may reach (inclusive), or None.
        max_distance_mm: furthest distance from the nearest anchor slice, along the slice axis, or None.
        use_refiner: run the refiner after the proposer (switch off to measure the proposer alone).
        use_consensus: keep the voxels that at least two of three opinions hold: the networks, slice-to-slice
            registration and the painted outline copied along z (see ``inference/consensus.py``), with or without
            corrected slices (keyframes); switch off to measure the networks alone.
        painted_is_largest: the painted slice is the tumour's largest cross-section, as the protocol asks. The
            leak rules then compare each slice with it. When another slice was painted, set it to False: the
            size-based leak rules are off (neighbouring slices may well be larger) and the crop gets
            ``NOT_LARGEST_EXTRA_MARGIN_MM`` more margin, since the tumour reaches beyond the painted outline; the vote's
            registration reaches ``NOT_LARGEST_REGISTRATION_REACH`` diameters and its copy does not taper.
        vote_reach: how far the vote's registration and copied outline reach each way along z, in painted
            equivalent diameters; None keeps ``consensus.REACH_FACTOR`` (for experiments: scripts/choose_vote.py).
            When the painted slice is not the largest, the registration reaches at least
            ``NOT_LARGEST_REGISTRATION_REACH``.

    Raises:
        InputError: a value out of its range (a negative slice, a NaN or infinite distance, a reach of 0), in one
            line naming the option, e.g. "PropagationOptions vote_reach: 0 is not a finite reach above 0 painted
            diameters."
    """

    keyframes: bool = False
    min_slice: int | None = None
    max_slice: int | None = None
    max_distance_mm: float | None = None
    use_refiner: bool = True
    use_consensus: bool = True
    painted_is_largest: bool = True
    vote_reach: float | None = None

    def __post_init__(self) -> None:
        for name, check in (("min_slice", slice_index), ("max_slice", slice_index),
                            ("max_distance_mm", distance_mm), ("vote_reach", vote_reach)):
            value = getattr(self, name)
            if value is not None:
                try:
                    object.__setattr__(self, name, check(value))  # frozen: set once, as the number it checked
                except InputError as error:
                    raise InputError(f"PropagationOptions {name}: {error}.") from None
