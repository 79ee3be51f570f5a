"""GastricPropagateLib.controller: what the panel's buttons do, driven with a fake panel, a fake Logic and a fake job
(no Qt, no child process). ``test_testdata.py`` drives it once with the real Logic and child process."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (real MRML): pip install -e '.[slicer]'")

REPO = Path(__file__).resolve().parents[3]
if str(REPO / "GastricPropagate") not in sys.path:
    sys.path.insert(0, str(REPO / "GastricPropagate"))

from GastricPropagateLib.controller import (  # noqa: E402
    ButtonState,
    RunController,
    adoptedSegmentId,
    resultStatus,
    stageText,
)
from GastricPropagateLib.run_output import Progress, RunResult  # noqa: E402
from gastric_propagate.protocol import Report  # noqa: E402
from GastricPropagateLib.masking import Masking, maskingFromSegmentEditorNode  # noqa: E402
from GastricPropagateLib.result_segment import (  # noqa: E402
    PAINTED_SEGMENT_ID_TAG,
    PAINTED_SEGMENT_NAME_TAG,
    RESULT_TAG,
    RESULT_TAG_VALUE,
    WRITTEN_NAME_TAG,
    resultSegmentId,
    resultSegmentName,
)
from gastric_propagate.errors import Cancelled, InputError  # noqa: E402
from gastric_propagate.inference.options import PropagationOptions  # noqa: E402

pytestmark = pytest.mark.slicer


# ------------------------------------------------------------------------------------------------------- fakes


class FakeView:
    """The panel as the controller sees it: records what it was told."""

    def __init__(self, confirmAnswer: bool = True) -> None:
        self.confirmAnswer = confirmAnswer
        self.status = []
        self.progress = None  # (done, total) while shown
        self.polling = False
        self.confirmations = []
        self.errors = []
        self.review = None
        self.resultsTable = None
        self.runTime = None
        self.buttons = None
        self.cursorDepth = 0

    def setStatus(self, text):
        self.status.append(text)

    def showRunTime(self, text):
        self.runTime = text

    def showProgress(self, done, total):
        self.progress = (done, total)

    def hideProgress(self):
        self.progress = None

    def startPolling(self):
        self.polling = True

    def stopPolling(self):
        self.polling = False

    @contextlib.contextmanager
    def waitCursor(self):
        self.cursorDepth += 1
        try:
            yield
        finally:
            self.cursorDepth -= 1

    def confirm(self, text, title):
        assert self.cursorDepth == 0, "a dialog under the wait cursor"
        self.confirmations.append(text)
        return self.confirmAnswer

    def showError(self, text):
        assert self.cursorDepth == 0, "a dialog under the wait cursor"
        self.errors.append(text)

    def showReview(self, rows, summary):
        self.review = (rows, summary)

    def showResultsTable(self, tableNode):
        self.resultsTable = tableNode

    def setButtons(self, state):
        assert isinstance(state, ButtonState)
        self.buttons = state


class FakeJob:
    """A child process that finishes after ``steps`` polls with ``outcome`` (a RunResult, or an error to raise)."""

    def __init__(self, outcome, steps: int = 2) -> None:
        self.outcome = outcome
        self.steps = steps
        self.progress = Progress()
        self.cancelled = False
        self.seconds = 2.0

    def poll(self) -> bool:
        self.steps -= 1
        self.progress = Progress("proposer", 3, 10) if self.steps > 0 else Progress("write", 0, 0)
        return self.steps <= 0

    def elapsed(self) -> float:
        return self.seconds

    def result(self):
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    def cancel(self) -> None:
        self.cancelled = True


class FakeSegmentation:
    def __init__(self, names: dict[str, str]) -> None:
        self.names = names
        self.tags: dict[str, dict[str, str]] = {}

    def GetSegment(self, segmentId):
        name = self.names.get(segmentId)
        if name is None:
            return None
        segment = slicer.vtkSegment()  # real tags: the replace question reads them
        segment.SetName(name)
        if segmentId in self.tags:
            for tag, value in self.tags[segmentId].items():
                segment.SetTag(tag, value)
        return segment


class FakeSegmentationNode:
    def __init__(self, names: dict[str, str]) -> None:
        self.segmentation = FakeSegmentation(names)
        self.visible = {}

    def GetSegmentation(self):
        return self.segmentation

    def GetScene(self):
        return "scene"

    def GetDisplayNode(self):
        return SimpleNamespace(SetSegmentVisibility=lambda segmentId, shown: self.visible.__setitem__(segmentId, shown))


class WarmUpFailure(OSError):
    """The worker process could not be started (e.g. the interpreter is missing)."""


class SendAheadFailure(OSError):
    """The CT could not be written for the worker (e.g. the disk is full)."""


class FakeLogic:
    def __init__(self, outcome, *, existingResultId=None, prepareError=None) -> None:
        self.outcome = outcome
        self.existingResultId = existingResultId
        self.prepareError = prepareError
        self.resultEdits = []  # the slices of the earlier result the reader changed (prepare reads them)
        self.device = None
        self.calls = []
        self.job = None

    def resultSegmentId(self, segmentationNode):
        return self.existingResultId

    def resultsTableNode(self, segmentationNode, create=False):
        return "results table" if self.existingResultId is not None else None

    def refreshResultsTable(self, volumeNode, segmentationNode):
        self.calls.append(("refreshTable", volumeNode))
        return "refreshed table" if self.existingResultId is not None else None

    def maskingFromSegmentEditorNode(self, editorNode, volumeNode, segmentationNode, paintedSegmentId):
        self.calls.append(("masking", editorNode))
        return Masking()

    def _prepare(self, kind, volumeNode, segmentationNode, segmentId, options, masking):
        self.calls.append((kind, options))
        if self.prepareError is not None:
            raise self.prepareError
        return SimpleNamespace(volumeNode=volumeNode, segmentationNode=segmentationNode, paintedSegmentId=segmentId,
                               correctedSlices=[6] if kind == "prepareCorrections" else [], masking=masking,
                               resultEdits=self.resultEdits)

    def prepare(self, volumeNode, segmentationNode, segmentId, options=None, *, masking=None):
        return self._prepare("prepare", volumeNode, segmentationNode, segmentId, options, masking)

    def prepareCorrections(self, volumeNode, segmentationNode, segmentId, options=None, *, masking=None):
        return self._prepare("prepareCorrections", volumeNode, segmentationNode, segmentId, options, masking)

    def warmUp(self):
        self.calls.append(("warmUp", self.device))
        if isinstance(self.outcome, WarmUpFailure):
            raise self.outcome
        return True

    def sendAhead(self, volumeNode):
        self.calls.append(("sendAhead", volumeNode))
        if isinstance(self.outcome, SendAheadFailure):
            raise self.outcome
        return True

    def start(self, prepared):
        self.job = FakeJob(self.outcome)
        return self.job

    def apply(self, prepared, result, replaceExisting=False, beforeWrite=None):
        if beforeWrite is not None:  # as the real one: once its checks pass, before it writes
            beforeWrite()
        self.calls.append(("apply", replaceExisting))
        self.existingResultId = "result"
        if isinstance(prepared.segmentationNode, FakeSegmentationNode):
            prepared.segmentationNode.segmentation.names["result"] = "Tumour (propagated)"
        self.written = np.asarray(result.mask)  # as the real one writes it when no masking removes anything
        return "result"

    def segmentArray(self, volumeNode, segmentationNode, segmentId):
        return self.written

    def sliceCenterRAS(self, volumeNode, k, mask=None):
        return (float(k), -1.0 if mask is None else float(np.count_nonzero(mask)), 0.0)


def runResult(mask=None, **changes) -> RunResult:
    if mask is None:
        mask = np.zeros((10, 4, 4), dtype=np.uint8)
        mask[3:8, 1:3, 1:3] = 1
    values = dict(slice_confidence={3: 0.4, 4: 0.9, 5: 1.0, 6: 0.8, 7: 0.3}, painted_slices=[5],
                  stop_reasons={}, seconds=4.5, device="cpu", slices_to_review=[7])
    values.update(changes)
    return RunResult(mask, Report(**values))


def parameters(**changes):
    values = dict(inputVolume="CT", segmentationNode=FakeSegmentationNode({"painted": "Tumour (painted)"}),
                  paintedSegmentId="painted", keyframes=False, minSlice=-1, maxSlice=40, maxDistanceMm=0.0,
                  useRefiner=True, useConsensus=False, paintedIsLargest=True, device="cpu", useEditorMasking=True)
    values.update(changes)
    return SimpleNamespace(**values)


def controllerWith(logic, view=None, **kwargs) -> RunController:
    controller = RunController(logic, view or FakeView(), segmentEditorNode=lambda: "editor node", **kwargs)
    controller.parameters = parameters()
    return controller


def started() -> tuple[FakeLogic, RunController]:
    """A controller whose run has started (its fake job not polled yet)."""
    logic = FakeLogic(runResult())
    controller = controllerWith(logic)
    controller.run()
    return logic, controller


def runToEnd(controller: RunController) -> None:
    while controller.isRunning:
        assert controller.view.polling
        controller.poll()


# ------------------------------------------------------------------------------------------------------- tests


def test_idle_buttons_follow_the_inputs():
    controller = controllerWith(FakeLogic(runResult()))
    state = controller.buttonState()
    assert state.apply and not state.cancel and state.editInputs
    assert not state.jump and not state.repropagate and not state.exportNifti and not state.exportCsv
    assert state.exportSegNrrd and state.exportDicomSeg
    controller.parameters = parameters(inputVolume=None)
    state = controller.buttonState()
    assert not state.apply and state.applyToolTip == "Select the CT volume."
    controller.parameters = None
    state = controller.buttonState()
    assert not state.apply and not state.exportSegNrrd and state.applyToolTip == "No parameter node."


def test_a_restarted_worker_is_said_in_the_status_line_while_the_run_goes_on():
    logic, controller = started()
    logic.job.notice = "The engine's worker process ended during the run; it was restarted."
    controller.poll()
    assert controller.view.status[-1] == logic.job.notice + " " + stageText("proposer") + " 2.0 s"
    controller.poll()
    assert controller.lastError is None and controller.lastRun.resultId == "result"


def test_a_run_starts_polls_and_writes_its_result():
    logic = FakeLogic(runResult())
    controller = controllerWith(logic)
    view = controller.view
    controller.run()

    assert controller.isRunning and view.polling and view.progress == (0, 0)
    assert logic.device == "cpu"
    assert logic.calls[:2] == [("masking", "editor node"),
                               ("prepare", PropagationOptions(max_slice=40, use_consensus=False))]
    state = view.buttons
    assert state.cancel and not state.apply and not state.editInputs and not state.exportSegNrrd

    controller.poll()
    assert view.progress == (3, 10) and view.status[-1] == stageText("proposer") + " 2.0 s"
    controller.poll()
    assert not controller.isRunning and not view.polling and view.progress is None
    assert ("apply", False) in logic.calls
    assert controller.lastError is None and controller.lastRun.resultId == "result"
    assert view.status[-1].startswith("Done: 'Tumour (propagated)' on slices K = 3 to 7.")
    assert view.runTime == "4.5 s on cpu"
    rows, summary = view.review
    assert [row.k for row in rows] == [3, 4, 5, 6, 7] and "K = 7" in summary
    assert view.resultsTable == "results table"
    assert controller.parameters.segmentationNode.visible == {"result": True}
    state = view.buttons
    assert state.apply and state.jump and state.repropagate and state.exportNifti and state.exportCsv
    assert controller.leastConfidentSlice() == 7
    # The views go to the result's own voxels on that slice (the fake logic returns how many it was given).
    assert controller.sliceCenterRAS(7) == (7.0, float(np.count_nonzero(controller.lastRun.result.mask[7])), 0.0)


class MaskedLogic(FakeLogic):
    """The Segment Editor's masking empties the result's slice 7 as the Logic writes it."""

    def maskingFromSegmentEditorNode(self, editorNode, volumeNode, segmentationNode, paintedSegmentId):
        return Masking(intensityRange=(-50.0, 300.0), description="intensity -50 to 300")

    def apply(self, prepared, result, replaceExisting=False, beforeWrite=None):
        resultId = super().apply(prepared, result, replaceExisting, beforeWrite)
        self.written = self.written.copy()
        self.written[7] = 0
        return resultId


def test_the_list_and_the_jump_leave_out_a_slice_the_editor_masking_emptied():
    controller = controllerWith(MaskedLogic(runResult()))
    controller.run()
    runToEnd(controller)
    rows, summary = controller.view.review
    assert [row.k for row in rows] == [3, 4, 5, 6], "slice 7, the least confident, holds nothing as written"
    assert [row.k for row in rows if row.leastConfident] == [3] and controller.leastConfidentSlice() == 3
    assert "K = 7" not in summary and controller.view.buttons.jump
    assert controller.view.status[-1].startswith("Done: 'Tumour (propagated)' on slices K = 3 to 6.")


def test_without_editor_masking_the_editor_is_not_read():
    logic = FakeLogic(runResult())
    controller = controllerWith(logic)
    controller.parameters = parameters(useEditorMasking=False)
    controller.run()
    assert not [call for call in logic.calls if call[0] == "masking"]


@pytest.mark.parametrize("answer", [True, False])
def test_an_earlier_result_is_replaced_only_when_the_user_agrees(answer):
    logic = FakeLogic(runResult(), existingResultId="old")
    controller = controllerWith(logic, FakeView(confirmAnswer=answer))
    controller.parameters.segmentationNode.segmentation.names["old"] = "Tumour (propagated)"
    controller.run()
    assert len(controller.view.confirmations) == 1 and "Tumour (propagated)" in controller.view.confirmations[0]
    if not answer:
        assert not controller.isRunning and controller.view.status[-1] == "Not run: the earlier result was kept."
        return
    runToEnd(controller)
    assert ("apply", True) in logic.calls


def test_re_propagate_is_offered_only_for_the_result_of_the_selected_painted_segment():
    logic = FakeLogic(runResult(), existingResultId="result")
    controller = controllerWith(logic)
    segmentation = controller.parameters.segmentationNode.segmentation
    segmentation.names["result"] = resultSegmentName()
    segmentation.tags["result"] = {RESULT_TAG: RESULT_TAG_VALUE, WRITTEN_NAME_TAG: resultSegmentName(),
                                   PAINTED_SEGMENT_ID_TAG: "painted", PAINTED_SEGMENT_NAME_TAG: "Tumour (painted)"}
    assert controller.buttonState().repropagate
    controller.parameters.paintedSegmentId = "lesion B"  # another lesion selected: its result is not this one
    segmentation.names["lesion B"] = "lesion B"
    state = controller.buttonState()
    assert not state.repropagate and state.apply
    assert state.repropagateToolTip.startswith("'Tumour (propagated)' was propagated from the segment "
                                               "'Tumour (painted)': select that segment")
    del segmentation.names["painted"]  # the lesion it came from was deleted
    assert controller.buttonState().repropagateToolTip.startswith(
        "'Tumour (propagated)' was propagated from a segment that was deleted ('Tumour (painted)')")
    segmentation.names["painted"] = "Tumour (painted)"
    controller.parameters.paintedSegmentId = "painted"
    assert controller.buttonState().repropagateToolTip == ""


def test_the_replace_question_says_what_the_segment_is():
    """A result of an earlier run names the painted segment it came from; a segment that only has the result's name
    (made by hand) is not called a result "from an earlier run"."""
    logic = FakeLogic(runResult(), existingResultId="old")
    controller = controllerWith(logic, FakeView(confirmAnswer=False))
    segmentation = controller.parameters.segmentationNode.segmentation
    segmentation.names["old"] = resultSegmentName()
    controller.run()
    handMade = controller.view.confirmations[-1]
    assert "did not mark as its result (made by hand" in handMade and "earlier run" not in handMade

    segmentation.tags["old"] = {RESULT_TAG: RESULT_TAG_VALUE, WRITTEN_NAME_TAG: resultSegmentName(),
                                PAINTED_SEGMENT_ID_TAG: "lesionA", PAINTED_SEGMENT_NAME_TAG: "lesion A"}
    controller.run()
    assert "from an earlier run, propagated from 'lesion A'. Replace it" in controller.view.confirmations[-1]
    assert "corrections" not in controller.view.confirmations[-1]
    assert len(controller.view.confirmations) == 2 and not controller.isRunning

    logic.resultEdits = [12, 13]  # the reader corrected the earlier result: replacing it discards that
    controller.run()  # it came from lesion A, since deleted: it can only be kept by renaming it
    assert controller.view.confirmations[-1].endswith(
        "It holds your corrections on slice(s) K = 12, 13, which the new result discards. To keep them, click Cancel "
        "(rename 'Tumour (propagated)' to keep it).")
    segmentation.names["lesionA"] = "lesion A (cardia)"  # still there, renamed since: its name now
    controller.run()
    assert controller.view.confirmations[-1].endswith(
        "(rename 'Tumour (propagated)' to keep it, or select 'lesion A (cardia)' as the painted segment to "
        "re-propagate it).")
    segmentation.tags["old"][PAINTED_SEGMENT_ID_TAG] = "painted"  # propagated from the selected segment
    controller.run()
    assert controller.view.confirmations[-1].endswith(
        "To keep them, click Cancel ('Re-propagate from corrected slices' keeps them all as anchors).")


def test_repropagation_reads_the_corrections_and_replaces_without_asking():
    logic = FakeLogic(runResult(), existingResultId="result")
    controller = controllerWith(logic)
    controller.run(fromCorrections=True)
    runToEnd(controller)
    assert [call[0] for call in logic.calls] == ["masking", "prepareCorrections", "apply", "sendAhead"]
    assert ("apply", True) in logic.calls and not controller.view.confirmations
    assert "Corrected slices kept as anchors: K = 6." in controller.view.status[-1]
    assert [row.label() for row in controller.view.review[0]][3] == "6 (corrected)"


def test_cancel_ends_the_job_and_writes_nothing():
    logic, controller = started()
    job = logic.job
    controller.cancel()
    assert job.cancelled and not controller.isRunning and not controller.view.polling
    assert isinstance(controller.lastError, Cancelled) and controller.view.progress is None
    assert controller.view.status[-1] == "Cancelled: nothing was written."
    assert controller.view.buttons.apply and not controller.view.buttons.cancel
    controller.poll()  # a timer tick already queued does nothing
    assert ("apply", False) not in logic.calls and controller.lastRun is None
    assert logic.calls.count(("warmUp", "cpu")) == 1, "the ended worker's successor is started in advance"
    controller.cancel()  # nothing running: nothing happens
    assert controller.view.status[-1] == "Cancelled: nothing was written."
    assert logic.calls.count(("warmUp", "cpu")) == 1


def test_a_second_press_while_running_starts_nothing():
    logic, controller = started()
    first = logic.job
    controller.run()
    assert logic.job is first and [call[0] for call in logic.calls].count("prepare") == 1


def test_an_input_error_is_shown_and_nothing_starts():
    controller = controllerWith(FakeLogic(runResult(), prepareError=InputError("The painted segment is empty.")))
    controller.run()
    assert not controller.isRunning and isinstance(controller.lastError, InputError)
    assert controller.view.status[-1] == "Not run: The painted segment is empty."
    assert controller.view.errors and "The painted segment is empty." in controller.view.errors[0]
    assert controller.view.buttons.apply and controller.view.cursorDepth == 0


def test_missing_pytorch_starts_nothing():
    logic = FakeLogic(runResult())
    controller = controllerWith(logic, ensureDependencies=lambda device: False)
    controller.run()
    assert not controller.isRunning and not logic.calls
    assert controller.view.status[-1].startswith("The packages the engine needs are not installed; nothing was run. "
                                                 "Click Propagate again and accept the install")


def test_a_click_during_the_install_starts_no_second_install_and_the_status_says_it_installs():
    """Slicer's events go on while pip runs (its output is logged line by line): a second click on Propagate started
    a second install beside the first, and nothing said that one was going on."""
    logic = FakeLogic(runResult())
    installs = []

    def install(device):
        installs.append(device)
        controller.run()  # the reader clicks again while it installs
        return True

    controller = controllerWith(logic, ensureDependencies=install, dependenciesReady=lambda device: False)
    controller.run()
    assert installs == [controller.parameters.device], "one install, for the panel's device"
    assert any(text.startswith("Installing the Python packages the engine needs") for text in controller.view.status)
    assert controller.isRunning, "the run goes on once the packages are there"


def test_opening_the_module_starts_the_worker_in_advance_on_the_chosen_device():
    logic = FakeLogic(runResult())
    controller = controllerWith(logic)
    controller.parameters = parameters(device="cpu-int8")
    controller.warmUp()
    assert logic.calls == [("warmUp", "cpu-int8"), ("sendAhead", "CT")], "and the chosen CT is sent to it"


def test_a_changed_input_refreshes_the_buttons_and_sends_the_volume_ahead_but_not_during_a_run():
    logic = FakeLogic(runResult())
    controller = controllerWith(logic)
    controller.inputsChanged()
    assert logic.calls == [("warmUp", "cpu"), ("sendAhead", "CT")] and controller.view.buttons
    controller.parameters = parameters(inputVolume=None)
    controller.inputsChanged()
    assert len(logic.calls) == 2, "no volume chosen: nothing to send; the same device: no other worker"
    controller.parameters = parameters(device="cuda")  # another device: its worker starts before the CT is sent
    controller.inputsChanged()
    assert logic.calls[-2:] == [("warmUp", "cuda"), ("sendAhead", "CT")]
    controller.inputsChanged()  # an option ticked: no new worker (one that failed to start is not started again)
    assert logic.calls[-1] == ("sendAhead", "CT") and logic.calls.count(("warmUp", "cuda")) == 1
    logic, controller = started()
    controller.parameters = parameters(inputVolume="another CT")  # chosen during the run
    controller.inputsChanged()
    assert ("sendAhead", "another CT") not in logic.calls, "a run holds the worker"
    runToEnd(controller)
    assert logic.calls[-2:] == [("apply", False), ("sendAhead", "another CT")], "sent once the run has ended"
    logic, controller = started()
    controller.parameters = parameters(device="cuda")  # a device chosen during the run
    controller.inputsChanged()
    runToEnd(controller)
    assert logic.calls[-2:] == [("warmUp", "cuda"), ("sendAhead", "CT")], "its worker starts once the run ended"


def test_a_failure_to_send_the_volume_ahead_stays_out_of_the_way():
    logic = FakeLogic(SendAheadFailure("disk full"))
    controller = controllerWith(logic)
    controller.inputsChanged()
    controller.warmUp()
    assert logic.calls == [("warmUp", "cpu"), ("sendAhead", "CT"), ("warmUp", "cpu"), ("sendAhead", "CT")]
    assert controller.view.errors == [] and controller.lastError is None and not controller.isRunning


def test_no_warm_up_without_the_packages_without_parameters_or_during_a_run():
    logic = FakeLogic(runResult())
    controllerWith(logic, dependenciesReady=lambda device: False).warmUp()  # installing asks: wait for Propagate
    controller = controllerWith(logic)
    controller.parameters = None
    controller.warmUp()
    assert logic.calls == []
    logic, controller = started()
    controller.warmUp()
    assert ("warmUp", "cpu") not in logic.calls


def test_a_failed_warm_up_stays_out_of_the_way_and_the_run_still_starts():
    logic = FakeLogic(WarmUpFailure("no such interpreter"))
    controller = controllerWith(logic)
    controller.warmUp()
    assert controller.view.errors == [] and controller.lastError is None and not controller.isRunning
    assert controller.buttonState().apply


def test_a_failed_or_cancelled_job_writes_nothing():
    controller = controllerWith(FakeLogic(RuntimeError("the process ended with exit code 1")))
    controller.run()
    runToEnd(controller)
    assert controller.view.status[-1] == "Failed: the process ended with exit code 1" and controller.view.errors
    assert controller.lastRun is None and ("apply", False) not in controller.logic.calls

    controller = controllerWith(FakeLogic(Cancelled("Cancelled.")))
    controller.run()
    runToEnd(controller)
    assert controller.view.status[-1] == "Cancelled: nothing was written." and not controller.view.errors
    assert isinstance(controller.lastError, Cancelled)


@pytest.mark.parametrize("outcome", ["written", "failed", "cancelled", "undo state fails"])
def test_an_undo_state_is_saved_just_before_the_result_is_written(outcome):
    """The Segment Editor's Undo takes the result away alone: its state is saved after the run, before writing;
    never for a run that writes nothing; a failure to save it never stops the result being written."""
    job = {"written": runResult(), "failed": RuntimeError("exit code 1"), "cancelled": Cancelled("Cancelled."),
           "undo state fails": runResult()}[outcome]
    logic = FakeLogic(job)

    def saveUndoState(segmentationNode):
        logic.calls.append(("undo state", segmentationNode))
        if outcome == "undo state fails":
            raise RuntimeError("no Segment Editor")

    controller = controllerWith(logic, saveUndoState=saveUndoState)
    controller.run()
    runToEnd(controller)
    kinds = [call[0] for call in logic.calls]
    if outcome in ("failed", "cancelled"):
        assert "undo state" not in kinds and "apply" not in kinds
        return
    assert kinds[kinds.index("undo state") + 1] == "apply" and kinds.count("undo state") == 1
    assert ("undo state", controller.parameters.segmentationNode) in logic.calls
    assert controller.view.status[-1].startswith("Done: 'Tumour (propagated)'")


def test_a_run_without_progress_for_half_a_minute_is_said_to_be_maybe_stuck():
    logic, controller = started()
    logic.job.steps = 10**6  # never finishes by itself
    controller.poll()
    assert "no progress" not in controller.view.status[-1]
    logic.job.seconds = 2.0 + 29.0
    controller.poll()
    assert "no progress" not in controller.view.status[-1]
    logic.job.seconds = 2.0 + 31.0
    controller.poll()
    assert controller.view.status[-1].endswith("(no progress for 31.0 s: the engine may be stuck; Cancel ends it)")
    logic.job.progress = Progress("refiner", 0, 0)  # it moved on: the count starts again
    logic.job.poll = lambda: False
    controller.poll()
    assert "no progress" not in controller.view.status[-1]


def test_after_the_scene_closed_the_panel_shows_nothing_of_the_last_run():
    logic, controller = started()
    runToEnd(controller)
    assert controller.view.runTime and controller.view.resultsTable == "results table"
    logic.close = lambda: logic.calls.append(("close", None))  # the worker, with its copy of the patient's CT
    controller.sceneClosing()
    assert ("close", None) in logic.calls
    assert controller.view.status[-1] == "" and controller.view.runTime == ""
    assert controller.view.resultsTable is None and controller.view.review == ([], "")


def test_the_table_is_computed_again_on_request_and_shown_only_when_idle():
    """The panel refreshes it when entered and before exporting it: the segments as they are now."""
    logic, controller = started()
    assert controller.refreshResultsTable() is None and ("refreshTable", "CT") not in logic.calls  # running
    runToEnd(controller)
    assert controller.refreshResultsTable() == "refreshed table" and ("refreshTable", "CT") in logic.calls
    assert controller.view.resultsTable == "refreshed table"
    controller.parameters.segmentationNode = None
    assert controller.refreshResultsTable() is None


def test_entering_the_panel_starts_the_worker_and_a_failing_table_count_stays_out_of_the_way(monkeypatch):
    logic = FakeLogic(runResult(), existingResultId="result")
    controller = controllerWith(logic)

    def fails(volumeNode, segmentationNode):
        raise RuntimeError("the segment could not be read")

    monkeypatch.setattr(logic, "refreshResultsTable", fails)
    controller.entered()
    assert ("warmUp", "cpu") in logic.calls and not controller.view.errors


def test_closing_the_scene_ends_the_run_and_forgets_the_result():
    logic, controller = started()
    runToEnd(controller)
    controller.run(fromCorrections=True)
    job = logic.job
    controller.sceneClosing()
    assert job.cancelled and not controller.isRunning and not controller.view.polling
    assert controller.lastRun is None and controller.view.review == ([], "")
    assert controller.view.status[-1] == "Cancelled: the scene was closed." and controller.lastError is None


def test_status_texts():
    assert stageText("refiner") == "Refining..." and stageText("") == "Starting the segmentation process..."
    assert resultStatus(runResult(mask=np.zeros((3, 2, 2), dtype=np.uint8))) == "Done."
    advice = [{"kind": "unknown", "sentence": "Check slice 9."}]
    assert resultStatus(runResult(advice=advice), [4, 6]) == (
        "Done: 'Tumour (propagated)' on slices K = 3 to 7. Corrected slices kept as anchors: K = 4, 6. "
        "Check slice 9.")
    # With the Segment Editor's masking, the segment as written (here slices 4 to 6) is what the line names.
    assert resultStatus(runResult(), writtenRange=(4, 6)).startswith(
        "Done: 'Tumour (propagated)' on slices K = 4 to 6.")


def test_a_newly_selected_segmentation_adopts_the_segment_shown():
    node = FakeSegmentationNode({"a": "A", "b": "B"})
    assert adoptedSegmentId(node, "gone", "a") == "a"
    assert adoptedSegmentId(node, "b", "a") is None  # the stored segment is in the segmentation: it stays
    assert adoptedSegmentId(node, "a", "a") is None
    assert adoptedSegmentId(node, "gone", "") is None and adoptedSegmentId(None, "gone", "a") is None


# ------------------------------------------------------------------------- against real MRML (slicer-core)


class SceneLogic(FakeLogic):
    """The fake Logic, but reading the Segment Editor's masking and the result segment from real MRML nodes."""

    def maskingFromSegmentEditorNode(self, editorNode, volumeNode, segmentationNode, paintedSegmentId):
        masking = maskingFromSegmentEditorNode(editorNode, volumeNode, segmentationNode, paintedSegmentId)
        self.calls.append(("masking", masking))
        return masking

    def resultSegmentId(self, segmentationNode):
        return resultSegmentId(segmentationNode)

    def apply(self, prepared, result, replaceExisting=False, beforeWrite=None):
        super().apply(prepared, result, replaceExisting, beforeWrite)
        return prepared.segmentationNode.GetSegmentation().AddEmptySegment("", resultSegmentName())


