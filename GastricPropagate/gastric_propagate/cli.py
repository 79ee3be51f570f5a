"""The gastric-propagate command line: one sub-command per job, each a thin call into the engine.

Exit codes (``protocol.py``): 0 success, 2 bad input (the message says what to do), 3 unusable weights, 130
cancelled (Ctrl-C), 143 terminated (SIGTERM). Outputs appear whole or not at all, whatever the exit code.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import logging
import math
import os
import shlex
import signal
import sys
import threading
import time

from gastric_propagate import __version__
from gastric_propagate.inference import options as checks
from gastric_propagate.inference.options import PropagationOptions, declared_options
from gastric_propagate.protocol import (EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_TERMINATED, EXIT_WEIGHTS,
                                       EXIT_WITH_PARENT_ENV, STAGES)


class _Terminated(BaseException):
    """SIGTERM arrived: unwinds like Ctrl-C, so that temporary outputs are removed on the way out."""


def _checked(check):
    """An argparse type from one of ``inference.options``' checks: the engine and the parser refuse the same values
    in the same words."""
    def parse(value: str):
        from gastric_propagate.errors import InputError

        try:
            return check(value)
        except InputError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    parse.__name__ = check.__name__.replace("_", " ")
    return parse


_device = _checked(checks.device)
_backend = _checked(checks.backend)


def _count(minimum: int):
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"{number} is too small: give {minimum} or more")
        return number
    parse.__name__ = f"whole number >= {minimum}"
    return parse


def _above_zero(value: str, number_of: str, refused: str) -> float:
    """A finite number above 0, else an argparse error: "'<value>' is not <number_of | refused>"."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not {number_of}") from None
    if not math.isfinite(number) or number <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not {refused}")
    return number


def _seconds(value: str) -> float:
    return _above_zero(value, "a number of seconds", "a time: give a finite number of seconds above 0")


def _learning_rate(value: str) -> float:
    return _above_zero(value, "a number", "a learning rate: give a finite number above 0 (e.g. 2e-3)")


class _Names:
    """The names a module lists (e.g. the evaluation's methods), joined for a help text when --help is printed:
    building the parser does not import the module."""

    def __init__(self, module: str, attribute: str) -> None:
        self.module, self.attribute = module, attribute

    def __str__(self) -> str:
        return ", ".join(getattr(importlib.import_module(self.module), self.attribute))


class _Parser(argparse.ArgumentParser):
    """No abbreviated options: '--min' is not taken for '--min-slice', nor '--no-c' for '--no-consensus' (a typo
    would run another option than the one meant)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


class _StoreOnce(argparse.Action):
    """A value given twice is refused, not the first one dropped: the slice limits and the distance are safety
    bounds, and '--min-slice 25 --min-slice 20' silently ran with 20."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        given = getattr(namespace, "_given_once", set())
        if self.dest in given:
            parser.error(f"{option_string} was given twice ({getattr(namespace, self.dest)} and {values}); give it "
                         "once")
        namespace._given_once = given | {self.dest}
        setattr(namespace, self.dest, values)


def add_propagation_arguments(parser: argparse.ArgumentParser) -> None:
    """The propagation options' flags, as ``PropagationOptions`` declares them: a switch turns the field's default
    around, a number is checked as the field checks it (and is refused when given twice)."""
    group = parser.add_argument_group("propagation")
    for option in declared_options():
        if option.kind == "switch":
            group.add_argument(option.flag, dest=option.name, default=option.default, help=option.help,
                               action="store_false" if option.default else "store_true")
        else:
            group.add_argument(option.flag, dest=option.name, type=_checked(option.check), help=option.help,
                               action=_StoreOnce)


