"""Self-describing checkpoints: weights + architecture + preprocessing + what they were trained on.

Stored with plain types and tensors only, so ``torch.load(weights_only=True)`` reads them safely. torch is imported
when a checkpoint is saved or loaded, not with this module: the ONNX path (``onnx_networks``) shares its checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gastric_propagate import __version__
from gastric_propagate.data.outputs import OutputBatch
from gastric_propagate.errors import WeightsError
from gastric_propagate.inference.preprocessing import Preprocessing

if TYPE_CHECKING:
    import torch

    from gastric_propagate.inference.networks import UNet2D

FORMAT = "gastric-propagate-checkpoint"
FORMAT_VERSION = 1
#: The two networks, each in a checkpoint of its own (not the progress stages, ``protocol.STAGES``).
NETWORK_STAGES = ("proposer", "refiner")
# What each stage's network reads: the proposer three image slices and the previous mask; the refiner the image and
# the coarse mask on three slices (``propagation.propagate``, ``refinement.refiner_input``).
INPUT_CHANNELS = {"proposer": 4, "refiner": 6}
# A proposer trained with ``train --prompt-channel`` also reads the painted slice's mask at every step: one more.
PROMPT_CHANNELS = INPUT_CHANNELS["proposer"] + 1
BUNDLED_WEIGHTS_DIR = Path(__file__).parent / "weights"
# The largest network a checkpoint may declare (the bundled ones have about 0.5 million parameters; a 2D U-Net of
# 64 base channels and depth 5 has 124 million): 0.8 GB as float32. Larger ones are refused before they are
# built, and files larger than such a network could fill are refused before they are read.
MAX_NETWORK_PARAMETERS = 200_000_000
MAX_FILE_BYTES = 8 * MAX_NETWORK_PARAMETERS
# The preprocessing values a checkpoint may declare: (lowest, highest) of each number (the bundled ones: 1 mm pixels,
# crops a multiple of 16 and at least 64 pixels wide, 2 mm slice steps). Outside them a crop would take all the memory
# (0.01 mm pixels), or not fit the U-Net, or divide by zero.
PREPROCESSING_RANGES = {"pixel_spacing_mm": (0.25, 5.0), "margin_fraction": (0.0, 2.0), "min_margin_mm": (0.0, 200.0),
                        "size_multiple": (1, 64), "min_size": (8, 1024), "prompt_scale_hu": (1.0, 5000.0),
                        "prompt_clip": (0.1, 100.0), "slice_step_mm": (0.1, 20.0)}
WHOLE_NUMBERS = ("size_multiple", "min_size")


def accepted_channels(stage: str) -> tuple[int, ...]:
    """The input channels a ``stage`` network may read."""
    return (INPUT_CHANNELS[stage], PROMPT_CHANNELS) if stage == "proposer" else (INPUT_CHANNELS[stage],)


def bundled_weights(stage: str) -> Path:
    """Path of the weights shipped with the package for ``stage`` ("proposer" or "refiner")."""
    return BUNDLED_WEIGHTS_DIR / f"{stage}.pt"


@dataclass
class Checkpoint:
    """A loaded stage: the network (in eval mode) and how it expects its input."""

    stage: str
    network: UNet2D
    preprocessing: Preprocessing
    training: dict
    path: Path | None = None

    @property
    def in_channels(self) -> int:
        """The channels the network reads (a hand-made module without a ``config``, as in tests: the stage's own)."""
        return getattr(self.network, "config", {}).get("in_channels", INPUT_CHANNELS[self.stage])


def save_checkpoint(path: str | Path, *, stage: str, network: UNet2D, preprocessing: Preprocessing,
                    training: dict, outputs: OutputBatch | None = None) -> Path:
    """Writes a checkpoint; weights are stored as float16 to keep the bundled files small, each tensor that float16
    cannot hold (a value beyond its largest, 65504: a deep layer's batch-norm variance) as float32.

    The file appears whole or not at all: staged in ``outputs`` (renamed into place together with the batch's
    other outputs, e.g. the proposer and the refiner of one training) or, without a batch, on its own.
    """
    import torch

    if stage not in NETWORK_STAGES:
        raise ValueError(f"stage must be one of {NETWORK_STAGES}, not {stage!r}")
    state = {name: _compact(tensor).cpu() for name, tensor in network.state_dict().items()}
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "stage": stage,
        "architecture": {"name": "UNet2D", "config": dict(network.config)},
        "preprocessing": preprocessing.to_dict(),
        "training": training,
        "state_dict": state,
    }
    if outputs is not None:
        return outputs.file(path, lambda temporary: torch.save(payload, temporary))
    with OutputBatch() as alone:
        return alone.file(path, lambda temporary: torch.save(payload, temporary))