def editorScene() -> SimpleNamespace:
    """A real scene: the run's CT and segmentation, another volume and segmentation, and the Segment Editor's node
    with an intensity range on (editing nothing yet)."""
    scene = slicer.vtkMRMLScene()
    s = SimpleNamespace(scene=scene, segmentationsLogic=slicer.vtkSlicerSegmentationsModuleLogic())
    s.segmentationsLogic.SetMRMLScene(scene)  # registers the converter rules AddEmptySegment needs
    for name, className, label in (("volume", "vtkMRMLScalarVolumeNode", "CT"),
                                   ("otherVolume", "vtkMRMLScalarVolumeNode", "MR"),
                                   ("segmentation", "vtkMRMLSegmentationNode", "Tumour"),
                                   ("otherSegmentation", "vtkMRMLSegmentationNode", "Liver")):
        setattr(s, name, scene.AddNewNodeByClass(className, label))
    s.paintedId = s.segmentation.GetSegmentation().AddEmptySegment("", "Tumour (painted)")
    s.editor = scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    s.editor.SetSourceVolumeIntensityMask(True)
    s.editor.SetSourceVolumeIntensityMaskRange(-50.0, 300.0)
    return s


def watchedRun(s) -> tuple[SceneLogic, RunController]:
    """``runWithEditor``, its panel following the run's segmentation as the widget makes it."""
    logic, controller = runWithEditor(s)
    controller.watchSegments(s.segmentation)
    return logic, controller


