"""What a click costs on Slicer's side of the run, against real MRML (the ``slicer-core`` wheel, as the tests use it).

``gastric-propagate benchmark`` times a click from the inputs' arrays to the result's array (files, the engine's
process, the module's timer); this times what the module does around it on the main thread, on the same CT
(512 x 512 x 100, its largest cross-section painted into a segment): ``prepare`` (the volume and the painted segment
read into arrays and checked), ``apply`` (the result written as a segment beside the painted one, the results
table filled) and, after one slice of the result is redrawn, ``prepareCorrections`` (the re-propagation's inputs).
The engine's result is stood in for by the phantom's truth. Prints the median and minimum of ``--repeats`` each.

Usage: ``.venv/bin/python scripts/benchmark_slicer_side.py [--repeats 9]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "GastricPropagate"))

import slicer  # noqa: E402  (slicer-core)
import vtk  # noqa: E402

from GastricPropagateLib import GastricPropagateLogic  # noqa: E402
from GastricPropagateLib.run_output import RunResult  # noqa: E402
from gastric_propagate.benchmark import speed_phantom  # noqa: E402
from gastric_propagate.data.annotation import annotation_from_label, painted_slices  # noqa: E402
from gastric_propagate.protocol import Report  # noqa: E402


def paint(scene, volume, segmentation, segmentId: str, array: np.ndarray) -> None:
    """Replaces a segment's voxels with ``array`` (k, j, i) on the volume's grid, through a labelmap node."""
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    labelmap.CopyOrientation(volume)
    slicer.util.updateVolumeFromArray(labelmap, (array > 0).astype(np.uint8))
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segmentId)
    if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation, ids):
        raise RuntimeError("could not paint the segment")
    scene.RemoveNode(labelmap)


def timed(call, repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    repeats = parser.parse_args().repeats

    phantom = speed_phantom(100)
    image, truth = phantom.arrays()
    scene = slicer.vtkMRMLScene()
    segmentations = slicer.vtkSlicerSegmentationsModuleLogic()  # registers Slicer's representation converters
    segmentations.SetMRMLScene(scene)
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT")
    slicer.util.updateVolumeFromArray(volume, image)
    volume.SetSpacing(*phantom.image.GetSpacing())
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Segmentation")
    segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    painted = segmentation.GetSegmentation().AddEmptySegment("", "painted")
    annotation = annotation_from_label(truth)
    paint(scene, volume, segmentation, painted, annotation)

    logic = GastricPropagateLogic(device="cpu")
    slices = painted_slices(truth)
    result = RunResult(mask=(truth > 0).astype(np.uint8), report=Report(
        painted_slices=painted_slices(annotation),
        slices={"first": slices[0], "last": slices[-1], "count": len(slices)}))
    prepared = logic.prepare(volume, segmentation, painted)
    figures = {"prepare": timed(lambda: logic.prepare(volume, segmentation, painted), repeats),
               "apply": timed(lambda: logic.apply(prepared, result, replaceExisting=True), repeats)}
    resultId = logic.resultSegmentId(segmentation)
    corrected = truth.copy()
    corrected[slices[1]] = 0  # the reader erases one slice of the result
    paint(scene, volume, segmentation, resultId, corrected)
    figures["prepareCorrections"] = timed(lambda: logic.prepareCorrections(volume, segmentation, painted), repeats)
    logic.close()

    print(f"Slicer's side of a click (slicer-core, real MRML) on a {'x'.join(map(str, image.shape[::-1]))} CT, "
          f"median (min) of {repeats}:")
    for name, seconds in figures.items():
        print(f"  {name:<20} {1000 * statistics.median(seconds):6.1f} ms ({1000 * min(seconds):.1f})")


if __name__ == "__main__":
    main()
