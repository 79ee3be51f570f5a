"""Writing the result to files: .seg.nrrd, a NIfTI labelmap on the CT's grid, the results table as CSV.

The writers use storage nodes that are never added to the scene, so exporting leaves the scene (and the nodes'
own storage nodes, i.e. where "Save" writes them) unchanged, like ``slicer.util.exportNode`` does.
"""

from __future__ import annotations

import os

import numpy as np

import slicer

from .i18n import _
from .results_table import writeTableCsv
from .segment_arrays import segmentArray, sourceRepresentationName, temporaryNodes

__all__ = ["exportSegmentation", "exportLabelmap", "exportResultsCsv", "withDefaultSuffix"]


#: Suffixes Slicer's writers accept in lower case only (NIfTI's writer refuses '.NII.GZ' and leaves a temporary
#: folder); NRRD and .seg.nrrd are written in any case.
_LOWER_CASE_ONLY = (".nii.gz", ".nii")


def _checkedPath(path, suffixes: tuple[str, ...]) -> str:
    path = os.fspath(path)
    if not path.lower().endswith(suffixes):
        raise ValueError(_("The file name '{path}' should end with {suffixes}.").format(
            path=path, suffixes=" or ".join(suffixes)))
    suffix = next(suffix for suffix in suffixes if path.lower().endswith(suffix))
    if suffix in _LOWER_CASE_ONLY and not path.endswith(suffix):
        raise ValueError(_("The file name '{path}' ends in '{written}': Slicer writes this format by its lower-case "
                           "extension only. Name it '{name}'.").format(
                               path=path, written=path[-len(suffix):], name=path[:-len(suffix)] + suffix))
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(_("The folder '{folder}' does not exist.").format(folder=directory))
    return path


def withDefaultSuffix(path: str, defaultName: str) -> str:
    """``path`` as typed in a save dialog, with ``defaultName``'s suffix added when it has none (Qt's own dialog,
    the usual one on Linux, adds none: 'tumour' is saved as 'tumour.nii.gz', not refused); "" stays ""."""
    if not path or os.path.splitext(os.path.basename(path))[1]:
        return path
    lower = defaultName.lower()
    suffix = next((known for known in (".seg.nrrd", ".nii.gz") if lower.endswith(known)),
                  os.path.splitext(defaultName)[1])
    return path + suffix


def replacesUnasked(typed: str, path: str) -> bool:
    """True when ``path`` (``typed`` with the suffix ``withDefaultSuffix`` added) is a file the save dialog never
    asked about: it asked about the name as typed, which did not exist under that name."""
    return bool(typed) and path != typed and os.path.exists(path)


def exportSegmentation(segmentationNode, path) -> str:
    """Writes all segments of ``segmentationNode`` to a .seg.nrrd file. Returns the path.

    Raises:
        ValueError: the segmentation stores its segments as polydata (closed surfaces, planar contours): Slicer's
            storage node writes those as a VTK multiblock (.seg.vtm) under whatever name it is given.
    """
    path = _checkedPath(path, (".seg.nrrd", ".nrrd"))
    segmentation = segmentationNode.GetSegmentation()
    storesPolyData = (getattr(segmentation, "IsSourceRepresentationPolyData", None)
                      or segmentation.IsMasterRepresentationPolyData)  # the older name (Slicer before 5.4)
    if storesPolyData():
        raise ValueError(_(
            "The segmentation '{seg}' stores its segments as '{representation}', which a .seg.nrrd file cannot "
            "hold. Save it with File > Save (as .seg.vtm), or export the tumour with 'Labelmap (.nii.gz)...' (Export "
            "section).").format(
                seg=segmentationNode.GetName(), representation=sourceRepresentationName(segmentation)))
    storageNode = slicer.vtkMRMLSegmentationStorageNode()
    storageNode.SetFileName(path)
    if not storageNode.WriteData(segmentationNode):
        raise RuntimeError(_("Could not write '{path}'.").format(path=path))
    return path


def exportLabelmap(volumeNode, segmentationNode, segmentIds, path) -> str:
    """Writes ``segmentIds`` as one labelmap on the volume's grid (label n = n-th segment, the later one where they
    overlap) to NIfTI/NRRD. Returns the path.

    Each segment is read by ``segmentArray``, on temporary nodes: Slicer's export from the user's node would add a
    derived binary labelmap to a segmentation that stores closed surfaces (STL, OBJ), changing it.
    """
    path = _checkedPath(path, (".nii.gz", ".nii", ".nrrd"))
    segmentIds = list(segmentIds)
    labels = np.zeros(tuple(reversed(volumeNode.GetImageData().GetDimensions())),
                      dtype=np.uint8 if len(segmentIds) < 256 else np.uint16)
    for label, segmentId in enumerate(segmentIds, start=1):
        labels[segmentArray(volumeNode, segmentationNode, segmentId) > 0] = label
    scene = volumeNode.GetScene()
    with temporaryNodes(scene):
        labelmapNode = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__GastricPropagate_export__")
        labelmapNode.CopyOrientation(volumeNode)
        slicer.util.updateVolumeFromArray(labelmapNode, labels)
        storageNode = slicer.vtkMRMLVolumeArchetypeStorageNode()
        storageNode.SetFileName(path)
        storageNode.SetUseCompression(True)
        if not storageNode.WriteData(labelmapNode):
            raise RuntimeError(_("Could not write '{path}'.").format(path=path))
    return path


def exportResultsCsv(tableNode, path) -> str:
    """Writes the results table to CSV. Returns the path."""
    if tableNode is None:
        raise ValueError(_("There is no results table to export yet: click Propagate first."))
    path = _checkedPath(path, (".csv",))
    writeTableCsv(tableNode, path)
    return path
