"""``gastric-propagate train``: checks the command's values and outputs before any work, gathers the training data
(folders of image/label pairs and synthetic generators), the sampling mix and the weights to fine-tune, then trains
(``train.py``) and exports the trained networks to ONNX beside their checkpoints (``inference.onnx_networks``).
``gastric-propagate export-onnx``: that export alone, for weights trained before, and their int8 copies
(``quantization.py``).
"""

from __future__ import annotations

import contextlib
import math
from typing import Sequence


# The sizes a new network may have: its levels (crops are multiples of 16 pixels, ``Preprocessing.size_multiple``, so
# at most four halvings) and its first level's channels (the shipped ones: depth 3, 16 channels, 0.5 million
# parameters, 1 MB as float16; depth 4 and 64 channels: 31 million, 62 MB).
NEW_NETWORK_DEPTHS = (1, 4)
NEW_NETWORK_CHANNELS = (4, 64)
# The training window's side (pixels): a multiple of 16 (four halvings at most) in this range.
TRAINING_WINDOWS = (64, 256)


def train_main(*, out: str, data: Sequence[str] | None, phantoms: int, shapes: int, thorax: int, hypodense: int = 0,
               mix: Sequence[str] | None, zoom: Sequence[float], init: str | None, learning_rate: float | None,
               self_fed: float = 0.0, self_fed_refresh: int = 0, augment: str = "basic", depth: int | None = None,
               base_channels: int | None = None, window: int | None = None, prompt_channel: bool = False,
               hard_pixel_weight: float | None = None, boundary_weight: float | None = None,
               refiner_leaks: float = 0.0, proposer_boundary_weight: float | None = None,
               outward_share: float = 0.0, refiner_overshoot: bool = False, min_bin_crops: int = 0,
               empty_target_dice: bool = True, outline_windows: float = 0.0, label: int | None = None,
               workers: int, overwrite: bool, validation_phantoms: int, proposer_steps: int, refiner_steps: int,
               batch_size: int, seed: int, threads: int | None, device: str, command: str) -> int:
    """Everything ``gastric-propagate train`` does, with the values its parser gives (defaults included); prints
    the files it wrote and returns 0. Raises InputError for a value or output it refuses, before any data is read.
    """
    from pathlib import Path

    from gastric_propagate.data.cases import folder_cases
    from gastric_propagate.data.output_checks import check_writable_folder
    from gastric_propagate.data.outputs import OutputBatch
    from gastric_propagate.errors import InputError
    from gastric_propagate.errors import WeightsError
    from gastric_propagate.inference.onnx_networks import (PRECISIONS, check_exporter, export_onnx, onnx_path,
                                                            shell_word)
    from gastric_propagate.synthetic.generators import (TRAINING_SEED_START, generated_cases, iter_loaded, load_all,
                                                        load_cases)
    from gastric_propagate.synthetic.phantom import HELD_OUT_SEED_START
    from gastric_propagate.training.train import TrainingConfig, train

    minimums = (("--phantoms", phantoms, 0), ("--shapes", shapes, 0), ("--thorax", thorax, 0),
                ("--hypodense", hypodense, 0), ("--workers", workers, 1),
                ("--validation-phantoms", validation_phantoms, 0),
                ("--proposer-steps", proposer_steps, 0), ("--refiner-steps", refiner_steps, 0),
                ("--batch-size", batch_size, 1), ("--threads", threads, 1), ("--seed", seed, 0))
    for option, value, minimum in minimums:
        if value is not None and value < minimum:
            raise InputError(f"{option} {value} is too small: give {minimum} or more.")
    # Each generator's training seeds end where another range starts: the hypodense phantoms' anatomies (phantom
    # seeds from TRAINING_SEED_START["hypodense"]), and the held-out seeds that evaluate and the benchmark score.
    hypodense_start = TRAINING_SEED_START["hypodense"]
    for option, count, first, end in (("--phantoms", phantoms, 0, hypodense_start),
                                      ("--shapes", shapes, 0, HELD_OUT_SEED_START),
                                      ("--thorax", thorax, 0, HELD_OUT_SEED_START),
                                      ("--hypodense", hypodense, hypodense_start, HELD_OUT_SEED_START)):
        if count and first + count > end:
            owner = "the hypodense phantoms use" if end == hypodense_start else "evaluation holds out"
            raise InputError(f"{option} {count}: give at most {end - first}; its seeds {first}-{first + count - 1} "
                             f"would reach seed {end}, which {owner}.")
    for option, value, (low, high) in (("--depth", depth, NEW_NETWORK_DEPTHS),
                                       ("--base-channels", base_channels, NEW_NETWORK_CHANNELS)):
        if value is not None and not low <= value <= high:
            raise InputError(f"{option} {value}: give {low} to {high}.")
        if value is not None and init:
            raise InputError(f"{option} sets the size of new networks; with --init the networks keep the size of "
                             "the weights they start from: leave it out, or train from scratch (no --init).")
    for option, steps in (("--proposer-steps", proposer_steps), ("--refiner-steps", refiner_steps)):
        if steps == 0 and not init:  # an untrained network would be written as if it were weights
            raise InputError(f"{option} 0 keeps that network as it is, which needs weights to keep: give --init "
                             "bundled (or a folder of weights), or 1 step or more.")
    if window is not None and not (TRAINING_WINDOWS[0] <= window <= TRAINING_WINDOWS[1] and window % 16 == 0):
        raise InputError(f"--window {window}: give a multiple of 16 from {TRAINING_WINDOWS[0]} to "
                         f"{TRAINING_WINDOWS[1]} (the networks halve it three or four times).")
    # The loss weights given (the others keep TrainingConfig's defaults), by their option's name.
    loss_weights = {name: value for name, value in (("hard_pixel_weight", hard_pixel_weight),
                                                    ("boundary_weight", boundary_weight),
                                                    ("proposer_boundary_weight", proposer_boundary_weight))
                    if value is not None}
    for name, value in loss_weights.items():
        if not (math.isfinite(value) and value >= 0):
            option = "--" + name.replace("_", "-")
            raise InputError(f"{option} {value}: give a weight of 0 or more (0: no extra weight).")
    if label is not None and not data:
        raise InputError(f"--label {label} picks the tumour's value in the label files of --data: give --data, or "
                         "leave --label out (the synthetic cases' labels hold the tumour alone).")
    if not (data or phantoms or shapes or thorax or hypodense):
        raise InputError("No training data: give --data DIR (a folder of image/label pairs), --phantoms N, "
                         "--shapes N, --thorax N and/or --hypodense N with N of 1 or more.")
    check_writable_folder(out, f"the output folder {out}")
    _check_weights_outputs(out, init, overwrite)
    check_exporter()  # before the training, which its export ends
    from gastric_propagate.inference.backends import resolve_device

    resolve_device(device)  # a CUDA device this machine lacks: refused before the data is read or made
    generators = (("phantom", phantoms), ("shapes", shapes), ("thorax", thorax), ("hypodense", hypodense))
    _check_data_folders(data or [], [name for name, count in generators if count] if mix else None)
    source_names = {Path(folder).resolve().name for folder in data or []} | {name for name, n in generators if n}
    shares = _parse_mix(mix, source_names) if mix else {}  # before any case is read or made
    low, high = zoom
    if not (0 < low <= high < 10):
        raise InputError(f"--zoom {low} {high}: give 0 < LOW <= HIGH < 10 (1 1 for no zoom).")
    for option, share in (("--self-fed", self_fed), ("--refiner-leaks", refiner_leaks),
                          ("--outward-share", outward_share), ("--outline-windows", outline_windows)):
        if not 0 <= share <= 1:
            raise InputError(f"{option} {share}: give a share from 0 to 1 (0 for none).")
    if self_fed_refresh < 0:
        raise InputError(f"--self-fed-refresh {self_fed_refresh}: give a count, 0 or more (0: computed once).")
    if self_fed_refresh and not self_fed:
        raise InputError("--self-fed-refresh recomputes the proposer's own propagations: give --self-fed too.")
    if self_fed_refresh and self_fed_refresh >= proposer_steps // 2:
        raise InputError(f"--self-fed-refresh {self_fed_refresh}: give fewer than half the proposer's steps "
                         f"({proposer_steps // 2}), so that the network learns from each refresh.")
    if min_bin_crops < 0:
        raise InputError(f"--min-bin-crops {min_bin_crops}: give a number of crops, 0 or more (0: bins never merged).")
    if min_bin_crops and not shares:
        raise InputError("--min-bin-crops merges the size bins --mix balances; without --mix every crop is drawn "
                         "equally often: give --mix, or leave --min-bin-crops out.")
    cases, parts, sources = [], [], []
    for folder in data or []:
        found = folder_cases(folder, label=label)
        print(f"{len(found)} image/label pair(s) found in {folder}")
        cases += found
        sources += [Path(folder).resolve().name] * len(found)
        parts.append(f"{len(found)} image/label pairs from {folder}" + (f" (label {label})" if label else ""))
    for generator, count in generators:
        if count:
            first = TRAINING_SEED_START.get(generator, 0)
            cases += generated_cases(generator, count, first)
            sources += [generator] * count
            parts.append(f"{count} synthetic '{generator}' cases (seeds {first}-{first + count - 1})")
    if shares:
        parts.append("sampled " + ", ".join(f"{name} {share:.0%}" for name, share in shares.items())
                     + ", size bins balanced within each" + (
                         f" (a bin of fewer than {min_bin_crops} crops joining a neighbour)" if min_bin_crops else ""))
    if self_fed:
        parts.append(f"{self_fed:.0%} of the proposer's samples fed its own propagation" + (
            f", recomputed {self_fed_refresh} times as it trains" if self_fed_refresh else ""))
    if proposer_boundary_weight:
        parts.append(f"the proposer's loss weighing the true outline 1 + {proposer_boundary_weight:g}")
    if refiner_leaks:
        parts.append(f"{refiner_leaks:.0%} of the refiner's samples a simulated leak to cut back")
    if outward_share:
        parts.append(f"{outward_share:.0%} of the proposer's samples in the tumour drawn outward of its largest slice")
    if outline_windows:
        parts.append(f"{outline_windows:.0%} of the windows of lesions wider than half of one centred on their outline")
    if refiner_overshoot:
        parts.append("the refiner also trained where the coarse mask runs past the tumour's ends")
    if not empty_target_dice:
        parts.append("the soft Dice only on samples that hold tumour")
    if augment == "torchio":
        parts.append("augmented with TorchIO (elastic, resolution, blur, noise)")
    if prompt_channel:
        parts.append("the proposer reading the painted mask at every step")
    networks, rate, preprocessing, earlier = None, learning_rate or 2e-3, None, set()
    if init:
        networks, preprocessing, init_description, earlier = _initial_networks(init)
        rate = learning_rate or 5e-4
        parts.append(f"fine-tuned from {init_description}")
    # Validation phantoms come from the far end of the held-out range, away from the evaluation's seeds.
    validation = load_cases(None, validation_phantoms, seed_start=HELD_OUT_SEED_START + 50_000) \
        if validation_phantoms else []
    config = TrainingConfig(proposer_steps=proposer_steps, refiner_steps=refiner_steps,
                            batch_size=batch_size, seed=seed, threads=threads,
                            learning_rate=rate, init=init or "",
                            mix=tuple(shares.items()), zoom_range=(low, high), self_fed=self_fed,
                            self_fed_refresh=self_fed_refresh, augment=augment, depth=depth or TrainingConfig.depth,
                            window=window or TrainingConfig.window, prompt_channel=prompt_channel,
                            base_channels=base_channels or TrainingConfig.base_channels,
                            refiner_leaks=refiner_leaks, outward_share=outward_share,
                            refiner_overshoot=refiner_overshoot, min_bin_crops=min_bin_crops,
                            empty_target_dice=empty_target_dice, outline_windows=outline_windows, **loss_weights,
                            **({"preprocessing": preprocessing} if preprocessing else {}))
    validation_data = load_all(validation, workers)  # the few small ones first: a problem shows at once
    # The checkpoints, their ONNX files and the removal of the int8 copies of the weights they replace (which the
    # int8 backend would refuse beside them) form one batch: a Ctrl-C during the export leaves the folder as it was.
    # An export that fails keeps the trained weights (without any ONNX file of earlier weights beside them).
    failed = None
    # closing: an error or Ctrl-C while cropping ends the loading processes at once, not when the generator is freed
    with OutputBatch(overwrite=overwrite) as outputs, contextlib.closing(iter_loaded(cases, workers)) as loaded:
        paths = train(loaded, out, config=config, device=device,
                      data_description="; ".join(parts), validation_cases=validation_data,
                      command=command, init=networks, sources=sources, earlier_case_names=earlier, outputs=outputs)
        written, stale = list(paths.values()), ["int8"]
        try:
            written += [export_onnx(path, stage=stage, outputs=outputs) for stage, path in paths.items()]
        except WeightsError as error:
            failed, stale = error, PRECISIONS
            for path in paths.values():
                outputs.drop(onnx_path(path))
        removed = [outputs.remove(file) for file in (onnx_path(path, precision) for path in paths.values()
                                                     for precision in stale) if file.exists()]
    print("wrote " + ", ".join(str(path) for path in written))
    if removed:
        print(f"removed {', '.join(map(str, removed))}: the ONNX files of the weights these replace")
    if failed is not None:
        raise WeightsError(f"The weights were written to {out}, but their ONNX export failed ({failed}) They run "
                           f"under PyTorch (--backend torch); once the cause is fixed, 'gastric-propagate export-onnx "
                           f"--weights {shell_word(out)}' makes their ONNX files.")
    if removed:
        print(f"'gastric-propagate export-onnx --int8 --weights {shell_word(out)}' makes new int8 copies")
    return 0