def runWithEditor(s) -> tuple[SceneLogic, RunController]:
    logic = SceneLogic(runResult())
    controller = RunController(logic, FakeView(), segmentEditorNode=lambda: s.editor)
    controller.parameters = parameters(inputVolume=s.volume, segmentationNode=s.segmentation,
                                       paintedSegmentId=s.paintedId)
    controller.run()
    runToEnd(controller)
    return logic, controller


@pytest.mark.parametrize("sourceVolume, segmentation", [("otherVolume", "segmentation"),
                                                        ("volume", "otherSegmentation"), (None, "segmentation")])
def test_an_intensity_range_set_in_the_segment_editor_for_other_inputs_is_not_applied(sourceVolume, segmentation):
    s = editorScene()
    s.editor.SetAndObserveSourceVolumeNode(getattr(s, sourceVolume) if sourceVolume else None)
    s.editor.SetAndObserveSegmentationNode(getattr(s, segmentation))
    logic, controller = runWithEditor(s)
    masking = next(call[1] for call in logic.calls if call[0] == "masking")
    assert not masking.isActive()
    assert controller.view.status[-1] == "Done: 'Tumour (propagated)' on slices K = 3 to 7."


def test_an_intensity_range_set_in_the_segment_editor_for_this_volume_is_applied_and_said():
    s = editorScene()
    s.editor.SetAndObserveSourceVolumeNode(s.volume)
    s.editor.SetAndObserveSegmentationNode(s.segmentation)
    logic, controller = runWithEditor(s)
    masking = next(call[1] for call in logic.calls if call[0] == "masking")
    assert masking.intensityRange == (-50.0, 300.0) and masking.editable is None
    assert controller.lastRun is not None and controller.lastRun.result is logic.outcome
    assert controller.view.status[-1] == ("Done: 'Tumour (propagated)' on slices K = 3 to 7. The Segment Editor's "
                                          "masking applied: intensity -50 to 300.")


