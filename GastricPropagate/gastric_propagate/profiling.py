"""Where the time of one whole ``gastric-propagate segment`` run goes, from process start to process end.

``gastric-propagate benchmark --profile`` writes the benchmark's CT (512x512x100, ``benchmark.speed_phantom``) and
its painted slice to NRRD files, then runs the segment command on them in fresh processes, as Slicer's module does.
Each profiled process is this module's ``child``: it notes the time before and after importing the engine and the
networks' runtime (onnxruntime or torch, as the command's ``--backend`` chooses), wraps a few engine functions with
timers (weights, file read, registration, report, file write; the engine's own ``timings`` give preprocessing,
proposer, refiner, paste-back, vote and confidence; the registration runs beside the networks, so its row overlaps
theirs), and then runs the real command line
(``cli.main(["segment", ...])``). The parent notes when it started the process and when the process had ended, so
process start-up (before the first line of Python here) and its end (after the last, ended as ``cli.run`` ends the
command) are counted too. The plain segment command is timed beside it, without the timers, as a check that they
cost nothing worth counting.

This module imports nothing heavy at its top: the child's first timestamp is taken before numpy or torch load.
"""

from __future__ import annotations

import time

_STARTED = time.time()  # the child's first moment in Python code of its own

import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

#: The rows of the breakdown, in the order a run goes through them: (key, label).
ROWS = (
    ("process_start", "process start (interpreter, until the first line of Python)"),
    ("import_engine", "import the engine (cli, file_segmentation, pipeline: numpy, SimpleITK, scipy)"),
    ("import_runtime", "import the networks' runtime (onnxruntime or torch, as --backend chooses)"),
    ("weights", "load the weights (Segmenter)"),
    ("read", "file read (CT + annotation NRRD)"),
    ("preprocessing", "preprocessing (checks, crop, normalise)"),
    ("proposer", "proposer (slice-by-slice chains)"),
    ("refiner", "refiner"),
    ("paste_back", "paste-back onto the CT grid"),
    ("registration", "registration (Demons, the vote's opinion; in a thread beside the networks, not summed)"),
    ("vote", "vote (the wait for the registration, copy, majority, outline snap)"),
    ("confidence", "confidence"),
    ("report", "report (build_report)"),
    ("write", "file write (mask + report, OutputBatch)"),
    ("other", "other in the command (arguments, output checks, geometry check)"),
    ("process_exit", "process exit (after the command returned: streams flushed, exit handlers; cli.run)"),
)


def run_profile(*, repeats: int = 3, n_slices: int = 100, device: str = "cpu", backend: str = "auto",
                proposer: str | None = None, refiner: str | None = None) -> dict:
    """Profiles ``repeats`` whole segment runs in fresh processes (and times as many plain ones); prints the
    breakdown (median and minimum of each row) and returns it."""
    import SimpleITK as sitk

    from gastric_propagate.benchmark import speed_phantom
    from gastric_propagate.data.annotation import annotation_from_label
    from gastric_propagate.data.outputs import write_mask

    phantom = speed_phantom(n_slices)
    _, truth = phantom.arrays()
    annotation = annotation_from_label(truth)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"[profile] one whole 'gastric-propagate segment' run on a {'x'.join(map(str, phantom.image.GetSize()))} "
          f"CT in a fresh process, {repeats} time(s); {os.cpu_count()} CPU cores"
          + (f", load average {load[0]:.2f} at the start" if load else ""))
    runs, plain = [], []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        ct, painted = folder / "ct.nrrd", folder / "annotation.nrrd"
        sitk.WriteImage(phantom.image, str(ct), useCompression=True)
        write_mask(annotation, phantom.image, painted)
        arguments = ["segment", "--image", str(ct), "--annotation", str(painted), "--device", device,
                     "--backend", backend, "--report", str(folder / "report.json"), "--overwrite"]
        arguments += ["--proposer", proposer] if proposer else []
        arguments += ["--refiner", refiner] if refiner else []
        for _ in range(repeats):  # in turn, so that a change in the machine's load touches both alike
            runs.append(_profiled_run(arguments + ["--output", str(folder / "profiled.nrrd")], folder))
            plain.append(_plain_run(arguments + ["--output", str(folder / "plain.nrrd")]))
    figures = {key: [run[key] for run in runs] for key, _ in ROWS}
    totals = [run["total"] for run in runs]
    print(f"  {runs[0]['runtime']} {runs[0]['runtime_version']}, {runs[0]['threads']} threads, device "
          f"{runs[0]['device']}; seconds, median (min) of {repeats}:")
    median_total = statistics.median(totals)
    for key, label in ROWS:
        median = statistics.median(figures[key])
        print(f"    {label:<82} {median:6.3f} ({min(figures[key]):.3f})  {100 * median / median_total:4.1f} %")
    print(f"    {'whole run, profiled (process started -> process ended)':<82} {median_total:6.3f} "
          f"({min(totals):.3f})")
    print(f"    {'whole run, the plain segment command (no timers)':<82} {statistics.median(plain):6.3f} "
          f"({min(plain):.3f})")
    start_up = [run["process_start"] + run["import_engine"] + run["import_runtime"] + run["weights"] for run in runs]
    engine = [sum(run[key] for key in ("preprocessing", "proposer", "refiner", "paste_back", "vote", "confidence"))
              for run in runs]
    print(f"  start-up (process, imports, weights) {statistics.median(start_up):.3f} s, the engine "
          f"{statistics.median(engine):.3f} s, of {median_total:.3f} s")
    if load:
        print(f"  load average {os.getloadavg()[0]:.2f} at the end")
    return {"rows": figures, "total": totals, "plain": plain, "load_average": load}