def _compact(tensor: torch.Tensor) -> torch.Tensor:
    """float16 where every value fits (a float32 value beyond float16's range would be stored as infinity)."""
    import torch

    if not tensor.is_floating_point():
        return tensor
    fits = tensor.numel() == 0 or float(tensor.detach().abs().max()) <= float(torch.finfo(torch.float16).max)
    return tensor.half() if fits else tensor.float()


def weights_advice(path: Path, stage: str) -> str:
    """What to do about unusable weights: restore the bundled ones, or give the user's own again."""
    try:
        bundled = path.resolve() == bundled_weights(stage).resolve()
    except OSError:
        bundled = False
    if bundled:
        return ("Reinstall GastricPropagate to restore the bundled weights, or train your own with "
                "'gastric-propagate train'.")
    return (f"Give the {stage}.pt that 'gastric-propagate train' wrote (in its --out folder), or leave the option out "
            "for the bundled weights.")


def mixed_training_warning(proposer: Checkpoint, refiner: Checkpoint) -> str | None:
    """A warning when the two networks come from different training runs (the refiner learned to correct its own
    proposer's output, ``train.train``), e.g. ``--proposer`` given alone beside the bundled refiner; None when they
    are one run's pair, or either does not say when it was trained."""
    dates = [(checkpoint.training or {}).get("date") for checkpoint in (proposer, refiner)]
    if None in dates or dates[0] == dates[1]:
        return None
    return (f"The proposer ({proposer.path or 'in memory'}, trained {dates[0]}) and the refiner "
            f"({refiner.path or 'in memory'}, trained {dates[1]}) come from different 'gastric-propagate train' runs; "
            "the refiner learned to correct its own proposer's output. Give both files of one training "
            "(--proposer and --refiner from the same --out folder).")