def options_from_arguments(args: argparse.Namespace) -> PropagationOptions:
    """The options the flags of ``add_propagation_arguments`` gave."""
    return PropagationOptions(**{option.name: getattr(args, option.name) for option in declared_options()})


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", type=_device,
                        help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N")
    parser.add_argument("--backend", default="auto", type=_backend,
                        help="how the networks run: auto (PyTorch on the GPU when --device is auto and an NVIDIA "
                             "driver is visible; else ONNX Runtime on the CPU when onnxruntime is installed, the .onnx "
                             "files lie beside the weights and --device is auto or cpu; else PyTorch), torch, "
                             "torch-bf16 (PyTorch with the networks in bfloat16: faster on a CPU that computes in "
                             "it, AMX or AVX-512 BF16, slower on others; masks slightly different), onnx, "
                             "onnx-int8 (ONNX Runtime with the int8 copies of the networks: faster on a CPU, masks "
                             "slightly different; 'export-onnx --int8' writes them) (default: %(default)s)")
    parser.add_argument("--proposer", help="proposer checkpoint (default: the bundled weights)")
    parser.add_argument("--refiner", help="refiner checkpoint (default: the bundled weights)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gastric-propagate", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"gastric-propagate {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    segment = commands.add_parser("segment", help="one painted axial slice -> 3D tumour label")
    segment.add_argument("--image", required=True, help="CT volume (any format SimpleITK reads)")
    segment.add_argument("--annotation", required=True,
                         help="label on the CT's grid (the whole grid, or a box of its voxels), painted on one axial "
                              "slice")
    segment.add_argument("--output", required=True,
                         help="output label (uint8, tumour = 1) on the CT's grid: .nrrd, .nii.gz, .nii, .mha, "
                              "or .nhdr, .mhd, .hdr (header + data)")
    segment.add_argument("--label", type=_count(1), metavar="N",
                         help="propagate label N of the annotation alone (an annotation holding several label values "
                              "is refused without it)")
    segment.add_argument("--report", help="write a JSON report (volume, slices, seconds, device, confidence)")
    segment.add_argument("--overwrite", action="store_true", help="replace existing output/report files")
    segment.add_argument("--crop-output", action="store_true",
                         help="write the output as the box that holds the tumour, on the CT's grid (its origin where "
                              "the box starts), not as the whole grid: a small file, placed right by Slicer and ITK")
    segment.add_argument("--progress", action="store_true",
                         help="print machine-readable progress lines on stdout, flushed as they come: "
                              f"'PROGRESS stage=<{'|'.join(STAGES)}> done=<n> total=<n>'")
    _add_model_options(segment)
    add_propagation_arguments(segment)

    serve = commands.add_parser(
        "serve", help="a warm worker: load the weights once, then segment the requests read from stdin",
        description="Loads the networks and their weights once, then answers segment requests, one JSON object per "
                    "line on stdin, with progress lines and one RESULT line each on stdout (the protocol is in "
                    "gastric_propagate/worker.py and docs/cli.md). Ends when stdin closes or after --idle-timeout "
                    "seconds without a request.")
    serve.add_argument("--idle-timeout", type=_seconds, default=600.0,
                       help="end after this many seconds without a request (default: %(default)g)")
    _add_model_options(serve)

    train = commands.add_parser("train", help="train the proposer and the refiner (or fine-tune them: --init)")
    source = train.add_argument_group("training data (one or more)")
    source.add_argument("--data", action="append", metavar="DIR",
                        help="folder of image/label pairs (NRRD, NIfTI, MetaImage, or an nnU-Net imagesTr/labelsTr "
                             "layout), e.g. your corrected results; repeat it for several folders")
    train.add_argument("--label", type=_count(1), metavar="N",
                       help="the tumour's value in --data's label files (e.g. 2 where an organ is 1 and its tumour 2; "
                            "default: their one value, a label of several values refused)")
    source.add_argument("--phantoms", type=int, default=0,
                        help="this many synthetic abdominal phantoms (generator 'phantom', seeds 0..N-1)")
    source.add_argument("--shapes", type=int, default=0,
                        help="this many random-shape cases (generator 'shapes', seeds 0..N-1)")
    source.add_argument("--thorax", type=int, default=0,
                        help="this many chest CT crops around a lung nodule (generator 'thorax', seeds 0..N-1)")
    source.add_argument("--hypodense", type=int, default=0,
                        help="this many phantoms whose tumour has large low-density parts reaching its outline "
                             "(necrotic, cystic or myxoid; generator 'hypodense', seeds 50000..50000+N-1)")
    train.add_argument("--mix", nargs="+", metavar="SOURCE=SHARE",
                       help="share of the samples each source gets, e.g. 'real-ct-train=0.6 phantom=0.25 "
                            "thorax=0.15' (a --data folder is named by its last part, a generator by its name; "
                            "every source given needs a share, 0 to load it but never draw it); inside a source "
                            "each lesion-size bin gets an equal part. Default: every crop equally")
    train.add_argument("--min-bin-crops", type=int, default=0, metavar="N",
                       help="with --mix: a lesion-size bin of a source holding fewer than N training crops (each case "
                            "gives two) joins its neighbour, so that a lone lesion does not get a whole bin's share "
                            "(default 0: bins never merged)")
    train.add_argument("--no-empty-target-dice", dest="empty_target_dice", action="store_false",
                       help="the soft Dice term only on samples whose target holds tumour; those where the tumour has "
                            "ended learn from the cross-entropy alone (default: the Dice on every sample)")
    train.add_argument("--zoom", nargs=2, type=float, metavar=("LOW", "HIGH"), default=(1.0, 1.0),
                       help="in-plane zoom drawn per training crop, so that lesions are seen at other sizes "
                            "(default 1 1: none)")
    train.add_argument("--self-fed", type=float, default=0.0, metavar="SHARE",
                       help="share (0-1) of the proposer's samples whose previous mask is its own propagation on "
                            "the training crop instead of the true one, so that it learns to come back from its "
                            "own leaks (default 0: none)")
    train.add_argument("--self-fed-refresh", type=int, default=0, metavar="N",
                       help="with --self-fed: recompute those propagations from the proposer being trained N times, "
                            "evenly over its self-fed steps, so that it learns from its own current errors (default "
                            "0: computed once, from the starting network when fine-tuning, else after half the steps)")
    train.add_argument("--outward-share", type=float, default=0.0, metavar="SHARE",
                       help="share (0-1) of the proposer's samples inside the tumour drawn on the outward side of its "
                            "largest cross-section, as the chains walk from the painted slice (default 0: anywhere)")
    train.add_argument("--outline-windows", type=float, default=0.0, metavar="SHARE",
                       help="share (0-1) of both networks' samples of a lesion wider than half the training window "
                            "whose window is centred on a point of its true outline, not its centre (default 0: "
                            "always the centre)")
    train.add_argument("--refiner-overshoot", action="store_true",
                       help="also train the refiner on the slices where the coarse mask runs past the tumour's ends")
    train.add_argument("--refiner-leaks", type=float, default=0.0, metavar="SHARE",
                       help="share (0-1) of the refiner's samples whose coarse mask is the truth run into the tissue "
                            "of the tumour's density beside it, so that it learns to cut such leaks back (default 0: "
                            "none)")
    train.add_argument("--hard-pixel-weight", type=float, metavar="W",
                       help="the refiner's loss weighs a pixel its coarse mask gets wrong W more than the others "
                            "(default 4: 1 + 4)")
    train.add_argument("--proposer-boundary-weight", type=float, metavar="W",
                       help="the proposer's loss weighs a pixel on the true outline (one pixel either side) W more "
                            "(default 0: every pixel the same)")
    train.add_argument("--boundary-weight", type=float, metavar="W",
                       help="the refiner's loss weighs a pixel on the true outline (one pixel either side) W more "
                            "(default 2)")
    train.add_argument("--augment", choices=("basic", "torchio"), default="basic",
                       help="augmentation of the training samples: basic (flips, turns, intensity jitter) or "
                            "torchio (those, plus TorchIO's elastic deformation, coarser in-plane resolution, blur "
                            "and noise; default: %(default)s)")
    train.add_argument("--window", type=int, metavar="PIXELS",
                       help="side of the square window each training sample is cut to, in the networks' 1 mm "
                            "pixels; a multiple of 16 from 64 to 256 (default 96; larger windows show more of a "
                            "large lesion's outline, at a cost that grows with the area)")
    train.add_argument("--prompt-channel", action="store_true",
                       help="the proposer also reads the painted mask at every step, as a fifth input channel "
                            "(with --init of a proposer without it, that channel starts with weights of 0, so the "
                            "network starts as it was); a proposer that has it keeps it")
    train.add_argument("--depth", type=int, metavar="LEVELS",
                       help="a new network's downsampling levels, 1-4 (default 3; each one doubles what a pixel "
                            "sees around it); not with --init, whose networks keep their size")
    train.add_argument("--base-channels", type=int, metavar="N",
                       help="a new network's channels on its first level, 4-64, doubled on each level below "
                            "(default 16); not with --init")
    train.add_argument("--init", help="start from these weights and fine-tune: 'bundled', or a folder holding "
                                      "proposer.pt and refiner.pt")
    train.add_argument("--learning-rate", type=_learning_rate,
                       help="peak learning rate (default 2e-3; 5e-4 with --init)")
    train.add_argument("--workers", type=int, default=2,
                       help="processes that generate synthetic cases (default: %(default)s)")
    train.add_argument("--out", required=True, help="folder for proposer.pt and refiner.pt")
    train.add_argument("--overwrite", action="store_true",
                       help="replace proposer.pt and refiner.pt already in --out (refused otherwise)")
    train.add_argument("--validation-phantoms", type=int, default=8,
                       help="held-out phantoms to report Dice on after training (0: none; default: %(default)s)")
    train.add_argument("--proposer-steps", type=int, default=1500,
                       help="optimiser steps of the proposer (0: keep it as it is, with --init; default: %(default)s)")
    train.add_argument("--refiner-steps", type=int, default=800,
                       help="optimiser steps of the refiner, trained after the proposer on its output (0: keep it as "
                            "it is, with --init; default: %(default)s)")
    train.add_argument("--batch-size", type=int, default=16,
                       help="training crops per step; lower it if memory runs out (default: %(default)s)")
    train.add_argument("--seed", type=int, default=0,
                       help="random seed of the crops, augmentations and initial weights, for a repeatable run "
                            "(default: %(default)s)")
    train.add_argument("--threads", type=int,
                       help="CPU threads for PyTorch (default: PyTorch's choice); the weights are the same bit for "
                            "bit only at the same thread count")
    train.add_argument("--device", default="auto", type=_device,
                       help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N (default: %(default)s)")

    export = commands.add_parser("export-onnx", help="write proposer.onnx and refiner.onnx beside trained weights, "
                                                     "for the onnx backend (train writes them itself)")
    export.add_argument("--weights", required=True, metavar="DIR", help="folder holding proposer.pt and refiner.pt")
    export.add_argument("--overwrite", action="store_true",
                        help="replace proposer.onnx and refiner.onnx already in the folder (refused otherwise)")
    export.add_argument("--int8", action="store_true",
                        help="also write their int8 copies (proposer.int8.onnx, refiner.int8.onnx) for --backend "
                             "onnx-int8, calibrated on synthetic training cases")

    phantoms = commands.add_parser("make-phantoms", help="write synthetic CT/label pairs to a folder")
    phantoms.add_argument("--out", required=True,
                          help="folder for case_<seed>_image and case_<seed>_label (created if missing)")
    phantoms.add_argument("--count", type=_count(1), default=10, help="how many pairs (default: %(default)s)")
    phantoms.add_argument("--seed-start", type=_count(0), help="first seed (default: the held-out range)")
    phantoms.add_argument("--format", choices=("nrrd", "nii.gz"), default="nrrd",
                          help="file format, %(choices)s (default: %(default)s)")
    phantoms.add_argument("--overwrite", action="store_true", help="replace image/label files already in --out")

    demo = commands.add_parser("demo", help="segment a built-in example (a phantom made on the fly)")
    demo.add_argument("--out", default="demo-output",
                      help="where the example CT, annotation and result go (default: %(default)s); an earlier "
                           "demo's files there are replaced")
    demo.add_argument("--seed", type=_count(0), help="phantom seed (default: a held-out one)")
    demo.add_argument("--overwrite", action="store_true",
                      help="also replace files of the demo's names in --out that no earlier demo wrote, or that "
                           "were changed since (refused otherwise)")
    _add_model_options(demo)

    benchmark = commands.add_parser("benchmark", help="speed, memory and accuracy figures")
    benchmark.add_argument("--cases", type=_count(1), default=10,
                           help="held-out cases: phantoms for the accuracy figures, of each generator for the "
                                "corrections (default 10)")
    benchmark.add_argument("--repeats", type=_count(1), default=5,
                           help="timed runs on the 512x512x100 CT (default 5)")
    benchmark.add_argument("--skip", nargs="*", default=[], choices=("speed", "accuracy", "corrections"),
                           help="parts to leave out")
    benchmark.add_argument("--profile", action="store_true",
                           help="instead: where the time of one whole 'segment' run on the 512x512x100 CT goes, "
                                "from process start to process end (process start, imports, weights, file read, "
                                "each stage of the engine, report, file write), --repeats times in fresh processes")
    _add_model_options(benchmark)

    evaluate = commands.add_parser("evaluate", help="compare with the alternatives; writes CSV, Markdown, PNG")
    evaluate.add_argument("--data", action="append",
                          help="folder of image/label pairs (default: held-out phantoms); one folder")
    evaluate.add_argument("--out", required=True,
                          help="folder for the report: results.csv, summary.md, figure.png, and example.npz, "
                               "confidence.csv when the engine runs (created if missing)")
    evaluate.add_argument("--label", type=_count(1), metavar="N",
                          help="the tumour's value in --data's label files (e.g. 2 where an organ is 1 and its "
                               "tumour 2; default: their one value, a label of several values refused)")
    evaluate.add_argument("--cases", type=int, help="evaluate only the first N cases (default: every case of "
                                                    "--data; 20 held-out phantoms without --data)")
    methods = evaluate.add_argument("--methods", nargs="*", metavar="METHOD",
                                    help="methods to run, of: %(names)s (default: all)")
    methods.names = _Names("gastric_propagate.evaluation.evaluate", "ALL_METHODS")
    variants = evaluate.add_argument("--variants", nargs="*", metavar="VARIANT",
                                     help="annotation variants (which slice is painted), of: %(names)s "
                                          "(default: all)")
    variants.names = _Names("gastric_propagate.evaluation.annotations", "VARIANTS")
    evaluate.add_argument("--generator", choices=("phantom", "shapes", "thorax", "hypodense"),
                          help="synthetic generator of the held-out cases when --data is not given (default: phantom)")
    evaluate.add_argument("--seed-start", type=_count(0),
                          help="first seed of the synthetic cases (default: held out)")
    evaluate.add_argument("--overwrite", action="store_true",
                          help="replace the report files already in --out (refused otherwise)")
    _add_model_options(evaluate)
    return parser


def run() -> None:
    """The ``gastric-propagate`` command (and ``python -m gastric_propagate.cli``): ``main``, then the process ends at
    once with its code.

    By then everything a command writes is in place (outputs are renamed into place before it returns); the standard
    streams are flushed and the exit handlers run, as at a normal exit. What is skipped is the interpreter's own
    tear-down (freeing every module, the CT's arrays, the networks' runtime and its threads), which took about 0.1 s
    of every segment process, time the Slicer module waits for before it reads the result (docs/profile.md). Tools
    such as mypy end the same way. ``main`` itself returns, for callers in the same process (tests, scripts).
    """
    exit_now(main())


def exit_now(code: int) -> None:
    """Ends the process with ``code`` once the standard streams are flushed and the exit handlers have run, without the
    interpreter's tear-down (see ``run``)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:  # None: started with that stream closed
                stream.flush()
        except (OSError, ValueError):  # a reader that went away (a closed pipe): nothing is left to tell it
            pass
    atexit._run_exitfuncs()  # logging's flush, and any handler a caller registered (the benchmark's peak memory)
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    argv = [str(part) for part in (sys.argv[1:] if argv is None else argv)]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help, --version, or a usage error (exit 2, argparse printed what is wrong)
        return stop.code if isinstance(stop.code, int) else EXIT_BAD_INPUT
    args.command_line = shlex.join(["gastric-propagate", *argv])
    args.started = time.perf_counter()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from gastric_propagate.errors import Cancelled, InputError, WeightsError

    if args.command in ("segment", "serve") and os.environ.get(EXIT_WITH_PARENT_ENV) == "1":
        from gastric_propagate.parent_watch import exit_with_parent

        exit_with_parent(EXIT_CANCELLED)
    written = sys.modules.get("gastric_propagate.data.outputs")  # not imported for it: --help stays quick
    if written is not None:
        written.COMMITTED.clear()  # what an earlier command in this process wrote is not this one's
        written.RECEIVED.clear()
    cases = sys.modules.get("gastric_propagate.data.cases")
    if cases is not None:
        cases.WARNED.clear()  # nor are the warnings an earlier command gave
    previous = _on_sigterm_unwind()
    _warn_of_mixed_weights(args)
    try:
        return _COMMANDS[args.command](args)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except WeightsError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_WEIGHTS
    except ModuleNotFoundError as error:
        if not (error.name or "").startswith("gastric_propagate"):
            raise
        # The Slicer extension installs the engine's segmenting part only (GastricPropagate/CMakeLists.txt).
        print(f"error: gastric-propagate {args.command} is not part of this install ({error.name} is not there: the "
              "Slicer extension installs what segment and serve need). Run it from the project's own environment: "
              f"bash scripts/setup.sh, then .venv/bin/gastric-propagate {args.command}.", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as error:  # a file or folder the checks could not foresee (disk full, permissions changed)
        where = f" {error.filename}" if error.filename else ""
        print(f"error: cannot read or write{where}: {error.strerror or error}. Check the path, that the folder is "
              "writable and that the disk has free space, then run again.", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (Cancelled, KeyboardInterrupt):
        print(f"cancelled: {_what_was_written(args.command)}", file=sys.stderr)
        return EXIT_CANCELLED
    except _Terminated:
        print(f"terminated (SIGTERM): {_what_was_written(args.command)}", file=sys.stderr)
        return EXIT_TERMINATED
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


#: evaluate's methods that run the networks (evaluation.running.ENGINE_METHODS, not imported for --help's sake).
NETWORK_METHODS = ("proposer", "networks", "engine")


def _warn_of_mixed_weights(args) -> None:
    """One of --proposer / --refiner alone runs it with the other's bundled network: said, not refused (a new refiner
    behind the shipped proposer can be meant), since a fine-tuned pair given by half is the likelier slip."""
    given = [stage for stage in ("proposer", "refiner") if getattr(args, stage, None)]
    methods = getattr(args, "methods", None)  # evaluate: only its engine methods run the networks
    if methods and not set(NETWORK_METHODS) & set(methods):
        return
    if methods and set(NETWORK_METHODS) & set(methods) == {"proposer"}:
        return  # the proposer alone runs: no refiner, bundled or not, so nothing is mixed
    if len(given) == 1 and _weights_present(getattr(args, given[0])):  # a missing file: its own error, alone
        stage, other = given[0], {"proposer": "refiner", "refiner": "proposer"}[given[0]]
        beside = os.path.join(os.path.dirname(getattr(args, stage)), f"{other}.pt")
        print(f"warning: --{stage} {getattr(args, stage)} runs with the bundled {other} (no --{other} given): a mix of "
              f"two trainings. Give --{other} too{f' (e.g. {beside})' if os.path.isfile(beside) else ''} unless this "
              "mix is what you want.", file=sys.stderr)


def _weights_present(path: str) -> bool:
    """Whether a network can load from ``path``: the checkpoint, or the ONNX files the onnx backend reads beside it."""
    from gastric_propagate.inference.onnx_networks import PRECISIONS, onnx_path

    return os.path.isfile(path) or any(onnx_path(path, precision).is_file() for precision in PRECISIONS)


def _on_sigterm_unwind() -> dict:
    """Makes SIGTERM raise ``_Terminated`` and SIGINT ``KeyboardInterrupt`` (so temporary files are removed), each
    noted first in ``outputs.RECEIVED`` (an exception raised where Python ignores it must not let a batch be renamed
    into place); returns the handlers it replaced, by signal."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def note(number: int) -> None:
        written = sys.modules.get("gastric_propagate.data.outputs")  # none imported yet: no batch to guard
        if written is not None:
            written.RECEIVED.append(number)

    def terminate(number, frame):
        note(number)
        raise _Terminated()

    def interrupt(number, frame):
        note(number)
        raise KeyboardInterrupt()

    previous = {}
    if signal.getsignal(signal.SIGTERM) is not None:  # None: installed outside Python, cannot be put back
        previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, terminate)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where Ctrl-C is ignored or handled
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, interrupt)
    return previous