def export_main(*, weights: str, overwrite: bool, int8: bool = False) -> int:
    """``gastric-propagate export-onnx``: proposer.onnx and refiner.onnx beside the checkpoints in the folder
    ``weights`` (and their int8 copies with ``int8``); prints the files it wrote and returns 0."""
    from gastric_propagate.inference.checkpoints import load_checkpoint
    from gastric_propagate.inference.onnx_networks import export_pair, onnx_path
    from gastric_propagate.training.quantization import export_with_int8, exported_from_these

    paths = weights_folder(weights, "--weights")
    for stage, path in paths.items():  # refused in the option's words before any work
        load_checkpoint(path, stage=stage, advice=weights_option_takes("--weights"))
    if not int8 and not overwrite and exported_from_these(paths):  # as 'train' left them: nothing to do
        print(f"{', '.join(str(onnx_path(path)) for path in paths.values())} were exported from these weights "
              "already: nothing to do (--overwrite exports them again; --int8 adds the int8 copies)")
        return 0
    written = export_with_int8(paths, overwrite=overwrite) if int8 else export_pair(paths, overwrite=overwrite)
    print("wrote " + ", ".join(str(path) for path in written))
    return 0


def _check_data_folders(folders: Sequence[str], mixed_generators: Sequence[str] | None) -> None:
    """A folder given twice would count its cases twice; with --mix (``mixed_generators``: the generators asked for,
    else None), two folders of one name, or a folder named as a generator asked for, would be one source whose share
    cannot be set apart."""
    from pathlib import Path

    from gastric_propagate.errors import InputError

    seen: dict[Path, str] = {}
    for folder in folders:
        resolved = Path(folder).resolve()
        if resolved in seen:
            raise InputError(f"--data {folder} is given twice (as {seen[resolved]} first): each case would count "
                             "twice. Give each folder once (--mix sets how often a source is drawn).")
        seen[resolved] = folder
    if mixed_generators is not None:
        options = {"phantom": "--phantoms", "shapes": "--shapes", "thorax": "--thorax", "hypodense": "--hypodense"}
        names = {name: options[name] for name in mixed_generators}
        for folder in folders:
            name = Path(folder).resolve().name
            if name in names:
                raise InputError(f"--data {folder} and {names[name]} are both the source '{name}' in --mix (a "
                                 "folder's source is its name): rename one folder, or put their cases in one.")
            names[name] = f"--data {folder}"