def _profiled_run(arguments: list[str], folder: Path) -> dict:
    out = folder / "profile.json"
    command = [sys.executable, "-m", "gastric_propagate.profiling", str(out), *arguments]
    spawned = time.time()
    completed = subprocess.run(command, capture_output=True, text=True, env=_child_environment())
    ended = time.time()
    if completed.returncode != 0:
        raise _child_failure(completed.returncode, completed.stderr)
    run = json.loads(out.read_text())
    run["process_start"] = run["started"] - spawned
    run["process_exit"] = ended - run["finished"]
    run["total"] = ended - spawned
    return run


def _plain_run(arguments: list[str]) -> float:
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, "-m", "gastric_propagate.cli", *arguments], capture_output=True,
                               text=True, env=_child_environment())
    if completed.returncode != 0:
        raise _child_failure(completed.returncode, completed.stderr)
    return time.perf_counter() - started


def _child_failure(code: int, stderr: str) -> Exception:
    """The error of a segment run that failed: the command's own refusal (bad input, unusable weights) as the same
    error with its 'error:' line, so that this command exits with its code and words; else a RuntimeError."""
    from gastric_propagate.errors import InputError, WeightsError
    from gastric_propagate.protocol import EXIT_BAD_INPUT, EXIT_WEIGHTS

    said = next((line[len("error: "):] for line in reversed(stderr.splitlines()) if line.startswith("error: ")), None)
    kind = {EXIT_BAD_INPUT: InputError, EXIT_WEIGHTS: WeightsError}.get(code)
    if said is not None and kind is not None:
        return kind(said)
    return RuntimeError(f"the profiled segment run failed (exit {code}): {stderr}")


def _child_environment() -> dict:
    """This process's environment, with the engine's folder first on PYTHONPATH (a source checkout works too)."""
    environment = dict(os.environ)
    engine = str(Path(__file__).resolve().parent.parent)
    environment["PYTHONPATH"] = os.pathsep.join([engine] + [p for p in environment.get("PYTHONPATH", "").split(
        os.pathsep) if p])
    return environment


def _child(out: str, arguments: list[str]) -> int:
    """One profiled segment run: imports timed, engine functions wrapped with timers, then the real command."""
    moments = {"started": _STARTED}
    import gastric_propagate.cli as cli
    import gastric_propagate.data.outputs as outputs
    import gastric_propagate.file_segmentation as files
    import gastric_propagate.inference.consensus as consensus
    from gastric_propagate.inference import pipeline
    from gastric_propagate.inference.backends import choose_backend
    from gastric_propagate.inference.onnx_networks import available_threads

    moments["engine"] = time.time()
    given = cli.build_parser().parse_args(arguments)
    backend = choose_backend(given.backend, given.device, given.proposer, given.refiner)
    importlib.import_module("torch" if backend.startswith("torch") else "onnxruntime")
    moments["runtime"] = time.time()
    spent = {"weights": 0.0, "read": 0.0, "registration": 0.0, "report": 0.0, "write": 0.0}
    seen = {}

    def timed(owner, name: str, key: str) -> None:
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent[key] += time.perf_counter() - started
        setattr(owner, name, wrapper)

    timed(pipeline.Segmenter, "__init__", "weights")
    timed(files, "read_volume", "read")
    timed(consensus, "propagate_by_registration", "registration")
    timed(files, "build_report", "report")
    original_segment, original_enter, original_exit = (pipeline.Segmenter.segment, outputs.OutputBatch.__enter__,
                                                       outputs.OutputBatch.__exit__)

    def segment(self, *args, **kwargs):
        result = original_segment(self, *args, **kwargs)
        seen["timings"], seen["device"], seen["backend"] = dict(result.timings), str(result.device), self.backend
        return result

    def enter(self):
        seen["write_started"] = time.perf_counter()
        return original_enter(self)

    def leave(self, *args):
        try:
            return original_exit(self, *args)
        finally:
            spent["write"] += time.perf_counter() - seen.pop("write_started")

    pipeline.Segmenter.segment, outputs.OutputBatch.__enter__, outputs.OutputBatch.__exit__ = segment, enter, leave
    command_started = time.perf_counter()
    code = cli.main(arguments)
    command_seconds = time.perf_counter() - command_started
    moments["finished"] = time.time()
    if code != 0:
        return code
    timings = seen["timings"]
    run = {"import_engine": moments["engine"] - moments["started"],
           "import_runtime": moments["runtime"] - moments["engine"], "preprocessing": timings["prepare"],
           "proposer": timings["proposer"], "refiner": timings["refiner"], "paste_back": timings["paste_back"],
           "vote": timings["consensus"], "confidence": timings["confidence"], **spent}
    # The registration runs in a thread while the networks do (pipeline.Segmenter.segment): its time is inside the
    # proposer's, refiner's and vote's rows, so it is shown but not summed.
    inside = ("weights", "read", "preprocessing", "proposer", "refiner", "paste_back", "vote", "confidence", "report",
              "write")
    run["other"] = command_seconds - sum(run[key] for key in inside)
    torch_ran = seen["backend"].startswith("torch")
    used = importlib.import_module("torch" if torch_ran else "onnxruntime")
    threads = used.get_num_threads() if torch_ran else available_threads()
    run.update(started=moments["started"], finished=moments["finished"], device=seen["device"],
               runtime=used.__name__, runtime_version=used.__version__, threads=threads)
    Path(out).write_text(json.dumps(run))
    return 0


if __name__ == "__main__":
    code = _child(sys.argv[1], sys.argv[2:])
    from gastric_propagate.cli import exit_now

    exit_now(code)  # as the segment command ends (``cli.run``), so that the process-exit row is the command's