def load_checkpoint(path: str | Path, *, stage: str, device: torch.device | str = "cpu",
                    advice: str | None = None) -> Checkpoint:
    """Loads and checks a checkpoint; raises WeightsError saying what to do when it cannot be used: ``advice``, or
    by default ``weights_advice`` (what --proposer / --refiner take; train --init and export-onnx --weights take a
    folder and give their own)."""
    import torch

    from gastric_propagate.inference.networks import UNet2D

    path = Path(path)
    retrain = advice or weights_advice(path, stage)
    if path.is_dir():
        raise WeightsError(f"The {stage} weights path {path} is a folder; give the file in it, "
                           f"{path / (stage + '.pt')} ('gastric-propagate train' writes both networks' files there).")
    if not path.is_file():
        raise WeightsError(f"The {stage} weights file {path} does not exist. {retrain}")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise WeightsError(f"The {stage} weights file {path} is {path.stat().st_size / 1e9:.1f} GB, larger than any "
                           f"network this tool builds ({MAX_FILE_BYTES / 1e9:.1f} GB at most; the bundled files are "
                           f"about 1 MB): it is not a GastricPropagate checkpoint. {retrain}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError as error:  # the file is fine; this user may not read it
        raise WeightsError(f"The {stage} weights file {path} cannot be opened: permission denied. Let this user read "
                           f"it (e.g. chmod a+r '{path}'), or copy it somewhere you can read.") from error
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise WeightsError(f"The {stage} weights file {path} cannot be read ({error.__class__.__name__}): it "
                           f"is corrupt or not a GastricPropagate checkpoint. {retrain}") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise WeightsError(f"{path} is not a GastricPropagate checkpoint. {retrain}")
    if payload.get("format_version") != FORMAT_VERSION:
        raise WeightsError(f"{path} has checkpoint format {payload.get('format_version')}, this version reads "
                           f"format {FORMAT_VERSION}. {retrain}")
    if payload.get("stage") != stage:
        raise WeightsError(f"{path} holds {payload.get('stage')!r} weights, but {stage!r} weights were expected: "
                           "check that the proposer and refiner files are not swapped.")
    architecture = payload.get("architecture", {})
    if architecture.get("name") != "UNet2D":
        raise WeightsError(f"{path} uses architecture {architecture.get('name')!r}, which this version does not "
                           f"know. {retrain}")
    try:
        config = architecture["config"]
        parameters = _declared_parameters(config)
        stored = sum(int(tensor.numel()) for tensor in payload["state_dict"].values())
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise WeightsError(f"{path} declares a {stage} network this version cannot build ({error}). "
                           f"{retrain}") from error
    if config["in_channels"] not in accepted_channels(stage):
        raise WeightsError(f"{path} declares a {stage} network reading {config['in_channels']} channels, but the "
                           f"{stage} is given {' or '.join(map(str, accepted_channels(stage)))}: it was not made by "
                           f"'gastric-propagate train'. {retrain}")
    if parameters > MAX_NETWORK_PARAMETERS:
        raise WeightsError(
            f"{path} declares a {stage} network of {parameters / 1e6:,.0f} million parameters ({_describe(config)}): "
            f"building it would take about {4 * parameters / 1e9:,.1f} GB of memory, more than the "
            f"{MAX_NETWORK_PARAMETERS / 1e6:,.0f} million parameters ({4 * MAX_NETWORK_PARAMETERS / 1e9:.1f} GB) "
            f"this tool builds (the bundled networks have about 0.5 million). The file is corrupt or was not made "
            f"by 'gastric-propagate train'. {retrain}")
    if parameters > stored:
        raise WeightsError(f"The {stage} weights in {path} do not fit their declared architecture "
                           f"({_describe(config)} has {parameters:,} parameters; the file holds {stored:,} values). "
                           f"{retrain}")
    try:
        network = UNet2D(**config)
        network.load_state_dict({k: v.float() if v.is_floating_point() else v
                                 for k, v in payload["state_dict"].items()})
    except (KeyError, TypeError, RuntimeError) as error:
        raise WeightsError(f"The {stage} weights in {path} do not fit their declared architecture ({error}). "
                           f"{retrain}") from error
    preprocessing = checked_preprocessing(payload, path, stage, retrain)
    non_finite = [name for name, tensor in payload["state_dict"].items()
                  if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if non_finite:
        raise WeightsError(f"The {stage} weights in {path} hold NaN or Inf values ({len(non_finite)} of "
                           f"{len(payload['state_dict'])} tensors, e.g. {non_finite[0]}): the training diverged or the "
                           f"file is corrupt, and such a network segments nothing it can be trusted on. {retrain}")
    network.to(device).eval()
    return Checkpoint(stage=stage, network=network, preprocessing=preprocessing,
                      training=dict(payload.get("training", {})), path=path)


def checked_preprocessing(description: dict, path: Path, stage: str, what_to_do: str) -> Preprocessing:
    """The preprocessing a checkpoint's (or an ONNX file's) ``description`` declares; WeightsError, ending with
    ``what_to_do``, when it is missing or holds values this version cannot use."""
    try:
        preprocessing = Preprocessing.from_dict(description["preprocessing"])
        problem = _preprocessing_problem(preprocessing)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        problem = str(error)
    if problem:
        raise WeightsError(f"{path} declares {stage} preprocessing this version cannot use ({problem}): the file is "
                           f"corrupt or was edited by hand. {what_to_do}")
    return preprocessing


def _declared_parameters(config) -> int:
    """Parameters of the UNet2D a checkpoint's config declares, without building it; TypeError or ValueError for a
    config UNet2D would not take."""
    if not isinstance(config, dict) or "in_channels" not in config or \
            set(config) - {"in_channels", "base_channels", "depth"}:
        raise TypeError(f"architecture config {config!r}")
    if any(isinstance(value, bool) or not isinstance(value, int) or value < 1 for value in config.values()):
        raise ValueError(f"architecture config {config!r}: every value must be a whole number of 1 or more")
    from gastric_propagate.inference.networks import UNet2D

    return UNet2D.parameter_count(**config)


def _preprocessing_problem(preprocessing: Preprocessing) -> str | None:
    """What is wrong with a checkpoint's preprocessing values, or None."""
    for name, (low, high) in PREPROCESSING_RANGES.items():
        value = getattr(preprocessing, name)
        if value is None and name == "slice_step_mm":  # the CT's own slices
            continue
        whole = name in WHOLE_NUMBERS
        if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)) \
                or not math.isfinite(value) or not low <= value <= high:
            kind = "a whole number" if whole else "a number"
            return f"{name} {value!r}; it must be {kind} from {low:g} to {high:g}"
    window = preprocessing.hu_window
    if len(window) != 2 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in window) \
            or not window[0] < window[1]:
        return f"hu_window {window!r}; it must be two finite HU values, the lower first"
    return None


def _describe(config: dict) -> str:
    return ", ".join(f"{name} {value}" for name, value in config.items())