# Each command's body lives with the engine's job; these only hand it the parsed values. The weights load through
# _segmenter, late (after the command's checks), and tests replace it with small networks.

def _what_was_written(command: str) -> str:
    """After a cancel: that no output was half-written, and, when the outputs of a segment run or a training (each
    one batch) were already in place (the signal came as they were renamed, or after), that they are complete."""
    from gastric_propagate.data.outputs import COMMITTED

    if command in ("segment", "train") and COMMITTED:
        return (f"the run had finished: {', '.join(COMMITTED)} {'is' if len(COMMITTED) == 1 else 'are'} complete "
                "(written before the signal came)")
    return "no output was half-written"


def _segmenter(args):
    from gastric_propagate.inference.pipeline import Segmenter

    return Segmenter(args.proposer, args.refiner, device=args.device, backend=args.backend)


def _segment(args) -> int:
    from gastric_propagate.worker import segment_main

    return segment_main(image=args.image, annotation=args.annotation, output=args.output, report=args.report,
                        overwrite=args.overwrite, progress=args.progress, options=options_from_arguments(args),
                        load_segmenter=lambda: _segmenter(args), started=args.started, crop_output=args.crop_output,
                        label=args.label)


def _serve(args) -> int:
    from gastric_propagate.worker import serve_main

    return serve_main(load_segmenter=lambda: _segmenter(args), idle_seconds=args.idle_timeout)


