"""``gastric-propagate serve``: a warm worker that loads torch and the weights once and serves segment requests;
and ``gastric-propagate segment``, the same run once (``segment_main``), which prints the same summary line.

Start-up (the interpreter, importing torch and the engine, loading the weights) takes most of a whole ``segment``
run on a CPU (``gastric-propagate benchmark --profile``). The worker pays it once, then serves runs until its input
closes, it has been idle for a while, or its parent ends it.

The protocol, one line each way, UTF-8:

    worker -> parent   PROGRESS stage=load done=0 total=1, then done=1 once the weights are loaded, then
                       READY {"version": ..., "device": ..., "pid": ...}
    parent -> worker   one JSON object per line, a request:
                       {"id": any JSON value (echoed back), "image": path, "annotation": path, "output": path,
                        "report": path or null, "overwrite": false, "crop_output": false,
                        "options": {PropagationOptions field: value}}
    worker -> parent   the request's progress, as the segment command's --progress prints it
                       (PROGRESS stage=<read|proposer|refiner|write> done=<n> total=<n>), then one line
                       RESULT {"id": ..., "code": ..., "message": ..., "served": ..., "seconds": ..., "pid": ...}
    parent -> worker   or {"id": any JSON value, "preload": path}: read that CT now, before any run needs it
    worker -> parent   RESULT as above (no progress lines), the message "read <path>"

A request's CT is kept in memory after the run (``LastImage``): a later request naming the same file, unchanged
since (the Slicer module sends one file per version of a volume), is served without reading it again, and the vote's
registration walks that the earlier runs made on it are served again where nothing they depended on changed (a
re-propagation after a correction walks only from the corrected slices). A preload request puts a CT there ahead
of its first run: the Slicer module sends the selected volume when the panel opens or the volume is chosen, while
the reader paints, so that the first Propagate on it sends only the painted slices.

``code`` has the segment command's exit-code meanings (``protocol.py``): 0 success (the message is the line segment
prints, and any 'note:' lines), 2 bad input (a request that is not JSON, misses a field or names an unknown option
included), 3 unusable weights, 1 any other failure; the message says what went wrong. None of them ends the worker.
``seconds`` is the whole request's time in the worker (read, engine, write), ``served`` how many requests this
process has answered, this one included. The worker's own exit codes are the command line's: 0 when its input closed
or it was idle for ``--idle-timeout`` seconds, 2 or 3 when the device or the weights cannot be used (before READY),
130 / 143 when interrupted or terminated (a run in progress then writes nothing). Its outputs are written as the
segment command writes them (``data.outputs.OutputBatch``): whole or not at all, whatever happens to the worker
(killed outright, it may leave a ``.partial`` folder beside them).
"""

from __future__ import annotations

import io
import json
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, TextIO

from gastric_propagate import __version__
from gastric_propagate.errors import InputError, WeightsError
from gastric_propagate.inference.options import PropagationOptions, declared_options
from gastric_propagate.protocol import (EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, EXIT_WEIGHTS, READY_PREFIX,
                                        RESULT_PREFIX, STAGE_LOAD, progress_line)

if TYPE_CHECKING:
    from gastric_propagate.inference.pipeline import Segmenter

#: How long the worker waits for a request before it ends itself (seconds).
DEFAULT_IDLE_SECONDS = 600.0
_FIELDS = [option.name for option in declared_options()]
_SWITCHES = {option.name for option in declared_options() if option.kind == "switch"}
_REQUEST_KEYS = {"id", "image", "annotation", "output", "report", "overwrite", "crop_output", "options"}


def options_from_request(options: dict | None) -> PropagationOptions:
    """A request's "options" object as PropagationOptions: only its fields, switches given as true / false."""
    options = {} if options is None else options
    if not isinstance(options, dict):
        raise InputError(f"The request's options must be a JSON object of PropagationOptions fields, not {options!r}.")
    unknown = sorted(set(options) - set(_FIELDS))
    if unknown:
        raise InputError(f"Unknown option(s) {', '.join(unknown)}: use {', '.join(_FIELDS)}.")
    for name in _SWITCHES & set(options):
        if not isinstance(options[name], bool):
            raise InputError(f"Option {name}: {options[name]!r} is not true or false.")
    return PropagationOptions(**options)


class LastImage:
    """The CT of the last request, kept while its file is unchanged: a correction loop sends the same CT again and
    again, and reading it is a tenth of a warm run. The file is known by its path and its identity on disk (device,
    inode, size, modification time): a file written again, or another file at that path, is read again."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._image = None

    def read(self, path: str | Path):
        """The CT (a SimpleITK image) and its name: the file's identity on disk, which changes with its voxels."""
        from gastric_propagate.data.volumes import read_volume

        key = _file_identity(path)
        if key is None or key != self._key:
            self._key, self._image = None, None  # the old CT's memory goes before the new one is read
            image = read_volume(path, "image")
            self._key, self._image = key, image
        return self._image, self._key