def _parse_mix(values: Sequence[str], sources: set[str]) -> dict[str, float]:
    """'NAME=SHARE' pairs -> {name: share}, normalised to sum to 1; every name must be one of the sources, and every
    source named."""
    from gastric_propagate.errors import InputError

    mix = {}
    for value in values:
        name, _, share = value.partition("=")
        if name in mix:  # the first share would be dropped without a word
            raise InputError(f"--mix names {name} twice ({value}): give each source one share.")
        try:
            mix[name] = float(share)
        except ValueError:
            mix[name] = float("nan")
        if name not in sources or not math.isfinite(mix[name]) or mix[name] < 0:
            raise InputError(f"--mix {value}: give SOURCE=SHARE with a share of 0 or more and SOURCE one of "
                             f"{', '.join(sorted(sources))}.")
    total = sum(mix.values())
    if total <= 0:
        raise InputError("--mix gives no source a share above 0.")
    unnamed = sorted(sources - set(mix))
    if unnamed:  # loaded, then never drawn: and recorded as what the weights were trained on
        raise InputError(f"--mix gives no share to {', '.join(unnamed)}: give each source loaded a share "
                         "(SOURCE=SHARE), or leave out the option that loads it.")
    if abs(total - 1.0) > 1e-6:
        print("--mix shares scaled to sum to 1: " + ", ".join(f"{name} {share / total:.1%}"
                                                              for name, share in mix.items()))
    return {name: share / total for name, share in mix.items()}


