"""What the panel does when a button is pressed, free of Qt: start a run, poll it, cancel it, finish it, and which
buttons are enabled. ``Testing/Python/slicer_layer/test_controller.py`` drives it with a fake panel and a fake job.

The Widget (``widget.py``) owns the Qt objects and hands them over as a ``view``, an object with these methods:

- ``setStatus(text)``, ``showRunTime(text)``: the status line and the "this run" figure;
- ``showProgress(done, total)`` (``total`` 0: busy, no count yet), ``hideProgress()``;
- ``startPolling()``, ``stopPolling()``: the timer that calls ``poll`` while a child process runs;
- ``waitCursor()``: a context manager; ``confirm(text, title) -> bool``; ``showError(text)``;
- ``showReview(rows, summary)`` (the per-slice list), ``showResultsTable(tableNode)``;
- ``setButtons(state)``: a ``ButtonState``.

The Widget also tells it which segmentation the panel shows (``watchSegments``): the buttons follow its segments.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import slicer
from gastric_propagate.errors import Cancelled
from gastric_propagate.protocol import STAGE_LOAD, STAGE_PROPOSER, STAGE_READ, STAGE_REFINER, STAGE_WRITE

from .i18n import _
from .parameters import missingInput, optionsFromParameterNode
from .result_segment import paintedSegmentOf, replaceQuestion, sourceSegmentName, writtenRecord
from .results_table import formatDuration
from .review import adviceSentences, leastConfidentSlice, reviewRows, reviewSummary
from .masking import Masking

__all__ = ["ButtonState", "LastRun", "RunController", "adoptedSegmentId", "resultStatus", "stageText"]

logger = logging.getLogger(__name__)

#: The segment changes that can add or take away the result (deleted, renamed, tagged) and so the buttons' state.
_SEGMENT_EVENTS = (slicer.vtkSegmentation.SegmentAdded, slicer.vtkSegmentation.SegmentRemoved,
                  slicer.vtkSegmentation.SegmentModified)


#: Seconds without a new progress line after which the status line says the engine may be stuck.
STALL_SECONDS = 30.0


def stageText(stage: str) -> str:
    """What the status line says for a stage the engine's process reports (``protocol.STAGES``)."""
    texts = {
        STAGE_LOAD: _("Loading the networks..."),
        STAGE_READ: _("Reading the volume..."),
        STAGE_PROPOSER: _("Propagating slice by slice..."),
        STAGE_REFINER: _("Refining..."),
        STAGE_WRITE: _("Writing the result..."),
    }
    return texts.get(stage, _("Starting the segmentation process..."))


def resultStatus(result, correctedSlices=(), masking: Masking | None = None, writtenRange=None) -> str:
    """The status line after a run: where the result lies, the anchors taken from corrections, the Segment Editor's
    masking applied to it (a result smaller than expected is then no surprise), the engine's advice.
    ``writtenRange``: the (first, last) K slices of the segment as written, where the masking may have left fewer
    than the engine's mask holds (None: the engine's mask's)."""
    from .result_segment import resultSegmentName

    sliceRange = writtenRange if writtenRange is not None else result.slice_range()
    text = _("Done: '{name}' on slices K = {first} to {last}.").format(
        name=resultSegmentName(), first=sliceRange[0], last=sliceRange[1]) if sliceRange else _("Done.")
    if correctedSlices:
        text += " " + _("Corrected slices kept as anchors: K = {slices}.").format(
            slices=", ".join(str(k) for k in correctedSlices))
    if masking is not None and masking.isActive():
        text += " " + _("The Segment Editor's masking applied: {masking}.").format(masking=masking.description)
    for sentence in adviceSentences(result.advice):
        text += " " + sentence
    return text


def adoptedSegmentId(segmentationNode, storedId: str, shownId: str) -> str | None:
    """The segment to store when a segmentation is newly selected: the one the selector shows, if the stored one is
    not in that segmentation; None when the stored one stands."""
    if segmentationNode is None or not shownId or shownId == storedId:
        return None
    return shownId if segmentationNode.GetSegmentation().GetSegment(storedId) is None else None


