"""The run's parameters: one typed object, and the one place where it is mapped to the panel and the command line.

The propagation options are declared once, by the engine: ``gastric_propagate.inference.pipeline.PropagationOptions``.
The Logic takes them as they are; this module maps them to the other two forms they take:

- the panel's parameter node (``GastricPropagateParameterNode`` in GastricPropagate.py), which stores "no limit"
  as -1 / 0 because a Slicer parameter node has no None: ``optionsFromParameterNode``;
- the flags of the engine's ``segment`` command, which the child process is started with:
  ``commandLineArguments``. ``Testing/Python/slicer_layer/test_parameters.py`` parses them with the CLI's own parser and
  must get the same options back, for every field, so the two cannot drift apart.

Nothing here imports torch at module level (the panel must work before PyTorch is installed).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .i18n import _

if TYPE_CHECKING:
    from gastric_propagate.inference.options import PropagationOptions

__all__ = ["commandLineArguments", "missingInput", "optionsFromParameterNode"]


def optionsFromParameterNode(parameters) -> "PropagationOptions":
    """The engine's options from the panel's parameter node (-1 slice limits and a 0 mm distance mean none)."""
    from gastric_propagate.inference.options import PropagationOptions

    return PropagationOptions(
        keyframes=bool(parameters.keyframes),
        min_slice=int(parameters.minSlice) if parameters.minSlice >= 0 else None,
        max_slice=int(parameters.maxSlice) if parameters.maxSlice >= 0 else None,
        max_distance_mm=float(parameters.maxDistanceMm) if parameters.maxDistanceMm > 0 else None,
        use_refiner=bool(parameters.useRefiner),
        use_consensus=bool(parameters.useConsensus),
        painted_is_largest=bool(parameters.paintedIsLargest))


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
    arguments = ["--device", str(device)]
    if proposerPath is not None:
        arguments += ["--proposer", os.fspath(proposerPath)]
    if refinerPath is not None:
        arguments += ["--refiner", os.fspath(refinerPath)]
    if options.keyframes:
        arguments.append("--keyframes")
    if options.min_slice is not None:
        arguments += ["--min-slice", str(int(options.min_slice))]
    if options.max_slice is not None:
        arguments += ["--max-slice", str(int(options.max_slice))]
    if options.max_distance_mm is not None:
        arguments += ["--max-distance-mm", repr(float(options.max_distance_mm))]
    if not options.use_refiner:
        arguments.append("--no-refiner")
    if not options.use_consensus:
        arguments.append("--no-consensus")
    if not options.painted_is_largest:
        arguments.append("--painted-not-largest")
    if options.vote_reach is not None:
        arguments += ["--vote-reach", repr(float(options.vote_reach))]
    return arguments
