"""The contract between the engine's child process and its parent (the Slicer module, a batch script).

The parent starts ``python -m gastric_propagate.cli segment ... --progress`` (or the warm worker ``... serve``),
reads the child's progress lines on stdout, its exit code (or, from the worker, the code in its RESULT line) and
the JSON report it writes. Everything both sides must agree on is defined here, once; this module imports nothing
but the standard library, so Slicer's own process can use it without torch.
"""

from __future__ import annotations

import re

# ---------------------------------------------------------------------------------------------- exit codes

#: The command line's exit codes, also the ``code`` of the worker's RESULT lines (which never uses 130 / 143).
EXIT_OK = 0
EXIT_FAILED = 1  # anything else went wrong (the message or the last stderr lines say what)
EXIT_BAD_INPUT = 2  # the input, an option or an output path was refused; the message says what to do
EXIT_WEIGHTS = 3  # the network weights cannot be used
EXIT_CANCELLED = 130  # Ctrl-C, or the parent cancelled
EXIT_TERMINATED = 143  # SIGTERM

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

# ---------------------------------------------------------------------------------------------- manual time

#: Manual effort the panel shows beside each run and the report states, as the source study measured it
#: (docs/method.md; not measured here): a full 3D outline of a gastric tumour, and painting the one slice this needs.
MANUAL_FULL_OUTLINE_SECONDS = 7 * 60
MANUAL_ONE_SLICE_SECONDS = 40
