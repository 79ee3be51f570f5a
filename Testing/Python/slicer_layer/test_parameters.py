"""GastricPropagateLib.parameters: the panel's values, the engine's options and the CLI's flags agree."""

from __future__ import annotations

import ast
import dataclasses
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("slicer", reason="needs the slicer-core wheel (real MRML): pip install -e '.[slicer]'")

REPO = Path(__file__).resolve().parents[3]
UI_PATH = REPO / "GastricPropagate" / "Resources" / "UI" / "GastricPropagate.ui"
sys.path.insert(0, str(REPO / "GastricPropagate"))

from GastricPropagateLib.parameters import (  # noqa: E402
    OPTIONS,
    commandLineArguments,
    missingInput,
    optionsFromParameterNode,
    parameterWidgets,
)
from gastric_propagate import cli  # noqa: E402
from gastric_propagate.inference.pipeline import PropagationOptions  # noqa: E402

pytestmark = pytest.mark.slicer


def _everyFieldChanged() -> PropagationOptions:
    """Options whose every field differs from its default, so that an unmapped new field cannot go unnoticed."""
    values = {}
    for field in dataclasses.fields(PropagationOptions):
        default = field.default
        if isinstance(default, bool):
            values[field.name] = not default
        elif "int" in str(field.type):
            values[field.name] = 7
        elif "float" in str(field.type):
            values[field.name] = 12.5
        else:
            pytest.fail(f"PropagationOptions.{field.name} ({field.type}): teach this test and "
                        "parameters.commandLineArguments about it")
    return PropagationOptions(**values)


def _parsedBack(arguments):
    namespace = cli.build_parser().parse_args(
        ["segment", "--image", "ct.nrrd", "--annotation", "painted.nrrd", "--output", "out.nrrd", *arguments])
    return cli.options_from_arguments(namespace), namespace


@pytest.mark.parametrize("options", [PropagationOptions(), _everyFieldChanged(),
                                     PropagationOptions(min_slice=0, max_distance_mm=0.5)], ids=repr)
def test_cli_flags_parse_back_to_the_same_options(options):
    changed = _everyFieldChanged()
    assert all(getattr(changed, f.name) != f.default for f in dataclasses.fields(PropagationOptions))
    parsed, namespace = _parsedBack(commandLineArguments(options, device="cuda:1", proposerPath=Path("p.pt"),
                                                         refinerPath="r.pt"))
    assert parsed == options
    assert (namespace.device, namespace.proposer, namespace.refiner) == ("cuda:1", "p.pt", "r.pt")


def test_the_panels_cpu_int8_device_runs_the_int8_networks_on_the_cpu():
    _, namespace = _parsedBack(commandLineArguments(PropagationOptions(), device="cpu-int8"))
    assert (namespace.device, namespace.backend) == ("cpu", "onnx-int8")
    _, namespace = _parsedBack(commandLineArguments(PropagationOptions(), device="cpu"))
    assert (namespace.device, namespace.backend) == ("cpu", "auto")


def test_default_weights_pass_no_weights_flags():
    _, namespace = _parsedBack(commandLineArguments(PropagationOptions()))
    assert namespace.proposer is None and namespace.refiner is None and namespace.device == "auto"


def _panel(**changes):
    values = dict(inputVolume="CT", segmentationNode="Segmentation", paintedSegmentId="painted", keyframes=False,
                  minSlice=-1, maxSlice=-1, maxDistanceMm=0.0, useRefiner=True, useConsensus=True,
                  paintedIsLargest=True)
    values.update(changes)
    return SimpleNamespace(**values)


def test_panel_values_become_engine_options():
    assert optionsFromParameterNode(_panel()) == PropagationOptions()
    assert optionsFromParameterNode(_panel(keyframes=True, minSlice=0, maxSlice=40, maxDistanceMm=30.0,
                                           useRefiner=False, useConsensus=False,
                                           paintedIsLargest=False)) == PropagationOptions(
        keyframes=True, min_slice=0, max_slice=40, max_distance_mm=30.0, use_refiner=False, use_consensus=False,
        painted_is_largest=False)


