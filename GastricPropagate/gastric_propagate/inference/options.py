"""What a user chooses for one run: how far and from what the propagation runs.

Kept apart from the pipeline (and free of torch) so that the Slicer panel and the CLI can build options
without loading the networks' libraries. ``PropagationOptions`` is the one declaration of the options: each field
carries its command-line flag, help text, kind and panel field (``declared_options()``), from which the ``segment``
command's flags (``cli.py``) and the panel's bindings (``GastricPropagateLib/parameters.py``) are derived.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from dataclasses import dataclass
from typing import Callable, Optional

from gastric_propagate.errors import InputError

# How far the vote's registration and tapered copy reach each way along z, in painted equivalent diameters (how it
# was chosen: docs/decisions.md). Here, free of the engine's libraries, for the CLI.
VOTE_REACH = 0.75
# How far the vote's registration reaches when the painted slice is not the largest cross-section, in painted
# equivalent diameters (how it was chosen: docs/decisions.md).
NOT_LARGEST_REGISTRATION_REACH = 3.0
DEVICES = re.compile(r"auto|cpu|cuda(:\d+)?")
# How the networks run: auto (PyTorch on the GPU where an NVIDIA driver is visible and torch is installed; else ONNX
# Runtime where it and the ONNX files are there and no CUDA device is asked for; else PyTorch: backends.choose_backend),
# torch, torch-bf16 (PyTorch with the networks in bfloat16), onnx (ONNX Runtime, on the CPU) or onnx-int8
# (ONNX Runtime with the networks' int8 copies).
BACKENDS = ("auto", "torch", "torch-bf16", "onnx", "onnx-int8")
#: The backends that run the networks under ONNX Runtime -> the precision of the ONNX files each reads.
ONNX_BACKENDS = {"onnx": "float32", "onnx-int8": "int8"}
#: The backends that run the networks under PyTorch -> the precision of their weights and inputs.
TORCH_BACKENDS = {"torch": "float32", "torch-bf16": "bfloat16"}


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


def backend(value) -> str:
    """How the networks run: auto, torch, torch-bf16, onnx or onnx-int8 (``BACKENDS``)."""
    if not isinstance(value, str) or value not in BACKENDS:
        raise InputError(f"{value!r} is not a backend: use {', '.join(BACKENDS[:-1])} or {BACKENDS[-1]}")
    return value


def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
        raise InputError(f"{value!r} is not {what}")
    try:
        return float(value)
    except (ValueError, OverflowError):
        raise InputError(f"{value!r} is not {what}") from None


@dataclass(frozen=True)
class DeclaredOption:
    """One ``PropagationOptions`` field as the command line and the Slicer panel offer it.

    A switch (``kind`` "switch", a bool) is a flag that turns the field's default around (``--no-refiner`` sets
    ``use_refiner`` False). A number (``kind`` "int" or "float"; None, the default, for no limit) is a flag with a
    value, refused by ``check`` as the field itself refuses it. ``parameter`` is the panel's parameter-node field
    (None: not on the panel); a parameter node has no None, so there values at or below ``panel_none`` mean None.
    """

    name: str
    default: object
    flag: str
    help: str
    kind: str = "switch"
    check: Optional[Callable[[object], object]] = None
    parameter: Optional[str] = None
    panel_none: float = 0


_DECLARED = "gastric_propagate.option"  # the key of a field's metadata


def _option(default, flag: str, *, help: str, **declared) -> dataclasses.Field:
    return dataclasses.field(default=default, metadata={_DECLARED: dict(flag=flag, help=help, **declared)})


@dataclass(frozen=True)
class PropagationOptions:
    """How far and from what the propagation runs.

    Attributes:
        keyframes: accept several painted slices; each one is a fixed anchor that is never changed.
            Without it, an annotation on more than one slice is refused (the single-slice contract).
        min_slice: lowest axial index the result may reach (inclusive), or None.
        max_slice: highest axial index the result may reach (inclusive), or None.
        max_distance_mm: furthest distance, along the slice axis, beyond the outermost anchor slices (between two
            anchors every slice may be reached), or None.
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

    keyframes: bool = _option(False, "--keyframes", parameter="keyframes",
                              help="accept several painted slices; each is kept exactly as a fixed anchor")
    min_slice: int | None = _option(None, "--min-slice", kind="int", check=slice_index, parameter="minSlice",
                                    panel_none=-1, help="lowest axial index (K) the result may reach")
    max_slice: int | None = _option(None, "--max-slice", kind="int", check=slice_index, parameter="maxSlice",
                                    panel_none=-1, help="highest axial index (K) the result may reach")
    max_distance_mm: float | None = _option(
        None, "--max-distance-mm", kind="float", check=distance_mm, parameter="maxDistanceMm", panel_none=0.0,
        help="furthest distance beyond the outermost painted slice(s) along the slice axis, in mm")
    use_refiner: bool = _option(True, "--no-refiner", parameter="useRefiner",
                                help="the proposer's mask as the networks' opinion, without the refiner (with "
                                     "--no-consensus: the proposer alone; for comparison)")
    use_consensus: bool = _option(True, "--no-consensus", parameter="useConsensus",
                                  help="the networks' mask alone, without the vote with registration and the copied "
                                       "outline (for comparison)")
    painted_is_largest: bool = _option(True, "--painted-not-largest", parameter="paintedIsLargest",
                                       help="the painted slice is not the tumour's largest cross-section: relax the "
                                            "size-based leak rules, widen the crop, and let the vote's registration "
                                            "reach further")
    # Not on the panel: for experiments (scripts/choose_vote.py). Its check is the module's vote_reach(): the class
    # body has not bound the field's name yet.
    vote_reach: float | None = _option(
        None, "--vote-reach", kind="float", check=vote_reach,
        help="how far the vote's registration and copied outline reach each way along z, in painted equivalent "
             f"diameters (default {VOTE_REACH:g}; with --painted-not-largest the registration reaches at least "
             f"{NOT_LARGEST_REGISTRATION_REACH:g}; for experiments)")

    def __post_init__(self) -> None:
        for option in declared_options():
            value = getattr(self, option.name)
            if option.check is not None and value is not None:
                try:
                    object.__setattr__(self, option.name, option.check(value))  # frozen: set once, as checked
                except InputError as error:
                    raise InputError(f"PropagationOptions {option.name}: {error}.") from None


def declared_options() -> tuple[DeclaredOption, ...]:
    """Each ``PropagationOptions`` field, in order, with its flag, help, kind and panel field."""
    return tuple(DeclaredOption(field.name, field.default, **field.metadata[_DECLARED])
                 for field in dataclasses.fields(PropagationOptions))


def slices_within(distance_mm: float, slice_mm: float) -> int:
    """How many slices of ``slice_mm`` the distance limit ``distance_mm`` reaches beyond a painted slice. A distance
    within 1 % of a slice short of the next one reaches it: typed from a viewer that rounds the spacing (4.99 for
    4.9901 mm), it meant that slice."""
    return int(math.floor(distance_mm / slice_mm + 0.01))
