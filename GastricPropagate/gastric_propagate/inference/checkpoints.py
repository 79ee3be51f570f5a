"""Self-describing checkpoints: weights + architecture + preprocessing + what they were trained on.

Stored with plain types and tensors only, so ``torch.load(weights_only=True)`` reads them safely.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from gastric_propagate import __version__
from gastric_propagate.errors import WeightsError
from gastric_propagate.inference.networks import UNet2D
from gastric_propagate.inference.preprocessing import Preprocessing

FORMAT = "gastric-propagate-checkpoint"
FORMAT_VERSION = 1
STAGES = ("proposer", "refiner")
BUNDLED_WEIGHTS_DIR = Path(__file__).parent / "weights"


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


def save_checkpoint(path: str | Path, *, stage: str, network: UNet2D, preprocessing: Preprocessing,
                    training: dict) -> Path:
    """Writes a checkpoint; weights are stored as float16 to keep the bundled files small."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, not {stage!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {name: (t.half() if t.is_floating_point() else t).cpu() for name, t in network.state_dict().items()}
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
    temporary = path.with_suffix(path.suffix + ".partial")
    torch.save(payload, temporary)
    temporary.replace(path)
    return path


def load_checkpoint(path: str | Path, *, stage: str, device: torch.device | str = "cpu") -> Checkpoint:
    """Loads and checks a checkpoint; raises WeightsError saying what to do when it cannot be used."""
    path = Path(path)
    retrain = ("Reinstall GastricPropagate to restore the bundled weights, or train your own with "
               "'gastric-propagate train' and pass them with --proposer/--refiner.")
    if not path.is_file():
        raise WeightsError(f"The {stage} weights file {path} does not exist. {retrain}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
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
        network = UNet2D(**architecture["config"])
        network.load_state_dict({k: v.float() if v.is_floating_point() else v
                                 for k, v in payload["state_dict"].items()})
        preprocessing = Preprocessing.from_dict(payload["preprocessing"])
    except (KeyError, TypeError, RuntimeError) as error:
        raise WeightsError(f"The {stage} weights in {path} do not fit their declared architecture ({error}). "
                           f"{retrain}") from error
    network.to(device).eval()
    return Checkpoint(stage=stage, network=network, preprocessing=preprocessing,
                      training=dict(payload.get("training", {})), path=path)
