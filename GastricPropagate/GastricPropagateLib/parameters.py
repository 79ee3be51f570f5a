"""The run's parameters: the one table that binds each engine option to the panel and to the command line.

The propagation options are declared by the engine: ``gastric_propagate.inference.options.PropagationOptions``.
``OPTIONS`` names, for each of its fields, the panel's parameter-node field (``GastricPropagateParameterNode`` in
GastricPropagate.py, which stores "no limit" as -1 / 0 because a Slicer parameter node has no None) and the flag of
the engine's ``segment`` command. Both mappings are derived from it:

- ``optionsFromParameterNode``: the panel's values -> the options;
- ``commandLineArguments``: the options -> the flags the child process is started with.

``Testing/Python/slicer_layer/test_parameters.py`` checks the table covers every field, names real parameter-node
fields, and that the flags parse back, with the CLI's own parser, to the same options.

Nothing here imports torch at module level (the panel must work before PyTorch is installed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Optional

from .i18n import _

if TYPE_CHECKING:
    from gastric_propagate.inference.options import PropagationOptions

__all__ = ["OPTIONS", "OptionBinding", "commandLineArguments", "missingInput", "optionsFromParameterNode"]


@dataclass(frozen=True)
class OptionBinding:
    """Where one ``PropagationOptions`` field lives on the panel and on the command line.

    A switch (``kind`` "switch", a bool) gives its flag when the value differs from the field's default. A number
    (``kind`` "int" or "float", None for no limit) gives its flag and value; on the panel, values at or below
    ``panelNone`` mean None.
    """

    field: str
    parameter: Optional[str]  # the parameter-node field; None: not on the panel (the engine's default)
    flag: str
    kind: str = "switch"
    panelNone: float = 0


OPTIONS = (
    OptionBinding("keyframes", "keyframes", "--keyframes"),
    OptionBinding("min_slice", "minSlice", "--min-slice", "int", panelNone=-1),
    OptionBinding("max_slice", "maxSlice", "--max-slice", "int", panelNone=-1),
    OptionBinding("max_distance_mm", "maxDistanceMm", "--max-distance-mm", "float", panelNone=0.0),
    OptionBinding("use_refiner", "useRefiner", "--no-refiner"),
    OptionBinding("use_consensus", "useConsensus", "--no-consensus"),
    OptionBinding("painted_is_largest", "paintedIsLargest", "--painted-not-largest"),
    OptionBinding("vote_reach", None, "--vote-reach", "float"),  # experiments only (scripts/choose_vote.py)
)

_NUMBER = {"int": int, "float": float}


def optionsFromParameterNode(parameters) -> "PropagationOptions":
    """The engine's options from the panel's parameter node (-1 slice limits and a 0 mm distance mean none)."""
    from gastric_propagate.inference.options import PropagationOptions

    values = {}
    for option in OPTIONS:
        if option.parameter is None:
            continue
        value = getattr(parameters, option.parameter)
        if option.kind == "switch":
            values[option.field] = bool(value)
        else:
            values[option.field] = _NUMBER[option.kind](value) if value > option.panelNone else None
    return PropagationOptions(**values)


def missingInput(parameters) -> str | None:
    """What the user still has to select before a run (a sentence), or None when the inputs are all there."""
    if parameters is None:
        return _("No parameter node.")
    if not parameters.inputVolume:
        return _("Select the CT volume.")
    if not parameters.segmentationNode:
        return _("Select the segmentation holding the painted slice.")
    if not parameters.paintedSegmentId:
        return _("Select the painted segment.")
    return None


def commandLineArguments(options: "PropagationOptions", *, device: str = "auto", proposerPath=None,
                         refinerPath=None) -> list[str]:
    """The ``gastric_propagate.cli segment`` flags for ``options``, the device and the weights."""
    defaults = {field.name: field.default for field in fields(options)}
    arguments = ["--device", str(device)]
    if proposerPath is not None:
        arguments += ["--proposer", os.fspath(proposerPath)]
    if refinerPath is not None:
        arguments += ["--refiner", os.fspath(refinerPath)]
    for option in OPTIONS:
        value = getattr(options, option.field)
        if option.kind == "switch":
            if bool(value) != defaults[option.field]:
                arguments.append(option.flag)
        elif value is not None:
            number = _NUMBER[option.kind](value)
            arguments += [option.flag, str(number) if option.kind == "int" else repr(number)]
    return arguments