def test_one_undo_after_propagate_takes_the_result_away_and_keeps_the_last_stroke():
    """With the Segment Editor's history (vtkSegmentationHistory, as it keeps it): a state saved before the reader's
    last stroke (as the editor does), the run, one Undo: the result is gone, the stroke stays."""
    s = editorScene()
    segmentation = s.segmentation.GetSegmentation()
    history = slicer.vtkSegmentationHistory()
    history.SetSegmentation(segmentation)
    history.SaveState()  # the editor, before the reader's stroke
    stroke = segmentation.AddEmptySegment("", "touch-up")  # the reader's last edit (a new segment, for brevity)

    logic = SceneLogic(runResult())  # its apply writes a (real, empty) result segment
    controller = RunController(logic, FakeView(), saveUndoState=lambda node: history.SaveState())
    controller.parameters = parameters(inputVolume=s.volume, segmentationNode=s.segmentation,
                                       paintedSegmentId=s.paintedId, useEditorMasking=False)
    controller.run()
    runToEnd(controller)
    resultId = controller.lastRun.resultId
    assert segmentation.GetSegment(resultId) is not None
    assert history.RestorePreviousState()  # one Undo
    assert segmentation.GetSegment(resultId) is None and segmentation.GetSegment(stroke) is not None


def test_the_table_shown_is_that_of_the_selected_segmentation():
    """Another segmentation selected (or a scene reloaded): its own table, or none, not the one shown before."""
    s = editorScene()
    logic, view = SceneLogic(runResult(), existingResultId="result"), FakeView()
    controller = RunController(logic, view)
    controller.watchSegments(s.segmentation)
    assert view.resultsTable == "results table"
    logic.existingResultId = None  # the other segmentation has no run, so no table
    controller.watchSegments(s.otherSegmentation)
    assert view.resultsTable is None
    controller.cleanup()


