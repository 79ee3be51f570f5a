"""The panel's ``.ui`` and the module code agree (plain pytest: parses the XML and the Python source, needs no Qt).

- every ``ui.<name>`` the module code uses (the Widget in ``GastricPropagateLib/widget.py``, the self-test in
  ``GastricPropagateLib/self_test.py``) is a widget of the ``.ui``;
- every widget of the ``.ui`` is used: referenced by the code, or bound to the parameter node through its
  ``SlicerParameterName`` property. Exempt by kind, not by name: labels that only show fixed text from the
  ``.ui``, and the containers that only group other widgets;
- each ``SlicerParameterName`` names a field of ``GastricPropagateParameterNode``, and each field is either bound
  in the ``.ui`` or synchronised by the code (the segment selector has no connector).
"""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
UI_PATH = REPO / "GastricPropagate" / "Resources" / "UI" / "GastricPropagate.ui"
MODULE_PATH = REPO / "GastricPropagate" / "GastricPropagate.py"
#: The files that use the panel's widgets: the Widget and the self-test (the module file only names them).
CODE_PATHS = [REPO / "GastricPropagate" / "GastricPropagateLib" / name for name in ("widget.py", "self_test.py")]
#: Widget classes that only hold other widgets (using one of them from the code is allowed, not required).
CONTAINER_CLASSES = {"ctkCollapsibleButton", "QGroupBox", "QFrame", "QWidget"}
#: Parameter-node fields the Widget synchronises itself (qMRMLSegmentSelectorWidget has no connector).
SYNCED_BY_CODE = {"segmentationNode", "paintedSegmentId"}


def _uiWidgets() -> dict[str, ElementTree.Element]:
    root = ElementTree.parse(UI_PATH).getroot()
    top = root.find("widget")
    return {element.get("name"): element for element in top.iter("widget") if element is not top}


def _property(element, name: str):
    for prop in element.findall("property"):
        if prop.get("name") == name:
            value = prop.find("string")
            return "" if value is None else (value.text or "")
    return None


def _codeNames(paths=CODE_PATHS) -> set[str]:
    """Names used as ``<anything>.ui.<name>`` in the module's code (comments and strings excluded)."""
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "ui":
                names.add(node.attr)
    return names


def _parameterFields() -> set[str]:
    tree = ast.parse(MODULE_PATH.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "GastricPropagateParameterNode":
            return {item.target.id for item in node.body if isinstance(item, ast.AnnAssign)}
    raise AssertionError("GastricPropagateParameterNode not found in GastricPropagate.py")


def _isStaticLabel(element) -> bool:
    return element.get("class") == "QLabel" and bool(_property(element, "text"))


def test_every_ui_name_the_code_uses_is_in_the_ui():
    missing = sorted(_codeNames() - set(_uiWidgets()))
    assert not missing, f"the module code uses ui.{missing} but {UI_PATH.name} has no such widget"


def test_every_widget_of_the_ui_is_used_by_the_code_or_bound_to_a_parameter():
    used = _codeNames()
    unused = sorted(name for name, element in _uiWidgets().items()
                    if name not in used and _property(element, "SlicerParameterName") is None
                    and not _isStaticLabel(element) and element.get("class") not in CONTAINER_CLASSES)
    assert not unused, f"{UI_PATH.name} has widgets the module never uses: {unused}"


def test_bound_widgets_name_parameter_fields_and_every_field_is_shown():
    fields = _parameterFields()
    bound = {name: _property(element, "SlicerParameterName") for name, element in _uiWidgets().items()
             if _property(element, "SlicerParameterName") is not None}
    unknown = {name: parameter for name, parameter in bound.items() if parameter not in fields}
    assert not unknown, f"SlicerParameterName values that are no parameter-node field: {unknown}"
    assert len(set(bound.values())) == len(bound), f"a parameter is bound to two widgets: {bound}"
    unshown = sorted(fields - set(bound.values()) - SYNCED_BY_CODE)
    assert not unshown, f"parameter-node fields no widget shows: {unshown}"


def test_the_ui_connections_name_its_widgets():
    root = ElementTree.parse(UI_PATH).getroot()
    names = set(_uiWidgets()) | {root.find("widget").get("name")}
    for connection in root.iter("connection"):
        for role in ("sender", "receiver"):
            assert connection.find(role).text in names, ElementTree.tostring(connection, encoding="unicode")


def test_the_checks_catch_a_stale_name(tmp_path):
    """The checks above are not vacuous: a made-up ``ui.<name>`` is found, and the .ui has widgets to check."""
    source = tmp_path / "module.py"
    source.write_text("class W:\n    def f(self):\n        self.ui.noSuchButton.enabled = True  # self.ui.inComment\n")
    assert _codeNames([source]) == {"noSuchButton"}
    widgets = _uiWidgets()
    assert {"applyButton", "confidenceTable", "repropagateButton"} <= set(widgets)
    assert not _isStaticLabel(widgets["statusLabel"]) and _isStaticLabel(widgets["inputVolumeLabel"])
    assert re.search(r"\bui\.applyButton\b", CODE_PATHS[0].read_text(encoding="utf-8"))
