"""``gastric-propagate serve``: the warm worker's line protocol, in this process and as the real child process."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import SPACING, make_volume
from gastric_propagate.data.mask_boxes import Grid, on_grid, write_box
from gastric_propagate.file_segmentation import segment_files
from gastric_propagate.inference.options import PropagationOptions
from gastric_propagate.worker import options_from_request, serve
from gastric_propagate.errors import InputError

ENGINE = os.path.dirname(os.path.dirname(os.path.abspath(sys.modules["gastric_propagate"].__file__)))


@pytest.fixture
def case(tmp_path):
    image, label = make_volume()
    annotation = np.zeros_like(label)
    annotation[20] = label[20]
    paths = {}
    for name, array in (("ct", image), ("painted", annotation)):
        written = sitk.GetImageFromArray(array)
        written.SetSpacing(SPACING)
        paths[name] = tmp_path / f"{name}.nrrd"
        sitk.WriteImage(written, str(paths[name]))
    return paths


def request(case, output, **extra) -> str:
    return json.dumps({"image": str(case["ct"]), "annotation": str(case["painted"]), "output": str(output), **extra})


def replies(text: str) -> tuple[list[str], list[dict]]:
    lines = text.splitlines()
    return lines, [json.loads(line[len("RESULT "):]) for line in lines if line.startswith("RESULT ")]


def test_a_request_writes_the_mask_and_report_and_answers_with_progress_and_one_result(case, tmp_path,
                                                                                        oracle_segmenter):
    out = io.StringIO()
    line = request(case, tmp_path / "out.nrrd", id="first", report=str(tmp_path / "report.json"),
                   options={"max_slice": 22})
    assert serve(oracle_segmenter, io.StringIO(line + "\n"), out) == 0  # input closed: the worker ends, code 0
    lines, results = replies(out.getvalue())
    assert lines[0].startswith("READY ") and json.loads(lines[0][6:])["pid"] == os.getpid()
    assert results == [dict(results[0], id="first", code=0, served=1)]
    stages = [line.split()[1] for line in lines if line.startswith("PROGRESS ")]
    assert stages[0] == "stage=read" and "stage=proposer" in stages and stages[-1] == "stage=write"
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out.nrrd")))
    report = json.loads((tmp_path / "report.json").read_text())
    assert mask[20].any() and not mask[23:].any()  # the request's options were used: max_slice 22
    assert results[0]["message"].startswith(f"tumour: {report['volume_ml']:.1f} mL")
    expected = segment_files(case["ct"], case["painted"], tmp_path / "direct.nrrd", segmenter=oracle_segmenter,
                             options=PropagationOptions(max_slice=22))
    assert np.array_equal(mask, sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "direct.nrrd"))))
    assert report["voxels"] == expected["voxels"]


def test_a_painted_box_and_a_cropped_output_give_the_same_tumour_as_the_whole_grid(case, tmp_path, oracle_segmenter):
    """How the module sends its painted slice and asks for the mask: boxes on the CT's grid (data.mask_boxes)."""
    grid = Grid.of(sitk.ReadImage(str(case["ct"])))
    write_box(sitk.GetArrayFromImage(sitk.ReadImage(str(case["painted"]))), grid, tmp_path / "box.nrrd")
    assert sitk.ReadImage(str(tmp_path / "box.nrrd")).GetSize()[2] == 1, "the painted slice alone"
    out = io.StringIO()
    line = request(dict(case, painted=tmp_path / "box.nrrd"), tmp_path / "out.nrrd", crop_output=True)
    assert serve(oracle_segmenter, io.StringIO(line + "\n"), out) == 0
    assert [result["code"] for result in replies(out.getvalue())[1]] == [0]
    segment_files(case["ct"], case["painted"], tmp_path / "whole.nrrd", segmenter=oracle_segmenter)
    whole = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "whole.nrrd")))
    written = sitk.ReadImage(str(tmp_path / "out.nrrd"))
    assert np.prod(written.GetSize()) < whole.size / 4 and whole.any()
    assert np.array_equal(on_grid(written, grid), whole)