def test_the_buttons_follow_the_segments_of_the_watched_segmentation():
    s = editorScene()
    view = FakeView()
    controller = RunController(SceneLogic(runResult()), view)
    controller.parameters = parameters(inputVolume=s.volume, segmentationNode=s.segmentation,
                                       paintedSegmentId=s.paintedId)
    segmentation = s.segmentation.GetSegmentation()
    controller.watchSegments(s.segmentation)

    resultId = segmentation.AddEmptySegment("", resultSegmentName())  # as the module writes it: tagged
    segmentation.GetSegment(resultId).SetTag(RESULT_TAG, RESULT_TAG_VALUE)
    segmentation.GetSegment(resultId).SetTag(WRITTEN_NAME_TAG, resultSegmentName())
    assert view.buttons.repropagate and view.buttons.exportNifti
    segmentation.GetSegment(resultId).SetName("Tumour v1 (kept)")  # renamed: the reader's own, not the result
    assert not view.buttons.repropagate and not view.buttons.exportNifti
    segmentation.GetSegment(resultId).SetName(resultSegmentName())
    assert view.buttons.repropagate
    segmentation.RemoveSegment(resultId)  # deleted in the Segment Editor
    assert not view.buttons.repropagate and not view.buttons.exportNifti and view.buttons.apply

    # Another segmentation selected: only its segments count; none after cleanup (the panel destroyed).
    controller.watchSegments(s.otherSegmentation)
    view.buttons = None
    segmentation.AddEmptySegment("", "Tumour v2")
    assert view.buttons is None
    s.otherSegmentation.GetSegmentation().AddEmptySegment("", "Liver")
    assert view.buttons is not None
    controller.cleanup()
    view.buttons = None
    s.otherSegmentation.GetSegmentation().AddEmptySegment("", "Spleen")
    assert view.buttons is None


