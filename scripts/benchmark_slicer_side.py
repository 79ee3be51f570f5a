"""What a click costs on Slicer's side of the run, against real MRML (the ``slicer-core`` wheel, as the tests use it).

``gastric-propagate benchmark`` times a click from the inputs' arrays to the result's array (files, the engine's
process, the module's timer); this times what the module does around it on the main thread, on the same CT
(512 x 512 x 100, its largest cross-section painted into a segment): ``prepare`` (the volume and the painted segment
read into arrays and checked), ``apply`` (the result written as a segment beside the painted one, the results
table filled), after one slice of the result is redrawn, ``prepareCorrections`` (the re-propagation's inputs), and
``sendAhead`` (the CT written for the worker when the module opens or the volume is chosen, before any click).
The engine's result is stood in for by the phantom's truth. Prints the median and minimum of ``--repeats`` each.
Then Cancel, as the panel's button calls it: a run started on the real engine (a new worker each time, the bundled
weights) and cancelled once it reports each of the stages that last (loading the networks, the proposer, the
refiner); the time from ``cancel()`` until the worker process has ended and the run's files are gone (the issue asks
for 0.5 s at any stage).

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
from GastricPropagateLib.launchers import PopenLauncher  # noqa: E402
from GastricPropagateLib.run_output import RunResult  # noqa: E402
from gastric_propagate.benchmark import speed_phantom  # noqa: E402
from gastric_propagate.data.annotation import annotation_from_label, painted_slices  # noqa: E402
from gastric_propagate.protocol import STAGE_LOAD, STAGE_PROPOSER, STAGE_REFINER, Report  # noqa: E402


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
    logic.warmUp()  # the volume is sent ahead to a running worker

    def sendAhead() -> None:
        volume.GetImageData().Modified()  # a new version of the voxels each time, as a newly chosen volume is
        assert logic.sendAhead(volume)

    figures["sendAhead"] = timed(sendAhead, repeats)
    cancels = cancelTimes(GastricPropagateLogic(device="cpu", launcher=PopenLauncher(), python=sys.executable),
                          prepared)
    logic.close()

    print(f"Slicer's side of a click (slicer-core, real MRML) on a {'x'.join(map(str, image.shape[::-1]))} CT, "
          f"median (min) of {repeats}:")
    for name, seconds in figures.items():
        print(f"  {name:<20} {1000 * statistics.median(seconds):6.1f} ms ({1000 * min(seconds):.1f})")
    print("Cancel, from the call until the worker has ended and the run's files are removed (target 0.5 s):")
    for stage, seconds in cancels.items():
        print(f"  during {stage:<13} " + ("the run ended before it was seen" if seconds is None
                                         else f"{1000 * seconds:6.1f} ms"))


def cancelTimes(logic, prepared) -> dict[str, float | None]:
    """Seconds ``job.cancel()`` took once the run reported each stage (None: the run ended before it was seen)."""
    times = {}
    try:
        for stage in (STAGE_LOAD, STAGE_PROPOSER, STAGE_REFINER):
            logic.close()  # a new worker for each run, so that its loading is a stage of the run
            job = logic.start(prepared)
            while not job.poll() and job.progress.stage != stage:
                time.sleep(0.001)
            if job.isFinished():
                times[stage] = None
                job.close()
                continue
            started = time.perf_counter()
            job.cancel()
            times[stage] = time.perf_counter() - started
            assert job.cancelled() and not job.folder.exists()
    finally:
        logic.close()
    return times


if __name__ == "__main__":
    main()