@dataclass(frozen=True)
class ButtonState:
    """Which controls of the panel are enabled (and the Propagate button's tooltip; Re-propagate's when it is off
    because the result came from another painted segment, else "": the .ui's own)."""

    apply: bool
    applyToolTip: str
    cancel: bool
    editInputs: bool  # the inputs and options sections
    jump: bool
    repropagate: bool
    exportSegNrrd: bool
    exportNifti: bool
    exportCsv: bool
    exportDicomSeg: bool
    repropagateToolTip: str = ""


@dataclass(frozen=True)
class LastRun:
    """The run whose result the panel shows."""

    volumeNode: object
    segmentationNode: object
    resultId: str
    result: object  # run_output.RunResult
    correctedSlices: list = field(default_factory=list)
    writtenSlices: frozenset | None = None  # the K slices the segment holds as written (None: all of the result's)
    writtenRecord: str | None = None  # the segment's record of this run's write (result_segment.writtenRecord)


class RunController:
    """Starts, polls, cancels and finishes the panel's runs; one run at a time.

    Args:
        logic: a ``GastricPropagateLogic``.
        view: the panel (see the module docstring).
        ensureDependencies: given the panel's device, returns True when the packages the engine needs for it are
            there, after asking to install what is missing (``dependencies.ensureDependencies`` in Slicer).
        dependenciesReady: given the device, True when the engine's packages are installed, without asking anything
            (``dependencies.ready`` in Slicer); the worker is started in advance only then.
        segmentEditorNode: returns the Segment Editor's parameter node (its masking settings), or None.
        saveUndoState: called with the segmentation node just before a result is written into it, so that one Undo
            in the Segment Editor takes the result away alone (``widget.saveSegmentEditorUndoState`` in Slicer).
    """

    def __init__(self, logic, view, *, ensureDependencies: Callable[[str], bool] = lambda device: True,
                 dependenciesReady: Callable[[str], bool] = lambda device: True,
                 segmentEditorNode: Callable[[], object] = lambda: None,
                 saveUndoState: Callable[[object], None] = lambda segmentationNode: None) -> None:
        self.logic = logic
        self.view = view
        self.ensureDependencies = ensureDependencies
        self.dependenciesReady = dependenciesReady
        self.segmentEditorNode = segmentEditorNode
        self.saveUndoState = saveUndoState
        self.parameters = None  # the panel's parameter node (set by the Widget)
        self.lastRun: LastRun | None = None
        self.lastError: BaseException | None = None  # the last error a run reported (read by the self-test)
        self._job = None
        self._prepared = None
        self._lastProgress, self._progressSince = None, 0.0  # the running job's last progress, and since when
        self._replaceExisting = False
        self._installing = False  # packages being installed (Slicer's events go on meanwhile: no second install)
        self._watched = None  # the segmentation node whose segments the buttons follow
        self._watchTags = []

    @property
    def isRunning(self) -> bool:
        return self._job is not None

    # ------------------------------------------------------------------ buttons

    def buttonState(self) -> ButtonState:
        parameters = self.parameters
        idle = not self.isRunning
        missing = missingInput(parameters)
        segmentationNode = parameters.segmentationNode if parameters is not None else None
        resultId = self.logic.resultSegmentId(segmentationNode) if segmentationNode is not None else None
        table = self.logic.resultsTableNode(segmentationNode) if segmentationNode is not None else None
        resultSegment = segmentationNode.GetSegmentation().GetSegment(resultId) if resultId is not None else None
        source = paintedSegmentOf(resultSegment) if resultSegment is not None else None
        # Another lesion's result is re-propagated from its own painted segment only (scene_input refuses it too).
        fromSelected = source is None or source[0] == parameters.paintedSegmentId
        sourceName = sourceSegmentName(segmentationNode.GetSegmentation(), resultSegment) if not fromSelected else None
        repropagateToolTip = "" if fromSelected else _(
            "'{result}' was propagated from the segment '{source}': select that segment as the painted one to "
            "re-propagate it (to propagate the selected one instead, rename '{result}' first to keep it, then click "
            "Propagate).").format(result=resultSegment.GetName(), source=sourceName) if sourceName else _(
            "'{result}' was propagated from a segment that was deleted ('{source}'): to propagate the selected one, "
            "rename '{result}' first to keep it, then click Propagate.").format(
                result=resultSegment.GetName(), source=source[1])
        return ButtonState(
            apply=missing is None and idle,
            applyToolTip=missing or _("Propagate the painted slice through the volume."),
            cancel=not idle,
            editInputs=idle,
            jump=idle and self.leastConfidentSlice() is not None,
            repropagate=missing is None and idle and resultId is not None and fromSelected,
            exportSegNrrd=segmentationNode is not None and idle,
            exportNifti=resultId is not None and bool(parameters.inputVolume) and idle,
            exportCsv=table is not None and idle,
            exportDicomSeg=segmentationNode is not None and idle,
            repropagateToolTip=repropagateToolTip)

    def refreshButtons(self) -> None:
        self._forgetRunNoLongerShown()
        self.view.setButtons(self.buttonState())

    def _forgetRunNoLongerShown(self) -> None:
        """The last run's status line, per-slice list and Jump describe its result segment on its CT: once another
        volume or segmentation is selected, or that segment is gone (deleted, Undo) or holds another run's result (an
        Undo of a run that replaced it), they are emptied, so that the panel never shows, or jumps to, a result that
        is not the one in view."""
        run, parameters = self.lastRun, self.parameters
        if run is None:  # also during a run: emptied later, it would blank the run's own "Failed" or "Cancelled"
            return
        segmentation = run.segmentationNode.GetSegmentation() if run.segmentationNode.GetScene() is not None else None
        segment = segmentation.GetSegment(run.resultId) if segmentation is not None else None
        if (parameters is not None and parameters.inputVolume is run.volumeNode
                and parameters.segmentationNode is run.segmentationNode and segment is not None
                and writtenRecord(segment) == run.writtenRecord):  # an Undo of a run that replaced it: another
            return
        self.lastRun = None
        self.view.showReview([], "")
        self.view.setStatus("")
        self.view.showRunTime("")

    def watchSegments(self, segmentationNode) -> None:
        """The buttons follow the segments of ``segmentationNode`` (the panel's selection; None: stop): a result
        deleted or renamed in the Segment Editor turns Re-propagate and Export labelmap off at once. The results
        table shown is that segmentation's (a reloaded scene's too), not the one selected before."""
        if segmentationNode is self._watched:
            return
        for tag in self._watchTags:
            self._watched.RemoveObserver(tag)
        self._watched, self._watchTags = segmentationNode, []
        if segmentationNode is not None:
            self._watchTags = [segmentationNode.AddObserver(event, self._onSegmentsChanged)
                               for event in _SEGMENT_EVENTS]
        self.view.showResultsTable(self.logic.resultsTableNode(segmentationNode)
                                   if segmentationNode is not None else None)

    def refreshResultsTable(self):
        """Computes the selected segmentation's results table again from its segments as they are now (after the
        reader's corrections, renames, deletions, Undo) and shows it; returns it (None: no table). Done when the
        panel is entered and before the table is exported, not on every stroke."""
        parameters = self.parameters
        segmentationNode = parameters.segmentationNode if parameters is not None else None
        if segmentationNode is None or self.isRunning:
            return self.logic.resultsTableNode(segmentationNode) if segmentationNode is not None else None
        table = self.logic.refreshResultsTable(parameters.inputVolume, segmentationNode)
        self.view.showResultsTable(table)
        return table

    def _onSegmentsChanged(self, caller, event) -> None:
        self.refreshButtons()

    def resultToExport(self) -> str | None:
        """The result segment Export labelmap writes; None when the selected segmentation holds none (deleted or
        renamed since the buttons were set), which the panel then says, turning the buttons off."""
        from .result_segment import resultSegmentName

        segmentationNode = self.parameters.segmentationNode if self.parameters is not None else None
        resultId = self.logic.resultSegmentId(segmentationNode) if segmentationNode is not None else None
        if resultId is None:
            message = _("Not exported: the selected segmentation holds no '{name}' segment (it was deleted or "
                        "renamed). Propagate again to export it; a segment you renamed to keep it is written with "
                        "the whole segmentation ('Segmentation (.seg.nrrd)...') or by the Segmentations module's "
                        "'Export to files'.").format(name=resultSegmentName())
            self.view.setStatus(message)
            self.view.showError(message)
            self.refreshButtons()
        return resultId

    # ------------------------------------------------------------------ run

    def run(self, fromCorrections: bool = False) -> None:
        """Reads the scene, asks before replacing an earlier result, then starts the engine's process.

        ``fromCorrections``: propagate again with the slices the reader corrected in the result as anchors.
        """
        if self.isRunning or self._installing:
            return
        self.lastError = None
        try:
            self._start(fromCorrections)
        except Exception as error:
            self.lastError = error
            self.view.setStatus(_("Not run: {error}").format(error=error))
            logger.error("GastricPropagate: %s", error)
            self.view.showError(_("Could not start the propagation.") + "\n\n" + str(error))
        finally:
            self.refreshButtons()

    def _start(self, fromCorrections: bool) -> None:
        # Dialogs (installing packages, replacing the earlier result) come without a wait cursor over them.
        device = self.parameters.device if self.parameters is not None else "auto"
        if not self.dependenciesReady(device):
            self.view.setStatus(_("Installing the Python packages the engine needs (after you agree; the Python "
                                  "console shows the progress)..."))
        self._installing = True
        try:
            installed = self.ensureDependencies(device)
        finally:
            self._installing = False
        if not installed:
            self.view.setStatus(_("The packages the engine needs are not installed; nothing was run. Click Propagate "
                                  "again and accept the install (or see the README's Install section to install "
                                  "them without internet)."))
            return
        parameters = self.parameters
        self.logic.device = parameters.device
        with self.view.waitCursor():
            masking = Masking()
            if parameters.useEditorMasking:
                masking = self.logic.maskingFromSegmentEditorNode(
                    self.segmentEditorNode(), parameters.inputVolume, parameters.segmentationNode,
                    parameters.paintedSegmentId)
            prepare = self.logic.prepareCorrections if fromCorrections else self.logic.prepare
            prepared = prepare(parameters.inputVolume, parameters.segmentationNode, parameters.paintedSegmentId,
                               optionsFromParameterNode(parameters), masking=masking)
        replaceExisting = fromCorrections  # re-propagating replaces the corrected result by design
        existingId = self.logic.resultSegmentId(parameters.segmentationNode)
        if existingId is not None and not fromCorrections:
            existing = parameters.segmentationNode.GetSegmentation().GetSegment(existingId)
            if not self.view.confirm(replaceQuestion(existing, parameters.segmentationNode.GetSegmentation(),
                                                     prepared.resultEdits, parameters.paintedSegmentId),
                                     _("Replace the propagated segment?")):
                self.view.setStatus(_("Not run: the earlier result was kept."))
                return
            replaceExisting = True
        if masking.isActive():
            logger.info("GastricPropagate: Segment Editor masking applied (%s)", masking.description)
        self._job = self.logic.start(prepared)
        self._lastProgress, self._progressSince = None, 0.0
        self._prepared = prepared
        self._replaceExisting = replaceExisting
        self.view.showProgress(0, 0)  # busy until the process reports a stage
        self.view.setStatus(_("Starting the segmentation process..."))
        self.view.startPolling()

    def poll(self) -> None:
        """Called by the panel's timer: shows the child's progress; writes its result once it has ended."""
        job = self._job
        if job is None:
            self.view.stopPolling()
            return
        finished = job.poll()
        progress = job.progress
        if progress.stage == "proposer" and progress.total > 0:
            self.view.showProgress(progress.done, progress.total)
        elif progress.stage:
            self.view.showProgress(0, 0)  # a stage without slices: busy indicator
        status = _("{stage} {elapsed}").format(stage=stageText(progress.stage),
                                               elapsed=formatDuration(job.elapsed()))
        reported = (progress.stage, progress.done, progress.total)
        if reported != self._lastProgress:
            self._lastProgress, self._progressSince = reported, job.elapsed()
        stalled = job.elapsed() - self._progressSince
        if not finished and stalled >= STALL_SECONDS:  # said, not acted on: a slow machine may still get there
            status += " " + _("(no progress for {duration}: the engine may be stuck; Cancel ends it)").format(
                duration=formatDuration(stalled))
        notice = getattr(job, "notice", "")  # the engine's worker was restarted (engine_worker.WorkerJob)
        self.view.setStatus(f"{notice} {status}" if notice else status)
        if not finished:
            return
        self.view.stopPolling()
        self._job = None
        prepared, self._prepared = self._prepared, None
        try:
            self._finish(job, prepared)
        finally:
            self.refreshButtons()
            self._followInputs()  # a device or a volume chosen during the run: its worker starts, the CT goes to it

    def _finish(self, job, prepared) -> None:
        """After the process has ended: report its error, or write its result into the scene."""
        self.view.hideProgress()
        try:
            result = job.result()
            resultId = self.logic.apply(prepared, result, replaceExisting=self._replaceExisting,
                                        beforeWrite=lambda: self._saveUndoState(prepared.segmentationNode))
        except Cancelled as error:
            self.lastError = error
            self.view.setStatus(_("Cancelled: nothing was written."))
            return
        except Exception as error:
            self.lastError = error
            self.view.setStatus(_("Failed: {error}").format(error=error))
            logger.error("GastricPropagate: %s", error)
            self.view.showError(_("The propagation failed; nothing was written.") + "\n\n" + str(error))
            return
        displayNode = prepared.segmentationNode.GetDisplayNode()
        if displayNode is not None:
            displayNode.SetSegmentVisibility(resultId, True)
        writtenRange = writtenSlices = None
        if prepared.masking.isActive():  # the segment as written, not the engine's mask, is what the reader sees
            try:
                written = np.asarray(self.logic.segmentArray(prepared.volumeNode, prepared.segmentationNode, resultId))
                slices = np.flatnonzero(written.reshape(len(written), -1).any(axis=1))
                writtenRange = (int(slices[0]), int(slices[-1])) if slices.size else None
                writtenSlices = frozenset(int(k) for k in slices)
            except Exception:  # the segment is written: the status line and the list fall back to the engine's mask
                logger.exception("GastricPropagate: could not read the written result segment back")
        segment = prepared.segmentationNode.GetSegmentation().GetSegment(resultId)
        self.lastRun = LastRun(prepared.volumeNode, prepared.segmentationNode, resultId, result,
                               list(prepared.correctedSlices), writtenSlices,
                               writtenRecord(segment) if segment is not None else None)
        self.view.setStatus(resultStatus(result, prepared.correctedSlices, prepared.masking, writtenRange))
        self.view.showRunTime(_("{duration} on {device}").format(duration=formatDuration(result.seconds),
                                                                 device=result.device))
        rows = reviewRows(result, prepared.correctedSlices, writtenSlices)
        self.view.showReview(rows, reviewSummary(rows))
        self.view.showResultsTable(self.logic.resultsTableNode(prepared.segmentationNode))

    def _saveUndoState(self, segmentationNode) -> None:
        try:
            self.saveUndoState(segmentationNode)
        except Exception:  # the result is written all the same; only the Segment Editor's Undo step is missing
            logger.exception("GastricPropagate: could not save the Segment Editor's undo state")

    # ------------------------------------------------------------------ warm-up

    def entered(self) -> None:
        """The panel is shown: the engine's worker starts (``warmUp``) and the results table is counted again (the
        reader may have edited the segments in the Segment Editor meanwhile). Neither stands in the panel's way."""
        self.warmUp()
        try:
            self.refreshResultsTable()
        except Exception:  # the table stays as it was; exporting it counts it again and says what fails
            logger.exception("GastricPropagate: could not count the results table again")

    def warmUp(self) -> None:
        """The module opened: starts the engine's worker process in the background, so that the first Propagate
        finds the engine imported and the weights loaded (docs/profile.md). Only when the packages it needs are
        installed (installing them asks the user, which waits for Propagate) and no run is going on; a worker that
        fails to start is started again by the first run, which reports why."""
        if self.isRunning or self.parameters is None or not self.dependenciesReady(self.parameters.device):
            return
        self.logic.device = self.parameters.device
        try:
            self.logic.warmUp()
        except Exception as error:  # never in the way of the panel: the first run tries again and says what failed
            logger.warning("GastricPropagate: the engine's worker was not started in advance: %s", error)
            return
        self.sendVolumeAhead()

    def sendVolumeAhead(self) -> None:
        """Gives the running worker the input volume's CT to read while the reader paints, so that the first
        Propagate on it sends only the painted slices (``Logic.sendAhead``; nothing when it has this version already).
        Never in the way of the panel: a failure here is the first run's to report."""
        if self.isRunning or self.parameters is None or not self.parameters.inputVolume:
            return
        try:
            self.logic.sendAhead(self.parameters.inputVolume)
        except Exception as error:  # noqa: BLE001 - the run sends the CT itself
            logger.warning("GastricPropagate: the CT was not sent to the engine in advance: %s", error)

    def inputsChanged(self) -> None:
        """The panel's parameters changed: the buttons follow, a worker for a newly chosen device starts now, and a
        newly chosen volume goes to the worker."""
        self.refreshButtons()
        self._followInputs()

    def _followInputs(self) -> None:
        """A device other than the worker's was chosen: its worker starts (``warmUp``, which then sends the volume
        ahead to it); else the volume goes ahead to the worker there is. Only on a change of device: a worker that
        fails to start is not started again at every change of an option."""
        if (self.parameters is not None and not self.isRunning and self.parameters.device != self.logic.device
                and self.dependenciesReady(self.parameters.device)):
            self.warmUp()
        else:
            self.sendVolumeAhead()

    # ------------------------------------------------------------------ cancel

    def _endJob(self) -> bool:
        """Stops polling and ends the running child process (waiting for it); its result is dropped."""
        job, self._job, self._prepared = self._job, None, None
        if job is None:
            return False
        self.view.stopPolling()
        job.cancel()
        self.view.hideProgress()
        return True

    def cancel(self) -> None:
        """Ends the segmentation process at once, whatever it is doing; the scene is left as it was."""
        if self._endJob():
            self.lastError = Cancelled(_("Cancelled: nothing was written."))
            self.view.setStatus(_("Cancelled: nothing was written."))
            self.refreshButtons()
            self.warmUp()  # cancel ended the worker: its successor loads now, so the next Propagate is warm too

    def sceneClosing(self) -> None:
        """The scene is about to close: a running process is ended (its result would have nowhere to go) and the
        per-slice list, status line, run time and table, which described a result that goes with the scene, are
        emptied."""
        ended = self._endJob()
        close = getattr(self.logic, "close", None)
        if close is not None:  # the worker's copy of the CT (a file and its memory) goes with the patient's scene
            close()
        self.lastRun = None
        self.view.showReview([], "")  # the last run's figures went with the scene: none of them stays on the panel
        self.view.setStatus(_("Cancelled: the scene was closed.") if ended else "")
        self.view.showRunTime("")
        self.view.showResultsTable(None)

    def cleanup(self) -> None:
        """The panel is destroyed (the application closes): ends a running process and the engine's worker."""
        self._endJob()
        self.watchSegments(None)
        close = getattr(self.logic, "close", None)
        if close is not None:
            close()

    # ------------------------------------------------------------------ navigation

    def leastConfidentSlice(self) -> int | None:
        if self.lastRun is None:
            return None
        return leastConfidentSlice(self.lastRun.result, self.lastRun.writtenSlices)

    def sliceCenterRAS(self, k: int):
        """World position on the K slice ``k`` of the last run's volume, at the centre of its result there (so that
        every view crosses the tumour; else the slice's centre, or the selected volume's without a run)."""
        if self.lastRun is None:
            return self.logic.sliceCenterRAS(self.parameters.inputVolume, int(k))
        mask = self.lastRun.result.mask
        return self.logic.sliceCenterRAS(self.lastRun.volumeNode, int(k),
                                         mask[int(k)] if 0 <= int(k) < len(mask) else None)