def test_export_labelmap_without_a_result_segment_says_why_and_turns_the_buttons_off():
    logic = FakeLogic(runResult(), existingResultId="result")
    controller = controllerWith(logic)
    assert controller.resultToExport() == "result" and not controller.view.errors
    logic.existingResultId = None  # deleted in the Segment Editor since the buttons were last set
    assert controller.resultToExport() is None
    message = ("Not exported: the selected segmentation holds no 'Tumour (propagated)' segment (it was deleted or "
               "renamed). Propagate again to export it; a segment you renamed to keep it is written with the whole "
               "segmentation ('Segmentation (.seg.nrrd)...') or by the Segmentations module's 'Export to files'.")
    assert controller.view.status[-1] == message and controller.view.errors == [message]
    assert not controller.view.buttons.exportNifti and not controller.view.buttons.repropagate


@pytest.mark.parametrize("change", ["other segmentation", "other volume", "result deleted"])
def test_the_status_list_and_jump_are_emptied_once_they_no_longer_describe_the_result_in_view(change):
    """They described a result that is no longer the selected one (or is gone): Jump went to it on another CT."""
    s = editorScene()
    logic, controller = watchedRun(s)
    assert controller.buttonState().jump and controller.view.review[0] and controller.view.status[-1]
    if change == "other segmentation":
        controller.parameters.segmentationNode = s.otherSegmentation
        controller.inputsChanged()
    elif change == "other volume":
        controller.parameters.inputVolume = s.otherVolume
        controller.inputsChanged()
    else:  # Undo, or deleted in the Segment Editor: the watched segmentation says so
        s.segmentation.GetSegmentation().RemoveSegment(controller.lastRun.resultId)
    assert controller.lastRun is None and not controller.view.buttons.jump
    assert controller.view.review == ([], "") and controller.view.status[-1] == "" and controller.view.runTime == ""
    controller.cleanup()