BAD_REQUESTS = {  # name -> (the request line, from the case and an output path; words of the answer)
    "not JSON": (lambda case, output: "not json", "not one JSON object"),
    "not an object": (lambda case, output: "[1, 2]", "not a JSON object"),
    "paths missing": (lambda case, output: '{"image": "a.nrrd"}', "no annotation, output path"),
    "unknown option": (lambda case, output: request(case, output, options={"colour": 1}), "Unknown option(s) colour"),
    "switch not a bool": (lambda case, output: request(case, output, options={"keyframes": "yes"}),
                          "keyframes: 'yes' is not true or false"),
    "value out of range": (lambda case, output: request(case, output, options={"vote_reach": 0}), "vote_reach"),
    "image missing": (lambda case, output: request(dict(case, ct=output.parent / "missing.nrrd"), output),
                      "missing.nrrd"),
    "output exists": (lambda case, output: request(case, output), "--overwrite"),
    "crop_output not a bool": (lambda case, output: request(case, output, crop_output="yes"),
                               "crop_output must be true or false"),
    "preload with more": (lambda case, output: json.dumps({"preload": str(case["ct"]), "output": str(output)}),
                          "holds a CT's path (preload) and an id, nothing else"),
    "preload not a path": (lambda case, output: json.dumps({"preload": 3}), "holds a CT's path"),
    "preload missing file": (lambda case, output: json.dumps({"preload": str(output.parent / "missing.nrrd")}),
                             "missing.nrrd"),
    "image with a null character": (lambda case, output: request(dict(case, ct=str(case["ct"]) + "\x00.nrrd"),
                                                                 output), "holds a null character"),
    "output with a null character": (lambda case, output: request(case, str(output) + "\x00"),
                                     "holds a null character"),
    "preload with a null character": (lambda case, output: json.dumps({"preload": str(case["ct"]) + "\x00"}),
                                      "holds a null character"),
    "preload not valid text": (lambda case, output: json.dumps({"preload": str(case["ct"]) + "\udc80"}),
                               "not valid text"),
}


@pytest.mark.parametrize("name", BAD_REQUESTS)
def test_a_bad_request_is_answered_with_the_bad_input_code_and_the_worker_goes_on(case, tmp_path, oracle_segmenter,
                                                                                  name):
    make, words = BAD_REQUESTS[name]
    output = tmp_path / "bad.nrrd"
    if name == "output exists":
        output.write_bytes(b"the user's earlier result")
    out = io.StringIO()
    good = request(case, tmp_path / "good.nrrd", id="good")
    assert serve(oracle_segmenter, io.StringIO(f"{make(case, output)}\n\n{good}\n"), out) == 0
    _, results = replies(out.getvalue())
    assert [(result["code"], result["served"]) for result in results] == [(2, 1), (0, 2)]
    assert words in results[0]["message"]
    assert (tmp_path / "good.nrrd").is_file()
    assert not output.is_file() or output.read_bytes() == b"the user's earlier result"


def test_options_from_request_takes_the_fields_of_propagation_options():
    assert options_from_request(None) == PropagationOptions()
    assert options_from_request({"keyframes": True, "min_slice": 3, "use_consensus": False}) == PropagationOptions(
        keyframes=True, min_slice=3, use_consensus=False)
    with pytest.raises(InputError, match="not true or false"):
        options_from_request({"use_refiner": 1})


def test_the_worker_ends_when_no_request_comes_within_the_idle_timeout(oracle_segmenter):
    read, write = os.pipe()  # an input that stays open: only the timeout ends the worker
    messages = []
    requests = os.fdopen(read, encoding="utf-8")
    try:
        assert serve(oracle_segmenter, requests, io.StringIO(), idle_seconds=0.2, log=messages.append) == 0
    finally:
        os.close(write)  # the worker's reading thread sees the end of its input and lets the file go
        threading.Thread(target=requests.close, daemon=True).start()
    assert messages and "no request for 0.2 s" in messages[0]


# ------------------------------------------------------------------------------- the real child process


class Worker:
    """``python -m gastric_propagate.cli serve`` with the bundled weights, as a parent runs it."""

    def __init__(self, *arguments: str, python: tuple[str, ...] = ("-m", "gastric_propagate.cli")) -> None:
        environment = dict(os.environ, PYTHONPATH=os.pathsep.join([ENGINE, os.environ.get("PYTHONPATH", "")]))
        self.process = subprocess.Popen([sys.executable, *python, "serve", "--device", "cpu",
                                         *arguments], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=environment)
        self.lines = []

    def read_until(self, prefix: str) -> str:
        timer = threading.Timer(300, self.process.kill)  # a hung worker fails the test instead of hanging it
        timer.start()
        try:
            for line in self.process.stdout:
                self.lines.append(line.rstrip("\n"))
                if line.startswith(prefix):
                    return line.rstrip("\n")
        finally:
            timer.cancel()
        raise AssertionError(f"the worker ended before {prefix!r}: {self.process.stderr.read()}")

    def send(self, line: str) -> dict:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return json.loads(self.read_until("RESULT ")[len("RESULT "):])

    def close(self) -> int:
        self.process.stdin.close()
        return self.process.wait(timeout=120)