def _check_weights_outputs(out: str, init: str | None, overwrite: bool) -> None:
    """Before any work: weights (and their ONNX files, int8 copies included) already in --out are kept unless
    --overwrite, and never replaced by a fine-tuning of themselves (--init naming the --out folder, or the bundled
    weights' folder)."""
    from pathlib import Path

    from gastric_propagate.data.output_checks import check_outputs

    outputs = {f"{stage} {what}": Path(out) / f"{stage}.{suffix}" for stage in ("proposer", "refiner")
               for what, suffix in (("weights", "pt"), ("ONNX file", "onnx"), ("int8 ONNX file", "int8.onnx"))}
    inputs = initial_paths(init).values() if init else ()
    check_outputs(outputs, inputs=inputs, overwrite=overwrite)


def initial_paths(source: str) -> dict:
    """The proposer and refiner checkpoints --init names: 'bundled', or a folder holding both (``weights_folder``)."""
    from gastric_propagate.inference.checkpoints import bundled_weights

    if source == "bundled":
        return {stage: bundled_weights(stage) for stage in ("proposer", "refiner")}
    return weights_folder(source, "--init")


def weights_option_takes(option: str) -> str:
    """What --init and export-onnx's --weights take, for their refusals (not --proposer's words: they take a folder,
    and leaving --init out trains from scratch)."""
    bundled = ", or 'bundled' for the shipped weights (leave --init out to train from scratch)" \
        if option == "--init" else ""
    return (f"{option} takes the folder that holds proposer.pt and refiner.pt (the --out folder of 'gastric-propagate "
            f"train'){bundled}.")