def _train(args) -> int:
    from gastric_propagate.training.command import train_main

    return train_main(out=args.out, data=args.data, phantoms=args.phantoms, shapes=args.shapes, thorax=args.thorax,
                      hypodense=args.hypodense,
                      mix=args.mix, zoom=args.zoom, self_fed=args.self_fed,
                      self_fed_refresh=args.self_fed_refresh, augment=args.augment, window=args.window,
                      hard_pixel_weight=args.hard_pixel_weight, boundary_weight=args.boundary_weight,
                      refiner_leaks=args.refiner_leaks, proposer_boundary_weight=args.proposer_boundary_weight,
                      outward_share=args.outward_share, outline_windows=args.outline_windows,
                      refiner_overshoot=args.refiner_overshoot,
                      min_bin_crops=args.min_bin_crops, empty_target_dice=args.empty_target_dice, label=args.label,
                      prompt_channel=args.prompt_channel, init=args.init, learning_rate=args.learning_rate,
                      depth=args.depth, base_channels=args.base_channels,
                      workers=args.workers, overwrite=args.overwrite, validation_phantoms=args.validation_phantoms,
                      proposer_steps=args.proposer_steps, refiner_steps=args.refiner_steps,
                      batch_size=args.batch_size, seed=args.seed, threads=args.threads, device=args.device,
                      command=args.command_line)


