"""What a run writes, read back on the Slicer side: its progress lines while it runs, its error message, and at
the end its mask and report (``RunResult``). The formats are the protocol's (``gastric_propagate.protocol``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gastric_propagate.protocol import Report, parse_progress_line

from .i18n import _

if TYPE_CHECKING:
    from gastric_propagate.data.mask_boxes import Grid  # SimpleITK: imported when a result is read, not with Slicer

__all__ = [
    "Progress",
    "RunResult",
    "newLines",
    "parseProgressLine",
    "readRunResult",
    "runResultFromReport",
    "stderrMessage",
]


@dataclass(frozen=True)
class Progress:
    """The child's last progress line: stage name (``protocol.STAGES``) and (done, total) within that stage."""

    stage: str = ""
    done: int = 0
    total: int = 0


def parseProgressLine(line: str) -> Progress | None:
    """A ``PROGRESS stage=... done=... total=...`` line as a Progress, or None for any other line."""
    parsed = parse_progress_line(line)
    return None if parsed is None else Progress(*parsed)


def newLines(path: Path, offset: int) -> tuple[list[str], int]:
    """The complete lines written to ``path`` after ``offset``, and the offset after them."""
    with open(path, "rb") as stream:
        stream.seek(offset)
        data = stream.read()
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset  # no complete line yet
    return data[: end + 1].decode("utf-8", errors="replace").splitlines(), offset + end + 1


#: How much of the end of a child's stderr is read for its message: its error line is the last thing it prints, and a
#: child that flooded stderr must not make the panel read hundreds of MB on Slicer's main thread.
STDERR_TAIL_BYTES = 64 * 1024


def stderrMessage(path: Path) -> str:
    """The child's last 'error: ' line on stderr, else its last stderr lines (of its last ``STDERR_TAIL_BYTES``)."""
    try:
        with open(path, "rb") as stream:
            stream.seek(max(0, stream.seek(0, 2) - STDERR_TAIL_BYTES))
            text = stream.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    errors = [line[len("error: "):] for line in text.splitlines() if line.startswith("error: ")]
    if errors:
        return errors[-1]
    return "\n".join(text.strip().splitlines()[-15:])


@dataclass
class RunResult:
    """What the child process produced, read back from its files: the mask on the volume's (k, j, i) grid and the
    run's report (``protocol.Report``, torch-free), whose fields the panel reads through the properties below."""

    mask: np.ndarray
    report: Report = field(default_factory=Report)

    @property
    def anchor_slices(self) -> list[int]:
        """The painted slices, kept as drawn."""
        return self.report.painted_slices

    @property
    def slice_confidence(self) -> dict[int, float]:
        return self.report.slice_confidence

    @property
    def slices_to_review(self) -> list[int]:
        """Non-painted slices the engine asks the reader to check: low confidence, cut back after a leak, or found
        only by the proposer's other orientations."""
        return self.report.slices_to_review

    @property
    def review_reasons(self) -> dict[int, list[str]]:
        """Each slice to review -> why: "low_confidence", "cut_back", "found_when_turned"."""
        return self.report.review_reasons

    @property
    def advice(self) -> list[dict]:
        """What the reader should see before trusting the result: "kind", English "sentence", its figures."""
        return self.report.advice

    @property
    def seconds(self) -> float:
        return self.report.seconds

    @property
    def device(self) -> str:
        return self.report.device

    def slice_range(self) -> tuple[int, int] | None:
        """First and last K index of the result, or None when it is empty."""
        ks = np.flatnonzero(np.asarray(self.mask).reshape(len(self.mask), -1).any(axis=1))
        return (int(ks[0]), int(ks[-1])) if len(ks) else None

    def least_confident_slices(self, count: int) -> list[int]:
        """The ``count`` visited non-painted slices with the lowest confidence, least confident first."""
        candidates = sorted((c, k) for k, c in self.slice_confidence.items() if k not in self.anchor_slices)
        return [k for _, k in candidates[:count]]


def runResultFromReport(report: dict, mask: np.ndarray) -> RunResult:
    """A RunResult from the engine's JSON report (``protocol.Report``) and its (k, j, i) mask."""
    return RunResult(mask=(np.asarray(mask) > 0).astype(np.uint8), report=Report.from_json(report))


def readRunResult(reportPath: Path, maskPath: Path, grid: Grid) -> RunResult:
    """The RunResult of a finished run from its JSON report and its mask file (the whole ``grid``, or a box of it)."""
    import SimpleITK as sitk

    from gastric_propagate.data.mask_boxes import on_grid

    report = json.loads(reportPath.read_text(encoding="utf-8"))
    written = sitk.ReadImage(str(maskPath))
    try:
        mask = on_grid(written, grid)
    except ValueError as error:
        raise RuntimeError(_("The engine's mask {path} is not on the volume's grid ({error}).").format(
            path=maskPath, error=error)) from None
    return runResultFromReport(report, mask)
