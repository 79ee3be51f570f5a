"""The run's parameters: the panel's values -> the engine's options -> the command line's flags.

The propagation options are declared once, by the engine: each field of
``gastric_propagate.inference.options.PropagationOptions`` names its ``segment`` flag and its panel field (a
field of ``GastricPropagateParameterNode`` in GastricPropagate.py, which stores "no limit" as -1 / 0 because a
Slicer parameter node has no None). ``OPTIONS`` is that declaration; both mappings are derived from it:

- ``optionsFromParameterNode``: the panel's values -> the options;
- ``commandLineArguments``: the options -> the flags the child process is started with.

``Testing/Python/slicer_layer/test_parameters.py`` checks that each panel field exists on the parameter node and in
the .ui, with the engine's default, and that the flags parse back, with the CLI's own parser, to the same options.

Nothing here imports torch (the panel must work before PyTorch is installed): ``inference.options`` is torch-free.
"""

from __future__ import annotations

import os

from gastric_propagate.inference.options import PropagationOptions, declared_options

from .i18n import _

__all__ = ["OPTIONS", "commandLineArguments", "missingInput", "optionsFromParameterNode"]

#: Each ``PropagationOptions`` field with its flag, kind and panel field (``parameter``; None: not on the panel).
OPTIONS = declared_options()

_NUMBER = {"int": int, "float": float}


def parameterWidgets(ui) -> dict:
    """Parameter name -> widget, for each widget of ``ui`` (``slicer.util.childWidgetVariables`` of the .ui) with a
    ``SlicerParameterName`` property: what ``connectGui`` would bind. The panel binds them with
    ``connectParametersToGui``, whose tag Slicer 5.8 returns (its ``connectGui`` returns None, fixed in 5.10: the
    panel could then never disconnect, and each new binding's refill of the Device box reset it to 'auto')."""
    widgets = {}
    for widget in vars(ui).values():
        name = widget.property("SlicerParameterName") if hasattr(widget, "property") else None
        if name:
            widgets[str(name)] = widget
    return widgets


def optionsFromParameterNode(parameters) -> PropagationOptions:
    """The engine's options from the panel's parameter node (-1 slice limits and a 0 mm distance mean none)."""
    values = {}
    for option in OPTIONS:
        if option.parameter is None:
            continue
        value = getattr(parameters, option.parameter)
        if option.kind == "switch":
            values[option.name] = bool(value)
        else:
            values[option.name] = _NUMBER[option.kind](value) if value > option.panel_none else None
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


#: Panel devices that also choose how the networks run: device -> (the engine's --device, its --backend).
DEVICE_BACKENDS = {"cpu-int8": ("cpu", "onnx-int8")}


def commandLineArguments(options: PropagationOptions, *, device: str = "auto", proposerPath=None,
                         refinerPath=None) -> list[str]:
    """The ``gastric_propagate.cli segment`` flags for ``options``, the device (``DEVICE_BACKENDS``: the panel's
    cpu-int8 runs the int8 networks on the CPU) and the weights."""
    engineDevice, backend = DEVICE_BACKENDS.get(str(device), (str(device), None))
    arguments = ["--device", engineDevice] + (["--backend", backend] if backend else [])
    if proposerPath is not None:
        arguments += ["--proposer", os.fspath(proposerPath)]
    if refinerPath is not None:
        arguments += ["--refiner", os.fspath(refinerPath)]
    for option in OPTIONS:
        value = getattr(options, option.name)
        if option.kind == "switch":
            if bool(value) != option.default:
                arguments.append(option.flag)
        elif value is not None:
            number = _NUMBER[option.kind](value)
            arguments += [option.flag, str(number) if option.kind == "int" else repr(number)]
    return arguments