def test_missing_input_names_the_first_thing_to_select():
    assert missingInput(_panel()) is None
    assert missingInput(None) == "No parameter node."
    assert missingInput(_panel(inputVolume=None)) == "Select the CT volume."
    assert missingInput(_panel(segmentationNode=None)) == "Select the segmentation holding the painted slice."
    assert missingInput(_panel(paintedSegmentId="")) == "Select the painted segment."


def _parameterNodeDefaults() -> dict:
    """The fields of ``GastricPropagateParameterNode`` (GastricPropagate.py) and their defaults (None: a node)."""
    tree = ast.parse((REPO / "GastricPropagate" / "GastricPropagate.py").read_text(encoding="utf-8"))
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "GastricPropagateParameterNode")
    return {item.target.id: ast.literal_eval(item.value) if item.value is not None else None
            for item in node.body if isinstance(item, ast.AnnAssign)}


def _panelFieldsMissingFromUi(uiPath: Path = UI_PATH) -> list[str]:
    """The declared panel fields no widget of the .ui is bound to (through its ``SlicerParameterName``)."""
    root = ElementTree.parse(uiPath).getroot()
    bound = {prop.find("string").text for prop in root.iter("property") if prop.get("name") == "SlicerParameterName"}
    return [option.parameter for option in OPTIONS if option.parameter is not None and option.parameter not in bound]


def test_every_option_is_declared_once_and_each_panel_field_is_on_the_node_and_in_the_ui():
    """The engine declares the options; the parameter node's fields and the .ui's bindings are written by hand
    (Slicer's parameterNodeWrapper needs class annotations), so they are checked against the declaration."""
    assert [option.name for option in OPTIONS] == [field.name for field in dataclasses.fields(PropagationOptions)]
    assert len({option.flag for option in OPTIONS}) == len(OPTIONS)
    panel = _parameterNodeDefaults()
    assert _panelFieldsMissingFromUi() == []
    for option in OPTIONS:
        assert option.kind in ("switch", "int", "float"), option
        if option.parameter is None:
            continue
        assert option.parameter in panel, f"{option.parameter} is no field of GastricPropagateParameterNode"
        default = panel[option.parameter]
        if option.kind == "switch":
            assert default is option.default, option
        else:  # the panel's "no limit" is the engine's None
            assert option.default is None and default == option.panel_none, option
    bound = {option.parameter for option in OPTIONS}
    assert set(panel) - bound == {"inputVolume", "segmentationNode", "paintedSegmentId", "device", "useEditorMasking"}


def test_the_ui_check_finds_a_panel_field_no_widget_is_bound_to(tmp_path):
    renamed = tmp_path / "GastricPropagate.ui"
    text = UI_PATH.read_text(encoding="utf-8")
    assert text.count("<string>minSlice</string>") == 1
    renamed.write_text(text.replace("<string>minSlice</string>", "<string>lowestSlice</string>"), encoding="utf-8")
    assert _panelFieldsMissingFromUi(renamed) == ["minSlice"]


class _Widget:
    """A widget as PythonQt shows it: dynamic properties read with property(), None when unset."""

    def __init__(self, parameterName=None):
        self.parameterName = parameterName

    def property(self, name):
        return self.parameterName if name == "SlicerParameterName" else None


def test_the_panel_binds_each_ui_widget_with_a_parameter_name_and_nothing_else():
    """connectParametersToGui with this mapping returns its tag in Slicer 5.8 too (connectGui does not there), so
    the panel can disconnect; the mapping is every widget of the .ui that has a SlicerParameterName."""
    root = ElementTree.parse(UI_PATH).getroot()
    names = [prop.find("string").text for prop in root.iter("property") if prop.get("name") == "SlicerParameterName"]
    ui = SimpleNamespace(**{f"widget{index}": _Widget(name) for index, name in enumerate(names)},
                         applyButton=_Widget(), title="not a widget")
    widgets = parameterWidgets(ui)
    assert sorted(widgets) == sorted(names) and len(names) == 10
    assert all(widget.parameterName == name for name, widget in widgets.items())
    source = (REPO / "GastricPropagate" / "GastricPropagateLib" / "widget.py").read_text(encoding="utf-8")
    assert "connectParametersToGui(parameterWidgets(self.ui))" in source and ".connectGui(" not in source