@pytest.fixture
def worker():
    started = Worker()
    yield started
    if started.process.poll() is None:
        started.process.kill()
        started.process.wait()


def test_the_worker_process_loads_once_and_serves_requests_until_its_input_closes(case, tmp_path, worker,
                                                                                   bundled_segmenter):
    ready = json.loads(worker.read_until("READY ")[len("READY "):])
    assert worker.lines == ["PROGRESS stage=load done=0 total=1", "PROGRESS stage=load done=1 total=1",
                            worker.lines[-1]]
    first = worker.send(request(case, tmp_path / "one.nrrd", id=1, report=str(tmp_path / "one.json")))
    second = worker.send(request(case, tmp_path / "two.nrrd", id=2))
    bad = worker.send("{not json")
    third = worker.send(request(case, tmp_path / "three.nrrd", id=3, options={"use_consensus": False}))
    assert [(r["id"], r["code"], r["served"], r["pid"]) for r in (first, second, bad, third)] == [
        (1, 0, 1, ready["pid"]), (2, 0, 2, ready["pid"]), (None, 2, 3, ready["pid"]), (3, 0, 4, ready["pid"])]
    # The weights were loaded once: no load stage after READY.
    assert not [line for line in worker.lines[3:] if "stage=load" in line]
    assert worker.close() == 0
    masks = [sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / name))) for name in ("one.nrrd", "two.nrrd")]
    segment_files(case["ct"], case["painted"], tmp_path / "direct.nrrd", segmenter=bundled_segmenter)
    direct = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "direct.nrrd")))
    assert masks[0].any() and np.array_equal(masks[0], masks[1]) and np.array_equal(masks[0], direct)
    assert json.loads((tmp_path / "one.json").read_text())["voxels"] == int(direct.sum())


# A library that writes to stdout during a run, without a newline, from Python and from C (file descriptor 1).
CHATTY_LIBRARY = """
import os, sys
import gastric_propagate.file_segmentation as files
real = files.segment_files
def chatty(*args, **kwargs):
    sys.stdout.write("[lib] note: ")
    sys.stdout.flush()
    os.write(1, b"[C] note: ")
    return real(*args, **kwargs)
files.segment_files = chatty
from gastric_propagate.cli import run
sys.argv[0] = "gastric-propagate"
run()
"""


def test_text_a_library_writes_to_stdout_never_splices_into_a_protocol_line(case, tmp_path):
    """The module recognises a reply by its line's start: "[lib] note: RESULT {...}" was no reply, and the module
    waited for the worker to go idle, then ran the case again."""
    chatty = Worker(python=("-c", CHATTY_LIBRARY))
    try:
        chatty.read_until("READY ")
        result = chatty.send(request(case, tmp_path / "one.nrrd", id=7))
        assert result["id"] == 7 and result["code"] == 0
        assert not [line for line in chatty.lines if "note:" in line], "the library's text stays off the protocol"
        assert chatty.close() == 0
        assert "[lib] note: " in chatty.process.stderr.read(), "it is not lost: it goes to stderr"
    finally:
        if chatty.process.poll() is None:
            chatty.process.kill()
            chatty.process.wait()

@pytest.mark.parametrize("ending", ["SIGTERM", "SIGKILL"])
def test_a_worker_ended_during_a_run_leaves_no_output(case, tmp_path, worker, ending):
    worker.read_until("READY ")
    output = tmp_path / "out" / "result.nrrd"
    worker.process.stdin.write(request(case, output, report=str(tmp_path / "out" / "report.json")) + "\n")
    worker.process.stdin.flush()
    worker.read_until("PROGRESS stage=proposer")
    worker.process.send_signal(getattr(signal, ending))
    code = worker.process.wait(timeout=120)
    assert code == (143 if ending == "SIGTERM" else -signal.SIGKILL)
    assert not output.exists() and not (tmp_path / "out" / "report.json").exists()
    if ending == "SIGTERM":  # unwound: nothing staged is left either
        assert sorted(path.name for path in tmp_path.iterdir()) == ["ct.nrrd", "painted.nrrd"]