def _file_identity(path: str | Path) -> tuple | None:
    try:
        status = os.stat(path)
    except (OSError, ValueError):  # ValueError: a null character in the path
        return None  # read_volume says what is wrong with it
    # The change time too: a file rewritten in place at the same size within the file system's time resolution, or
    # given its old modification time back (cp -p), keeps the other fields.
    return (os.path.abspath(path), status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns,
            status.st_ctime_ns)


def _decoded(line: str) -> object:
    """The line's JSON value; InputError when it is none."""
    try:
        return json.loads(line)
    except (ValueError, RecursionError) as error:  # RecursionError: nested deeper than Python's parser goes
        raise InputError(f"The request is not one JSON object on one line ({error}).") from None


def _request(request: object) -> dict:
    """The decoded line as a request, checked; InputError saying what is wrong."""
    if not isinstance(request, dict):
        raise InputError("The request is not a JSON object.")
    if "preload" in request:
        if set(request) - {"id", "preload"} or not isinstance(request["preload"], str):
            raise InputError("A preload request holds a CT's path (preload) and an id, nothing else.")
        return request
    unknown = sorted(set(request) - _REQUEST_KEYS)
    missing = [key for key in ("image", "annotation", "output") if not isinstance(request.get(key), str)]
    if unknown or missing:
        problem = f"unknown field(s) {', '.join(unknown)}" if unknown else f"no {', '.join(missing)} path"
        raise InputError(f"The request has {problem}: give image, annotation and output paths (and report, "
                         "overwrite, crop_output, options).")
    if request.get("report") is not None and not isinstance(request["report"], str):
        raise InputError("The request's report must be a path or null.")
    for switch in ("overwrite", "crop_output"):
        if not isinstance(request.get(switch, False), bool):
            raise InputError(f"The request's {switch} must be true or false.")
    return request


def _lines(stream) -> queue.Queue:
    """The stream's lines, read by a daemon thread into a queue; None once it is closed. A binary stream's lines are
    decoded as UTF-8 here, one by one: a line that is not UTF-8 is queued as the InputError it is, and the lines after
    it are still read (a text stream would end at the first bad byte)."""
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        try:
            for line in stream:
                if isinstance(line, bytes):
                    try:
                        line = line.decode("utf-8")
                    except UnicodeDecodeError as error:
                        line = InputError(f"The request is not UTF-8 text ({error}).")
                lines.put(line)
        finally:
            lines.put(None)

    threading.Thread(target=read, name="gastric-propagate requests", daemon=True).start()
    return lines


def segment_main(*, image: str, annotation: str, output: str, report: str | None, overwrite: bool, progress: bool,
                 options: PropagationOptions, load_segmenter: Callable[[], Segmenter], started: float,
                 crop_output: bool = False, label: int | None = None) -> int:
    """``gastric-propagate segment``: loads the weights (``load_segmenter``), segments the files once and prints the
    summary, with the whole run's seconds since ``started`` (``time.perf_counter()``); returns 0. ``progress``
    prints the progress lines, the load stage's included."""
    from gastric_propagate.file_segmentation import segment_files

    stages = _print_progress if progress else None
    segmenter = _load(load_segmenter, stages)
    result = segment_files(image, annotation, output, report_path=report, options=options, segmenter=segmenter,
                           overwrite=overwrite, stages=stages, crop_output=crop_output, label=label)
    try:
        print(_summary(result, output, whole_seconds=time.perf_counter() - started), flush=True)
    except BrokenPipeError:  # the reader of the summary went away (`| head`): the output is written all the same
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more reaches the closed pipe
    return 0


def serve_main(*, load_segmenter: Callable[[], Segmenter], idle_seconds: float) -> int:
    """``gastric-propagate serve``: loads the weights once, between the load stage's progress lines, then serves."""
    replies = protocol_channel()

    def loading(stage: str, done: int, total: int) -> None:
        replies.write(progress_line(stage, done, total) + "\n")
        replies.flush()

    return serve(_load(load_segmenter, loading), replies=replies, idle_seconds=idle_seconds)


def protocol_channel() -> TextIO:
    """The worker's own stdout for its protocol lines, with file descriptor 1 (``sys.stdout``, and C and C++ code
    writing to it) pointed at stderr from then on: a library's print without a newline would otherwise be glued to
    the start of the next RESULT line, which the module would not recognise (it would wait until the worker went
    idle, then run the case again)."""
    sys.stdout.flush()
    channel = io.TextIOWrapper(os.fdopen(os.dup(sys.stdout.fileno()), "wb"), encoding="utf-8", line_buffering=True)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return channel