def test_a_renamed_result_keeps_the_status_list_and_jump():
    s = editorScene()
    logic, controller = watchedRun(s)
    segment = s.segmentation.GetSegmentation().GetSegment(controller.lastRun.resultId)
    segment.SetName("Tumour v1 (kept)")
    controller.inputsChanged()
    assert controller.lastRun is not None and controller.view.buttons.jump and controller.view.review[0]
    controller.cleanup()


def test_an_undo_that_brings_an_earlier_run_s_result_back_empties_the_status_list_and_jump():
    """A run that replaced a result keeps its segment ID: after an Undo the panel still described the undone run."""
    from GastricPropagateLib.corrections import WRITTEN_SLICES_TAG

    s = editorScene()
    logic, controller = watchedRun(s)
    segment = s.segmentation.GetSegmentation().GetSegment(controller.lastRun.resultId)
    segment.SetTag(WRITTEN_SLICES_TAG, "10,4,4;3:0000abcd")  # the earlier run's record, back with its voxels
    controller.refreshButtons()  # as the Undo's segment events do
    assert controller.lastRun is None and controller.view.review == ([], "") and not controller.view.buttons.jump
    controller.cleanup()


def test_a_result_deleted_during_the_next_run_leaves_that_run_s_failure_said():
    s = editorScene()
    logic, controller = watchedRun(s)
    logic.outcome = RuntimeError("the engine failed")
    controller.run()
    s.segmentation.GetSegmentation().RemoveSegment(controller.lastRun.resultId)  # while the run goes on
    runToEnd(controller)
    assert controller.view.status[-1].startswith("Failed") and controller.lastRun is None
    controller.cleanup()