def test_a_device_the_worker_cannot_use_ends_it_with_the_bad_input_code():
    completed = subprocess.run([sys.executable, "-m", "gastric_propagate.cli", "serve", "--device", "tpu"],
                               capture_output=True, text=True, stdin=subprocess.DEVNULL,
                               env=dict(os.environ, PYTHONPATH=ENGINE))
    assert completed.returncode == 2 and "tpu" in completed.stderr


def test_a_second_request_on_the_same_unchanged_ct_is_served_without_reading_it_again(case, tmp_path,
                                                                                       oracle_segmenter, monkeypatch):
    from gastric_propagate.data import volumes

    reads = []
    real_read = volumes.read_volume
    monkeypatch.setattr(volumes, "read_volume", lambda path, what="image": reads.append(path) or real_read(path, what))
    lines = "".join(request(case, tmp_path / f"out{i}.nrrd", id=i) + "\n" for i in range(3))
    out = io.StringIO()
    assert serve(oracle_segmenter, io.StringIO(lines), out) == 0
    assert [result["code"] for result in replies(out.getvalue())[1]] == [0, 0, 0]
    assert reads == [str(case["ct"])]  # the CT once, for three requests
    masks = [sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / f"out{i}.nrrd"))) for i in range(3)]
    assert masks[0].any() and all(np.array_equal(masks[0], mask) for mask in masks[1:])


def test_the_kept_ct_is_read_again_when_its_file_was_written_again_or_another_file_is_named(case, tmp_path):
    from gastric_propagate.worker import LastImage

    last = LastImage()
    first, key = last.read(case["ct"])
    again, same_key = last.read(case["ct"])
    assert again is first and same_key == key
    changed = sitk.GetArrayFromImage(first)
    changed[:] = 7  # same size, same path: only the file's identity on disk tells it apart
    written = sitk.GetImageFromArray(changed)
    written.CopyInformation(first)
    sitk.WriteImage(written, str(case["ct"]))
    status = os.stat(case["ct"])  # the clock's tick may be coarser than this test: a later time, as a later write has
    os.utime(case["ct"], ns=(status.st_atime_ns, status.st_mtime_ns + 1_000_000_000))
    assert (sitk.GetArrayViewFromImage(last.read(case["ct"])[0]) == 7).all() and last.read(case["ct"])[1] != key
    other = tmp_path / "other.nrrd"
    sitk.WriteImage(first, str(other))
    assert np.array_equal(sitk.GetArrayViewFromImage(last.read(other)[0]), sitk.GetArrayViewFromImage(first))


def test_a_preloaded_ct_is_read_once_ahead_and_the_run_on_it_reads_it_no_more(case, tmp_path, oracle_segmenter,
                                                                              monkeypatch):
    """A preload request reads the CT before any run (the module sends the selected volume while the reader paints);
    the run that follows on the same unchanged file reads it no more and writes what a worker without it writes."""
    from gastric_propagate.data import volumes

    reads = []
    real_read = volumes.read_volume
    monkeypatch.setattr(volumes, "read_volume", lambda path, what="image": reads.append(path) or real_read(path, what))
    preload = json.dumps({"id": "ahead", "preload": str(case["ct"])})
    out = io.StringIO()
    assert serve(oracle_segmenter, io.StringIO(f"{preload}\n{request(case, tmp_path / 'out.nrrd', id='run')}\n"),
                 out) == 0
    lines, results = replies(out.getvalue())
    assert [(result["id"], result["code"], result["served"]) for result in results] == [("ahead", 0, 1), ("run", 0, 2)]
    assert results[0]["message"] == f"read {case['ct']}"
    assert lines[1].startswith("RESULT ")  # the preload has no progress lines: its RESULT follows READY
    assert reads == [str(case["ct"])]  # by the preload; the run's read served from memory
    segment_files(case["ct"], case["painted"], tmp_path / "direct.nrrd", segmenter=oracle_segmenter)
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out.nrrd"))),
                          sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "direct.nrrd"))))