def weights_folder(folder: str, option: str) -> dict:
    """stage -> its checkpoint in the folder ``option`` names; WeightsError saying what the option takes when it
    is a file, does not exist, or lacks one of them."""
    from pathlib import Path

    from gastric_propagate.errors import WeightsError
    from gastric_propagate.inference.checkpoints import NETWORK_STAGES

    path = Path(folder)
    paths = {stage: path / f"{stage}.pt" for stage in NETWORK_STAGES}
    missing = [checkpoint.name for checkpoint in paths.values() if not checkpoint.is_file()]
    if path.is_file():
        problem = f"{option} {folder} is a file, not a folder"
    elif not path.is_dir():
        problem = f"{option} {folder} does not exist"
    elif missing:
        problem = f"{option} {folder} holds no {' and no '.join(missing)}"
    else:
        return paths
    named = path.is_file() and path.name in {checkpoint.name for checkpoint in paths.values()}
    hint = f" Give its folder: {option} {path.parent}." if named else ""
    raise WeightsError(f"{problem}. {weights_option_takes(option)}{hint}")


def _initial_networks(source: str):
    """(proposer, refiner) networks, their preprocessing, a description and every case they learned from, from
    'bundled' or a folder. The description names the two files by their SHA-256 too: a folder's path says nothing of
    what it held then."""
    from gastric_propagate.digests import file_sha256
    from gastric_propagate.data.cases import learned_case_names
    from gastric_propagate.inference.checkpoints import load_checkpoint

    paths = initial_paths(source)
    advice = None if source == "bundled" else weights_option_takes("--init")  # bundled: reinstall
    loaded = {stage: load_checkpoint(path, stage=stage, advice=advice) for stage, path in paths.items()}
    digests = ", ".join(f"{stage} sha256 {file_sha256(path)}" for stage, path in paths.items())
    return ((loaded["proposer"].network, loaded["refiner"].network), loaded["proposer"].preprocessing,
            f"{source} weights ({paths['proposer']}; {digests})",
            learned_case_names(loaded["proposer"].training) | learned_case_names(loaded["refiner"].training))
