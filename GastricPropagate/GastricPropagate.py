"""GastricPropagate: one painted axial slice of a gastric tumour on CT -> a 3D segment (3D Slicer scripted module).

This file holds what Slicer looks up by name: the Module, its parameter node and its Logic. The rest lives in
``GastricPropagateLib``: the panel (``widget.py``, with ``controller.py`` holding what its buttons do), the Logic's
work (``logic.py``: MRML -> arrays -> the engine, ``gastric_propagate``, in a child process -> MRML) and the
self-test (``self_test.py``).
"""

from typing import Annotated

from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleLogic

from GastricPropagateLib.logic import GastricPropagateLogic as PropagationLogic
from GastricPropagateLib.self_test import GastricPropagateTest  # noqa: F401  (Slicer runs <Module>Test)
from GastricPropagateLib.widget import GastricPropagateWidget  # noqa: F401  (Slicer shows <Module>Widget)

#
# GastricPropagate
#


class GastricPropagate(ScriptedLoadableModule):
    """Module description shown in Slicer's module list and Help panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Gastric Propagate")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["Segmentations", "Markups"]
        self.parent.contributors = ["GastricPropagate contributors"]
        self.parent.helpText = _(
            "Segments a gastric tumour in 3D from one painted axial slice of a CT.<br>"
            "1. In the Segment Editor, paint the tumour's largest cross-section on one axial slice, along its edge "
            "(the result follows the outline as drawn).<br>"
            "2. Select the CT and that segment here and click <b>Propagate</b>.<br>"
            "The result is a new segment, <i>Tumour (propagated)</i>, beside the painted one, which is never "
            "changed. Check the least confident slice first, then correct with the Segment Editor.<br>"
            "The networks run on the GPU when there is an NVIDIA one, otherwise on the CPU. Research use only; not "
            "for clinical decisions.")
        self.parent.acknowledgementText = _(
            "GastricPropagate uses 3D Slicer's Segmentations infrastructure, PyTorch and ONNX Runtime. The networks "
            "were trained on synthetic abdominal phantoms and on real lung nodules (LIDC-IDRI) and limb sarcomas "
            "(TCIA Soft-tissue Sarcoma, via IBSI), CC BY 3.0 (doi:10.7937/K9/TCIA.2015.LO9QL9SX, "
            "doi:10.7937/K9/TCIA.2015.7GO2GSKS; citations in docs/training.md); never on a real stomach.")


#
# Parameter node
#


@parameterNodeWrapper
class GastricPropagateParameterNode:
    """What the user chose; saved with the scene.

    inputVolume: the CT. segmentationNode / paintedSegmentId: the segment holding the painted slice.
    keyframes: several painted slices are fixed anchors. minSlice / maxSlice: K limits (-1 = none).
    maxDistanceMm: furthest distance beyond the outermost painted slice (0 = none). device: where the networks run
    (cpu-int8: the CPU with their int8 copies, faster).
    useRefiner: run the refiner stage. useConsensus: vote with registration and the copied outline.
    useEditorMasking: honour the Segment Editor's masking settings.
    paintedIsLargest: the painted slice is the tumour's largest cross-section (the protocol).
    The option fields are those ``PropagationOptions`` (``gastric_propagate/inference/options.py``) declares with a
    panel field; ``GastricPropagateLib.parameters`` maps them to the engine's options and the CLI's flags.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    segmentationNode: vtkMRMLSegmentationNode
    paintedSegmentId: str = ""
    keyframes: bool = False
    minSlice: Annotated[int, WithinRange(-1, 100000)] = -1
    maxSlice: Annotated[int, WithinRange(-1, 100000)] = -1
    maxDistanceMm: Annotated[float, WithinRange(0.0, 1000.0)] = 0.0
    device: Annotated[str, Choice(["auto", "cpu", "cpu-int8", "cuda"])] = "auto"
    useRefiner: bool = True
    useConsensus: bool = True
    useEditorMasking: bool = True
    paintedIsLargest: bool = True


#
# GastricPropagateLogic
#


class GastricPropagateLogic(ScriptedLoadableModuleLogic, PropagationLogic):
    """The module's Logic: ``GastricPropagateLib.GastricPropagateLogic`` (usable alone in batch scripts) with the
    module's parameter node.

    Keyword arguments are those of ``GastricPropagateLib.GastricPropagateLogic`` (device, weights, launcher, python).
    """

    def __init__(self, **kwargs) -> None:
        ScriptedLoadableModuleLogic.__init__(self)  # may call PropagationLogic.__init__() with its defaults
        PropagationLogic.__init__(self, **kwargs)

    def getParameterNode(self) -> GastricPropagateParameterNode:
        return GastricPropagateParameterNode(super().getParameterNode())
