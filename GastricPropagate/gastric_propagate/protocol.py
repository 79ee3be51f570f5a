"""The contract between the engine's child process and its parent (the Slicer module, a batch script).

The parent starts ``python -m gastric_propagate.cli segment ... --progress`` (or the warm worker ``... serve``),
reads the child's progress lines on stdout, its exit code (or, from the worker, the code in its RESULT line) and
the JSON report it writes (``Report``). Everything both sides must agree on is defined here, once; this module
imports nothing but the standard library, so Slicer's own process can use it without torch.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

# ---------------------------------------------------------------------------------------------- exit codes

#: The command line's exit codes, also the ``code`` of the worker's RESULT lines (which never uses 130 / 143).
EXIT_OK = 0
EXIT_FAILED = 1  # anything else went wrong (the message or the last stderr lines say what)
EXIT_BAD_INPUT = 2  # the input, an option or an output path was refused; the message says what to do
EXIT_WEIGHTS = 3  # the network weights cannot be used
EXIT_CANCELLED = 130  # Ctrl-C, or the parent cancelled
EXIT_TERMINATED = 143  # SIGTERM

#: Set to "1" by a parent whose Cancel kills the process it started: ``segment`` and ``serve`` then end themselves when
#: that process has ended (``parent_watch``), also where it was a launcher that started them as its own child.
EXIT_WITH_PARENT_ENV = "GASTRIC_PROPAGATE_EXIT_WITH_PARENT"
#: The process id of the parent that set ``EXIT_WITH_PARENT_ENV``: a child whose parent is process 1 was orphaned before
#: its watch began, unless process 1 is the parent that started it (a batch script run as a container's first process).
PARENT_PID_ENV = "GASTRIC_PROPAGATE_PARENT_PID"

# ---------------------------------------------------------------------------------------------- progress

#: The progress stages, in the order a run reports them: loading the networks, reading the files, propagating
#: slice by slice, refining, writing the outputs.
STAGES = ("load", "read", "proposer", "refiner", "write")
STAGE_LOAD, STAGE_READ, STAGE_PROPOSER, STAGE_REFINER, STAGE_WRITE = STAGES

PROGRESS_PREFIX = "PROGRESS "
_PROGRESS_LINE = re.compile(r"^PROGRESS stage=(?P<stage>[A-Za-z_]+) done=(?P<done>\d+) total=(?P<total>\d+)\s*$")


def progress_line(stage: str, done: int, total: int) -> str:
    """The line (without its newline) the child prints for ``done`` of ``total`` steps of ``stage``."""
    return f"{PROGRESS_PREFIX}stage={stage} done={int(done)} total={int(total)}"


def parse_progress_line(line: str) -> tuple[str, int, int] | None:
    """(stage, done, total) of a progress line, or None for any other line."""
    match = _PROGRESS_LINE.match(line.strip())
    if match is None:
        return None
    return match["stage"], int(match["done"]), int(match["total"])


# ---------------------------------------------------------------------------------------------- the warm worker

#: Prefixes of the worker's lines: READY once the weights are loaded, RESULT after each request (JSON follows).
READY_PREFIX, RESULT_PREFIX = "READY ", "RESULT "

#: How often the module's timer reads a running child's lines (ms): a result reaches the scene up to this long after
#: the child wrote it (the benchmark's click-to-segment times include that wait). Each read only looks at new lines.
POLL_INTERVAL_MS = 20

# ---------------------------------------------------------------------------------------------- manual time

#: Manual effort the panel shows beside each run and the report states, as the source study measured it
#: (docs/method.md; not measured here): a full 3D outline of a gastric tumour, and painting the one slice this needs.
MANUAL_FULL_OUTLINE_SECONDS = 7 * 60
MANUAL_ONE_SLICE_SECONDS = 40


# ---------------------------------------------------------------------------------------------- the report


def _manual_estimate() -> dict[str, int]:
    return {"full_outline": MANUAL_FULL_OUTLINE_SECONDS, "one_slice": MANUAL_ONE_SLICE_SECONDS}


@dataclass
class Report:
    """The JSON report of one run (``segment --report``, the worker's "report"), written by the engine
    (``file_segmentation.build_report``) and read back by the parent (``to_json`` / ``from_json``).

    Slice indices are the volume's K; the keys of ``slice_confidence`` and ``review_reasons`` are ints here and
    strings in JSON. The fields are in the order the JSON object lists them; ``weights``, ``image``, ``annotation``
    and ``output`` are left out of it when None. docs/cli.md describes each field.
    """

    version: str = ""
    volume_ml: float = 0.0
    slices: dict[str, int] | None = None  # {"first", "last", "count"} of the result; None when it is empty
    painted_slices: list[int] = field(default_factory=list)
    seconds: float = 0.0
    device: str = ""
    timings_seconds: dict[str, float] = field(default_factory=dict)
    manual_estimate_seconds: dict[str, int] = field(default_factory=_manual_estimate)
    slice_confidence: dict[int, float] = field(default_factory=dict)
    least_confident_slices: list[int] = field(default_factory=list)
    slices_to_review: list[int] = field(default_factory=list)
    review_reasons: dict[int, list[str]] = field(default_factory=dict)  # each of slices_to_review -> why
    stop_reasons: dict[str, str] = field(default_factory=dict)
    advice: list[dict] = field(default_factory=list)  # kind, English sentence and the figures it names, each
    consensus: bool = False
    voxels: int = 0
    options: dict | None = None  # the run's PropagationOptions, each field by name (None: not recorded)
    weights: dict[str, str] | None = None
    image: str | None = None
    annotation: str | None = None
    output: str | None = None

    def to_json(self) -> dict:
        """The report as a JSON-ready dict."""
        data = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if value is None and item.name in _LEFT_OUT_WHEN_NONE:
                continue
            data[item.name] = ({str(k): v for k, v in value.items()} if item.name in _KEYED_BY_SLICE else value)
        return data

    @classmethod
    def from_json(cls, data: dict) -> Report:
        """A report read back from its JSON object; a field it lacks takes its default."""
        values = {item.name: data[item.name] for item in dataclasses.fields(cls) if item.name in data}
        for name in ("painted_slices", "least_confident_slices"):
            values[name] = [int(k) for k in values.get(name, [])]
        values["slices_to_review"] = sorted(int(k) for k in values.get("slices_to_review", []))
        values["slice_confidence"] = {int(k): float(v) for k, v in values.get("slice_confidence", {}).items()}
        values["review_reasons"] = {int(k): [str(reason) for reason in v]
                                    for k, v in values.get("review_reasons", {}).items()}
        values["timings_seconds"] = {str(k): float(v) for k, v in values.get("timings_seconds", {}).items()}
        values["stop_reasons"] = dict(values.get("stop_reasons", {}))
        values["advice"] = [dict(item) for item in values.get("advice", [])]
        values["seconds"] = float(values.get("seconds", 0.0))
        values["device"] = str(values.get("device", ""))
        return cls(**values)


_KEYED_BY_SLICE = ("slice_confidence", "review_reasons")  # JSON keys are strings
_LEFT_OUT_WHEN_NONE = ("options", "weights", "image", "annotation", "output")