def test_a_request_that_is_not_utf8_is_answered_as_bad_input_and_the_requests_after_it_are_served(case, tmp_path,
                                                                                                 oracle_segmenter):
    """stdin is read as bytes and decoded line by line: a text stream ended the worker at the first bad byte."""
    good = request(case, tmp_path / "good.nrrd", id="good")
    stream = io.BytesIO(b'{"id": 1, "preload": "ct\xff.nrrd"}\n' + good.encode() + b"\n")
    out = io.StringIO()
    assert serve(oracle_segmenter, stream, out) == 0
    _, results = replies(out.getvalue())
    assert [(result["id"], result["code"]) for result in results] == [(None, 2), ("good", 0)]
    assert "not UTF-8 text" in results[0]["message"] and (tmp_path / "good.nrrd").is_file()


def test_a_refused_request_s_result_carries_its_id(oracle_segmenter):
    nested = "[" * 100_000 + "]" * 100_000  # deeper than Python's parser goes: not a request, not a crash
    out = io.StringIO()
    assert serve(oracle_segmenter, io.StringIO(f'{{"id": 7, "image": "a"}}\n{nested}\n'), out) == 0
    _, results = replies(out.getvalue())
    assert [(result["id"], result["code"]) for result in results] == [(7, 2), (None, 2)]
    assert "no annotation, output path" in results[0]["message"]


def test_an_idle_timeout_beyond_what_a_wait_can_take_is_a_long_wait(oracle_segmenter):
    import threading

    read, write = os.pipe()  # the worker waits on an open input until it closes, 0.3 s later
    threading.Timer(0.3, os.close, (write,)).start()
    with os.fdopen(read, "rb") as requests:
        assert serve(oracle_segmenter, requests, io.StringIO(), idle_seconds=1e12) == 0


def test_the_kept_ct_is_read_again_when_its_file_was_rewritten_with_its_old_modification_time(case, tmp_path):
    """cp -p, or a rewrite at the same size within the file system's clock resolution: only the change time tells."""
    import time

    from gastric_propagate.worker import LastImage

    path = tmp_path / "ct.nrrd"
    first = sitk.GetImageFromArray(sitk.GetArrayFromImage(sitk.ReadImage(str(case["ct"]))))  # no header extras
    sitk.WriteImage(first, str(path), useCompression=False)  # raw voxels: the same size whatever they hold
    last = LastImage()
    last.read(path)
    status = os.stat(path)
    changed = sitk.GetArrayFromImage(first)
    changed[:] = 7
    written = sitk.GetImageFromArray(changed)
    written.CopyInformation(first)
    time.sleep(0.01)
    sitk.WriteImage(written, str(path), useCompression=False)
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))  # the old modification time back
    assert os.stat(path).st_size == status.st_size and os.stat(path).st_mtime_ns == status.st_mtime_ns
    assert (sitk.GetArrayViewFromImage(last.read(path)[0]) == 7).all()


class FailsOnce:
    """A segmenter whose first run fails with an error no check foresaw; the runs after it are the oracle's."""

    def __init__(self, segmenter):
        self.segmenter, self.calls = segmenter, 0

    def __getattr__(self, name):  # the device, the networks the report names
        return getattr(self.segmenter, name)

    def segment(self, *args, **kwargs):
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("boom")
        return self.segmenter.segment(*args, **kwargs)


def test_an_unexpected_error_is_answered_with_the_failure_code_and_the_worker_goes_on(case, tmp_path,
                                                                                      oracle_segmenter):
    failing = FailsOnce(oracle_segmenter)
    lines = (request(case, tmp_path / "failed.nrrd", id="failed", report=str(tmp_path / "failed.json")) + "\n"
             + request(case, tmp_path / "next.nrrd", id="next") + "\n")
    out = io.StringIO()
    assert serve(failing, io.StringIO(lines), out) == 0  # the error did not end the worker: its input closing did
    _, results = replies(out.getvalue())
    assert [(result["id"], result["code"], result["served"]) for result in results] == [("failed", 1, 1),
                                                                                         ("next", 0, 2)]
    assert results[0]["message"] == "RuntimeError: boom"  # the error's type and words, no traceback
    assert failing.calls == 2
    assert not (tmp_path / "failed.nrrd").exists() and not (tmp_path / "failed.json").exists()  # nothing written
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "next.nrrd")))[20].any()