def _export_onnx(args) -> int:
    from gastric_propagate.training.command import export_main

    return export_main(weights=args.weights, overwrite=args.overwrite, int8=args.int8)


def _make_phantoms(args) -> int:
    from gastric_propagate.synthetic.phantom import make_phantoms_main

    return make_phantoms_main(out=args.out, count=args.count, seed_start=args.seed_start, fmt=args.format,
                              overwrite=args.overwrite)


def _demo(args) -> int:
    from gastric_propagate.demo import demo_main

    return demo_main(out=args.out, seed=args.seed, overwrite=args.overwrite, load_segmenter=lambda: _segmenter(args))


def _benchmark(args) -> int:
    if args.profile:
        from gastric_propagate.profiling import run_profile

        run_profile(repeats=args.repeats, device=args.device, backend=args.backend, proposer=args.proposer,
                    refiner=args.refiner)
        return 0
    from gastric_propagate.benchmark import run_benchmark

    run_benchmark(cases=args.cases, repeats=args.repeats, skip=set(args.skip), device=args.device,
                  backend=args.backend, proposer=args.proposer, refiner=args.refiner)
    return 0


def _evaluate(args) -> int:
    from gastric_propagate.evaluation.evaluate import evaluate_main

    # Other weights or another backend: loaded here; else the evaluation loads the bundled weights when it needs them.
    other_weights = args.proposer or args.refiner or args.backend != "auto"
    return evaluate_main(out=args.out, data=args.data, cases=args.cases, methods=args.methods,
                         variants=args.variants, generator=args.generator, seed_start=args.seed_start,
                         overwrite=args.overwrite, device=args.device, command=args.command_line,
                         load_segmenter=(lambda: _segmenter(args)) if other_weights else None, label=args.label)


_COMMANDS = {"segment": _segment, "serve": _serve, "train": _train, "export-onnx": _export_onnx,
             "make-phantoms": _make_phantoms, "demo": _demo, "benchmark": _benchmark, "evaluate": _evaluate}

if __name__ == "__main__":
    run()