def _load(load_segmenter: Callable[[], Segmenter], stages: Callable[[str, int, int], None] | None) -> Segmenter:
    if stages is not None:
        stages(STAGE_LOAD, 0, 1)
    segmenter = load_segmenter()
    if stages is not None:
        stages(STAGE_LOAD, 1, 1)
    return segmenter


def _print_progress(stage: str, done: int, total: int) -> None:
    """One progress line for a parent process (the Slicer module reads them); flushed at once."""
    print(progress_line(stage, done, total), flush=True)


def serve(segmenter, requests: TextIO | BinaryIO | None = None, replies: TextIO | None = None, *,
          idle_seconds: float = DEFAULT_IDLE_SECONDS, log: Callable[[str], None] | None = None) -> int:
    """Answers the requests read from ``requests`` (stdin) on ``replies`` (stdout) with ``segmenter`` (loaded
    once, by the caller) until ``requests`` closes or none came for ``idle_seconds``; returns 0 then.

    Interruptions (KeyboardInterrupt, the command line's SIGTERM) are not caught: the run in progress writes
    nothing and the worker ends.
    """
    from gastric_propagate.file_segmentation import segment_files

    requests = sys.stdin.buffer if requests is None else requests  # bytes: decoded line by line (_lines)
    replies = sys.stdout if replies is None else replies
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))

    def send(line: str) -> None:
        replies.write(line + "\n")
        replies.flush()

    def progress(stage: str, done: int, total: int) -> None:
        send(progress_line(stage, done, total))

    send(READY_PREFIX + json.dumps({"version": __version__, "device": segmenter.device_label, "pid": os.getpid()}))
    lines, served, last_image = _lines(requests), 0, LastImage()
    while True:
        try:
            line = lines.get(timeout=min(idle_seconds, threading.TIMEOUT_MAX))  # a larger one overflows the wait
        except queue.Empty:
            log(f"gastric-propagate serve: no request for {idle_seconds:g} s; ending")
            return 0
        if line is None:
            return 0
        if isinstance(line, str) and not line.strip():
            continue
        started, request_id = time.perf_counter(), None
        try:
            if isinstance(line, InputError):
                raise line
            decoded = _decoded(line)
            # Taken before the checks: a refused request's RESULT carries its id too.
            request_id = decoded.get("id") if isinstance(decoded, dict) else None
            request = _request(decoded)
            if "preload" in request:
                last_image.read(request["preload"])
                code, message = EXIT_OK, f"read {request['preload']}"
            else:
                report = segment_files(request["image"], request["annotation"], request["output"],
                                       report_path=request.get("report"),
                                       options=options_from_request(request.get("options")), segmenter=segmenter,
                                       overwrite=request.get("overwrite", False), stages=progress,
                                       read_image=last_image.read, crop_output=request.get("crop_output", False))
                code, message = EXIT_OK, _summary(report, request["output"])
        except InputError as error:
            code, message = EXIT_BAD_INPUT, str(error)
        except WeightsError as error:
            code, message = EXIT_WEIGHTS, str(error)
        except OSError as error:  # as the segment command words it
            where = f" {error.filename}" if error.filename else ""
            code, message = EXIT_BAD_INPUT, (f"cannot read or write{where}: {error.strerror or error}. Check the "
                                             "path, that the folder is writable and that the disk has free space, "
                                             "then run again.")
        except Exception as error:  # noqa: BLE001 - a failed request must not end the worker
            code, message = EXIT_FAILED, f"{type(error).__name__}: {error}"
        served += 1
        send(RESULT_PREFIX + json.dumps({"id": request_id, "code": code, "message": message, "served": served,
                                  "seconds": round(time.perf_counter() - started, 4), "pid": os.getpid()}))


def _summary(report: dict, output: str, whole_seconds: float | None = None) -> str:
    """The line the segment command prints for a run, and its 'note:' lines; the segment command adds the whole
    run's seconds (with reading, loading the weights and writing), which a served request does not have."""
    slices = report["slices"]
    where = f"on slices {slices['first']}-{slices['last']}" if slices else "(no tumour voxels)"
    seconds = f"engine {report['seconds']:.2f} s on {report['device']}"
    if whole_seconds is not None:
        seconds += f", whole run {whole_seconds:.2f} s"
    lines = [f"tumour: {report['volume_ml']:.1f} mL {where} ({seconds}) -> {output}"]
    return "\n".join(lines + [f"note: {advice['sentence']}" for advice in report["advice"]])
