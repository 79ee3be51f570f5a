"""GastricPropagateLogic: MRML -> arrays -> engine (a child process) -> arrays -> MRML.

The Logic only chains the three rooms of the Slicer layer, in the way the data flows:

- ``scene_input.py``: ``prepare`` reads the volume and the painted segment into arrays and checks them
  (``input_checks.py``); ``masking.py`` turns the Segment Editor's masking into arrays;
- ``runner.py``: ``start`` sends those arrays to the session's warm engine worker, a child process (``serve``)
  started when the module opens (``warmUp``) or on the first run, and kept for the later ones (poll the run, cancel
  it); ``sendAhead`` gives it the selected volume's CT before the run; ``compute`` is ``start`` plus a blocking wait;
- ``scene_output.py``: ``apply`` writes the result as a new segment and fills the results table.

``run`` chains prepare, compute and apply for batch use. All of it runs on the main thread; only the child
process computes. A failure in any step leaves the scene as it was.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Callable

from gastric_propagate.errors import Cancelled, InputError, WeightsError
from gastric_propagate.inference.advice import not_axial_advice

from . import result_segment, scene_input, scene_output, segment_arrays
from .engine_worker import EngineWorker
from .i18n import _
from .input_checks import checkVolume
from .masking import Masking, maskingFromSegmentEditorNode
from .results_table import RESULTS_TABLE_NAME
from .run_output import Progress, RunResult
from .runner import InferenceJob, startInference, writeImage
from .scene_input import PreparedInput
from .scene_output import ResultSegmentExistsError

if TYPE_CHECKING:  # named for the annotations only: the engine runs in its child process
    from gastric_propagate.inference.options import PropagationOptions

__all__ = [
    "RESULTS_TABLE_NAME",
    "Cancelled",
    "GastricPropagateLogic",
    "InputError",
    "Masking",
    "PreparedInput",
    "Progress",
    "ResultSegmentExistsError",
    "RunResult",
    "WeightsError",
]

logger = logging.getLogger(__name__)


class GastricPropagateLogic:
    """Propagates one painted axial slice of a gastric tumour into a 3D segment.

    Usable without the Widget (batch scripts, tests)::

        logic = GastricPropagateLogic()
        resultId, result = logic.run(volumeNode, segmentationNode, paintedSegmentId)

    Args:
        device: device for the engine's networks ("auto", "cpu", "cuda", "cuda:1", ...); auto runs them with PyTorch
            on the GPU when an NVIDIA driver is visible; otherwise, on auto or cpu, they run under ONNX Runtime when
            onnxruntime is installed (the engine's ``--backend auto``), else with PyTorch. "cpu-int8": the CPU with
            the networks' int8 copies (``--backend onnx-int8``: faster, masks slightly different).
        proposerPath, refinerPath: weights files; None = the weights bundled with the engine.
        launcher: starts the child process: ``launchers.PopenLauncher()`` (the default, batch and tests) or
            ``launchers.QProcessLauncher()`` (the Slicer application).
        python: the interpreter that runs the engine (default: PythonSlicer in Slicer, else this one).
    """

    def __init__(self, *, device: str = "auto", proposerPath=None, refinerPath=None, launcher=None,
                 python: str | None = None) -> None:
        self.device = device
        # The engine's process starts in the engine's folder: a relative path is the caller's, made absolute here.
        self.proposerPath = os.path.abspath(proposerPath) if proposerPath is not None else None
        self.refinerPath = os.path.abspath(refinerPath) if refinerPath is not None else None
        if (proposerPath is None) != (refinerPath is None):  # said, not refused: a new refiner alone can be meant
            given, other = ("proposer", "refiner") if refinerPath is None else ("refiner", "proposer")
            logger.warning("The %s %s runs with the bundled %s (no %sPath given): a mix of two "
                           "trainings. Give both files of one 'gastric-propagate train' run unless this mix is meant.",
                           given, proposerPath or refinerPath, other, other)
        self.launcher = launcher
        self.python = python
        self._worker: EngineWorker | None = None
        self._statisticsCache: dict = {}  # the results table's segment statistics, by what they depend on

    # ------------------------------------------------------------------ step 1: MRML -> arrays (scene_input.py)

    def prepare(self, volumeNode, segmentationNode, segmentId: str, options: "PropagationOptions | None" = None,
                *, masking: Masking | None = None) -> PreparedInput:
        """Reads and checks the inputs; see ``scene_input.prepareInput``. Raises InputError saying what to do."""
        return scene_input.prepareInput(volumeNode, segmentationNode, segmentId, options, masking=masking)

    def prepareCorrections(self, volumeNode, segmentationNode, segmentId: str,
                           options: "PropagationOptions | None" = None, *,
                           masking: Masking | None = None) -> PreparedInput:
        """Reads a re-propagation's inputs: the painted slices plus the slices the reader corrected in the result
        segment, all of them anchors (keyframes on); see ``scene_input.prepareCorrections``. Pass the returned
        input to ``start`` / ``compute``, then to ``apply(..., replaceExisting=True)``."""
        return scene_input.prepareCorrections(volumeNode, segmentationNode, segmentId, options, masking=masking)

    def maskingFromSegmentEditorNode(self, editorNode, volumeNode, segmentationNode, paintedSegmentId: str) -> Masking:
        """The Segment Editor's masking on the volume's grid; see ``masking.maskingFromSegmentEditorNode``."""
        return maskingFromSegmentEditorNode(editorNode, volumeNode, segmentationNode, paintedSegmentId)

    def segmentArray(self, volumeNode, segmentationNode, segmentId: str):
        """One segment as a (k, j, i) array on the volume's grid; the scene is left unchanged."""
        return segment_arrays.segmentArray(volumeNode, segmentationNode, segmentId)

    def resultSegmentId(self, segmentationNode) -> str | None:
        """ID of the segment this module wrote into ``segmentationNode``, or None."""
        return result_segment.resultSegmentId(segmentationNode)

    def sliceCenterRAS(self, volumeNode, k: int, mask=None) -> tuple[float, float, float]:
        """World (RAS) position on the volume's K slice ``k``: the centre of ``mask``'s voxels there (a (j, i)
        array), else of the slice."""
        return scene_input.sliceCenterRAS(volumeNode, k, mask)

    # ------------------------------------------------------------------ step 2: the engine, in a child process

    def start(self, prepared: PreparedInput, onProgress: Callable[[Progress], None] | None = None) -> InferenceJob:
        """Starts the engine on the prepared arrays in a child process and returns at once.

        Poll the job (``job.poll()``, from a timer), cancel it (``job.cancel()``), and once it has finished pass
        ``job.result()`` to ``apply``. Nothing in the scene changes until ``apply``.
        """
        job = startInference(prepared.image, prepared.spacingXYZ, prepared.annotation, prepared.options,
                             onProgress=onProgress, worker=self.worker(), imageKey=prepared.imageKey)
        if prepared.sliceOrientation != "axial":  # the engine sees the voxels alone: it cannot tell
            job.addedAdvice.append(not_axial_advice(prepared.sliceOrientation).to_dict())
        return job

    def worker(self) -> EngineWorker:
        """The session's warm engine worker (``engine_worker.EngineWorker``), replaced when the device, the weights, the
        launcher or the interpreter changed. Its child process starts with ``warmUp`` or the first run."""
        settings = dict(device=self.device, proposerPath=self.proposerPath, refinerPath=self.refinerPath,
                        launcher=self.launcher, python=self.python)
        if self._worker is None or not self._worker.matches(**settings):
            old, self._worker = self._worker, EngineWorker(**settings)
            if old is not None and old.busy:  # its run goes on to the end; its job then closes it
                old.retired = True
            elif old is not None:
                old.close()
        return self._worker

    def warmUp(self) -> bool:
        """Starts the session's worker process now, without a run, so that the first run finds the engine imported
        and the weights loaded (the panel calls this when the module opens; docs/profile.md). Returns at once; True
        when a process was started, False when one already runs or a run holds the worker."""
        worker = self.worker()
        if worker.busy or worker.running():
            return False
        worker.start()
        return True

    def sendAhead(self, volumeNode) -> bool:
        """Sends the volume's CT to the session's running worker now, to read while the reader paints, so that the
        first run on this version of the volume sends only the painted slices (``EngineWorker.sendAhead``; the panel
        calls this when the module opens and when the input volume changes). Not to a worker that has it already,
        that a run holds or that is not running, and not a volume the engine cannot take (the run says why).
        Returns True when sent."""
        if self._worker is None:  # none started yet (``warmUp``, or a run, starts one)
            return False
        try:
            checkVolume(volumeNode)
        except InputError:
            return False
        voxels, spacing, key = scene_input.volumeVoxels(volumeNode)
        return self._worker.sendAhead(voxels, spacing, key, writeImage)

    def close(self) -> None:
        """Ends the session's worker process (the module closes; a run in progress is ended with it)."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.close()

    def compute(self, prepared: PreparedInput, progress: Callable[[Progress], None] | None = None,
                shouldStop: Callable[[], bool] | None = None, timeout: float | None = None) -> RunResult:
        """Runs the engine on the prepared arrays and waits for it (batch use). Touches no MRML node.

        ``shouldStop`` is polled while the child runs; when it returns True the child is ended and Cancelled
        raised.

        Raises:
            InputError, WeightsError, Cancelled: from the engine; RuntimeError when the process fails otherwise.
        """
        if shouldStop is not None and shouldStop():
            raise Cancelled(_("Cancelled before the propagation started."))
        job = self.start(prepared, onProgress=progress)
        try:
            if not job.wait(timeout, shouldStop=shouldStop):
                raise RuntimeError(_("The segmentation process did not finish within {seconds:g} s.").format(
                    seconds=timeout))
        except BaseException:
            job.cancel()
            raise
        return job.result()

    # ------------------------------------------------------------------ step 3: arrays -> MRML (scene_output.py)

    def apply(self, prepared: PreparedInput, result: RunResult, replaceExisting: bool = False,
              beforeWrite: Callable[[], None] | None = None) -> str:
        """Writes the result as a new segment and fills the results table; see ``scene_output.applyResult``."""
        return scene_output.applyResult(prepared, result, replaceExisting=replaceExisting, beforeWrite=beforeWrite,
                                        cache=self._statisticsCache)

    def resultsTableNode(self, segmentationNode, create: bool = False):
        """The results table of ``segmentationNode``, created when ``create`` is True."""
        return scene_output.resultsTableNode(segmentationNode, create=create)

    def refreshResultsTable(self, volumeNode, segmentationNode):
        """The results table computed again from the segments as they are now (those unchanged since the last call
        not read again); see ``scene_output.refreshResultsTable``."""
        return scene_output.refreshResultsTable(volumeNode, segmentationNode, self._statisticsCache)

    # ------------------------------------------------------------------ all three

    def run(self, volumeNode, segmentationNode, segmentId: str, options: "PropagationOptions | None" = None, *,
            masking: Masking | None = None, replaceExisting: bool = False,
            progress: Callable[[Progress], None] | None = None,
            shouldStop: Callable[[], bool] | None = None) -> tuple[str, RunResult]:
        """prepare + compute + apply in the calling thread. Returns (result segment ID, engine result)."""
        prepared = self.prepare(volumeNode, segmentationNode, segmentId, options, masking=masking)
        existingId = self.resultSegmentId(segmentationNode)
        if existingId is not None and not replaceExisting:
            raise ResultSegmentExistsError(_(
                "The segmentation '{seg}' already has a segment '{name}'. Pass replaceExisting=True to replace it."
            ).format(seg=segmentationNode.GetName(), name=segmentationNode.GetSegmentation().GetSegment(
                existingId).GetName()))
        result = self.compute(prepared, progress=progress, shouldStop=shouldStop)
        resultId = self.apply(prepared, result, replaceExisting=replaceExisting)
        logger.info("GastricPropagate: segment %s written in %.1f s on %s", resultId, result.seconds, result.device)
        return resultId, result

    def repropagate(self, volumeNode, segmentationNode, segmentId: str,
                    options: "PropagationOptions | None" = None, *, masking: Masking | None = None,
                    progress: Callable[[Progress], None] | None = None,
                    shouldStop: Callable[[], bool] | None = None) -> tuple[str, RunResult, PreparedInput]:
        """Re-propagation from the slices the reader corrected in the result segment (batch use).

        The corrected slices (and those corrected in earlier rounds) become anchors beside the painted slices and
        are kept exactly; the result segment is replaced in place (same ID); the painted segment is untouched.
        Returns (result segment ID, engine result, the prepared input: ``correctedSlices`` lists the anchors
        taken from the corrections).

        Raises:
            InputError: no result segment, or nothing corrected since it was written; Cancelled; as ``run``.
        """
        prepared = self.prepareCorrections(volumeNode, segmentationNode, segmentId, options, masking=masking)
        result = self.compute(prepared, progress=progress, shouldStop=shouldStop)
        resultId = self.apply(prepared, result, replaceExisting=True)
        logger.info("GastricPropagate: re-propagated from corrected slices %s; segment %s written",
                    prepared.correctedSlices, resultId)
        return resultId, result, prepared
