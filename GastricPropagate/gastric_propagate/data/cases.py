"""Labelled CT cases for training and evaluation: a folder of image/label pairs, or arrays already in memory.

Cases are listed first (cheap: file headers only) and loaded one at a time with ``Case.load()``,
so that an evaluation over many CTs never holds more than one in memory.

Folder layouts accepted:
    * ``<name>_image.<ext>`` next to ``<name>_label.<ext>``;
    * nnU-Net-like ``imagesTr/<name>_0000.<ext>`` with ``labelsTr/<name>.<ext>``;
where ``<ext>`` is one of ``.nrrd``, ``.nii.gz``, ``.nii``, ``.mha``, ``.mhd``. Any non-zero label
value is tumour. The axial slices are the image's third index (K), as Slicer shows them.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk

from gastric_propagate.errors import InputError
from gastric_propagate.data.volumes import geometry_difference, read_volume, unreadable, volume_grid
from gastric_propagate.data.validation import check_image, check_label_values, check_spacing

logger = logging.getLogger(__name__)

# ".seg.nrrd" before ".nrrd": a segmentation that Slicer saved is read as its label map, named by its stem.
EXTENSIONS = (".nii.gz", ".seg.nrrd", ".nrrd", ".nii", ".mha", ".mhd")


@dataclass(frozen=True)
class CaseData:
    """One loaded case.

    Attributes:
        name: short unique name (the file stem, or the generator and seed of a synthetic case).
        image: CT (z, y, x) in Hounsfield units.
        label: uint8 (z, y, x), 1 = tumour.
        spacing_xyz: voxel spacing (x, y, z) in mm.
    """

    name: str
    image: np.ndarray
    label: np.ndarray
    spacing_xyz: tuple[float, float, float]


@dataclass(frozen=True)
class Case:
    """One case, listed but not loaded.

    Attributes:
        name: short unique name.
        source: where it comes from (the image path, or ``phantom seed N``), for the report.
        seed: the seed of the case's annotation variants (a generated case's seed, or one derived from the name).
        loader: returns the case's ``CaseData``.
    """

    name: str
    source: str
    seed: int
    loader: Callable[[], CaseData]

    def load(self) -> CaseData:
        """Reads (or generates) the case."""
        return self.loader()


def case_from_arrays(name: str, image: np.ndarray, label: np.ndarray, spacing_xyz: tuple[float, float, float],
                     *, seed: int = 0) -> Case:
    """A case from arrays already in memory (tests, notebooks)."""
    data = CaseData(name, image, (np.asarray(label) > 0).astype(np.uint8),
                    tuple(float(s) for s in spacing_xyz))
    return Case(name=name, source="arrays", seed=seed, loader=lambda: data)


def patient_of(name: str) -> str:
    """The patient a case belongs to: its name without a trailing lesion number ``_n<N>`` (``lidc_0415_n3`` is patient
    ``lidc_0415``, as is ``lidc_0415_n1``); any other case is a patient of its own. Splits go by patient."""
    return re.sub(r"_n\d+$", "", name)


def learned_case_names(training: dict) -> set[str]:
    """Every case a checkpoint's networks learned from, by its ``training`` metadata: its own training's cases and
    those of the weights it was fine-tuned from, and theirs (``earlier_case_names``)."""
    return set(training.get("case_names") or ()) | set(training.get("earlier_case_names") or ())


def link_cases(pairs: list[tuple[str, Path, Path]], folder: str | Path) -> None:
    """Links each ``find_pairs`` pair into ``folder`` as ``<name>_image`` / ``<name>_label`` (a split's side, a fold).

    Raises:
        InputError: ``folder`` already holds other files (an earlier split's links would put a case on both sides).
    """
    folder = Path(folder)
    targets = {folder / f"{name}_{kind}{''.join(Path(source).suffixes)}": Path(source).resolve()
               for name, image, label in pairs for source, kind in ((image, "image"), (label, "label"))}
    others = sorted(path.name for path in folder.iterdir() if path not in targets) if folder.is_dir() else []
    if others:
        raise InputError(f"{folder} already holds {len(others)} other file(s) ({', '.join(others[:3])}, ...): an "
                         "earlier split's cases would stay beside this one's. Give a new output folder, or empty it.")
    folder.mkdir(parents=True, exist_ok=True)
    for target, source in targets.items():
        if not target.exists():
            target.symlink_to(source)


def find_pairs(folder: str | Path) -> list[tuple[str, Path, Path]]:
    """Every (name, image, label) pair of a folder, sorted by name, without reading any file.

    Raises:
        InputError: the folder is missing or holds no pair.
    """
    folder = Path(folder)
    if folder.is_file():
        raise InputError(f"The data folder {folder} is a file, not a folder of cases. Give the folder that holds the "
                         f"image/label pairs (e.g. {folder.parent}).")
    if not folder.is_dir():
        raise InputError(f"The data folder {folder} does not exist. Give a folder of image/label pairs.")
    if (folder / "imagesTr").is_dir() and (folder / "labelsTr").is_dir():
        pairs = _nnunet_pairs(folder / "imagesTr", folder / "labelsTr")
    else:
        pairs = _suffix_pairs(folder)
    if not pairs:
        raise InputError(
            f"No image/label pairs found in {folder}. Name them <case>_image.nrrd and <case>_label.nrrd "
            f"(or .nii.gz, .nii, .mha), or use an nnU-Net layout: imagesTr/<case>_0000.nii.gz with "
            f"labelsTr/<case>.nii.gz.")
    return pairs


def folder_cases(folder: str | Path, n_cases: int | None = None, label: int | None = None) -> list[Case]:
    """The image/label pairs of a folder, sorted by name, geometry checked from the file headers.

    Args:
        folder: a folder in one of the layouts of this module's docstring.
        n_cases: keep only the first ``n_cases`` pairs (all when None).
        label: the tumour's value in the label files (an organ 1 and its tumour 2: 2); None: their one positive
            value (a label of several values is refused when loaded).

    Raises:
        InputError: the folder is missing or holds no pair, or a pair's image and label differ in geometry.
    """
    pairs = find_pairs(folder)
    if n_cases is not None:
        pairs = pairs[: int(n_cases)]
    for _name, image_path, label_path in pairs:
        _check_geometry(image_path, label_path)
    return [Case(name=name, source=str(image_path), seed=_seed_from_name(name),
                 loader=_file_loader(name, image_path, label_path, label))
            for name, image_path, label_path in pairs]


def _split_extension(path: Path) -> tuple[str, str] | None:
    name = path.name
    for extension in EXTENSIONS:
        if name.lower().endswith(extension):
            return name[: -len(extension)], extension
    return None


def _files_by_stem(folder: Path) -> dict[str, Path]:
    """The volume files of ``folder`` by name without extension. InputError for a name that two files hold (the
    original label and a corrected one exported as another format: which one is meant cannot be guessed) and for a
    link to nothing (a case would be left out without a word)."""
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        split = _split_extension(path)
        if split is None or path.is_dir() or path.name.startswith("._"):
            continue  # '._*': the metadata files macOS writes beside each file it copies to a foreign disk
        if not path.exists():  # a symbolic link whose target is gone
            raise InputError(f"{path} is a link to {os.readlink(path)}, which does not exist. Restore the file, or "
                             "remove the link from the folder, then run again.")
        if not path.is_file():
            continue
        if split[0] in files:
            raise InputError(f"Two files in {folder} hold the case file {split[0]}: {files[split[0]].name} and "
                             f"{path.name}. Keep one of them (e.g. move the original label out once a corrected one "
                             "is exported), then run again.")
        files[split[0]] = path
    return files


def _suffix_pairs(folder: Path) -> list[tuple[str, Path, Path]]:
    files = _files_by_stem(folder)
    images, labels = ({stem[: -len(suffix)]: path for stem, path in files.items() if stem.endswith(suffix)}
                      for suffix in ("_image", "_label"))
    _warn_unpaired(folder, "image", [path for name, path in images.items() if name not in labels],
                   "<case>_label file beside them")
    _warn_unpaired(folder, "label", [path for name, path in labels.items() if name not in images],
                   "<case>_image file beside them")
    return [(name, path, labels[name]) for name, path in images.items() if name in labels]


def _nnunet_pairs(images: Path, labels: Path) -> list[tuple[str, Path, Path]]:
    label_files = _files_by_stem(labels)
    pairs, unpaired = [], []
    for stem, image_path in _files_by_stem(images).items():
        if stem.endswith("_0000"):
            name = stem[: -len("_0000")]
        elif stem[-5:-4] == "_" and stem[-4:].isdigit():
            continue  # a second channel (_0001, ...): only the first one (the CT) is used
        else:
            name = stem
        label_path = label_files.get(name)
        if label_path is None:
            unpaired.append(image_path)
            continue
        pairs.append((name, image_path, label_path))
    _warn_unpaired(images, "image", unpaired, f"<case>.<ext> label in {labels}")
    paired = {name for name, _, _ in pairs}
    _warn_unpaired(labels, "label", [path for name, path in label_files.items() if name not in paired],
                   f"<case>_0000.<ext> image in {images}")
    return pairs


# The warnings given, each once in a command (cli.main clears it): evaluate lists a folder twice (to count its
# pairs, then to read them).
WARNED: set[str] = set()


def _warn_unpaired(folder: Path, what: str, files: list[Path], partner: str) -> None:
    """One warning for the files of one kind that were skipped for want of their partner."""
    if files:
        shown = ", ".join(path.name for path in files[:5]) + (", ..." if len(files) > 5 else "")
        message = f"{len(files)} {what} file(s) in {folder} have no {partner} and were skipped: {shown}"
        if message not in WARNED:
            WARNED.add(message)
            logger.warning(message)


def _check_geometry(image_path: Path, label_path: Path) -> None:
    # Headers only, so that listing stays cheap; a 4D file of one time point is its volume, as read_volume reads it.
    image = volume_grid(_header(image_path, "image"))
    label = volume_grid(_header(label_path, "label"))
    for path, grid, what in ((image_path, image, "image"), (label_path, label, "label")):
        if grid.GetDimension() != 3:
            several = " holding several volumes (phases or time points): save each as its own file" \
                if grid.GetDimension() > 3 else ""
            if grid.GetDimension() > 3 and path.name.lower().endswith(".seg.nrrd"):
                several = (" (a Slicer segmentation whose segments overlap, saved in layers): export the tumour "
                           "segment alone as a label map on the CT's grid (Segmentations module > Export/import "
                           "models and labelmaps) as " + path.name[: -len(".seg.nrrd")]
                           + ".nrrd, and move the .seg.nrrd out of the folder")
            raise InputError(f"{path} is a {grid.GetDimension()}D {what}{several}; 3D volumes are needed.")
    difference = geometry_difference(image, label)
    if difference:
        raise InputError(
            f"The label {label_path} does not lie on the grid of its image {image_path.name} "
            f"({difference}). Resample the label onto the image (e.g. Slicer's 'Resample Image (BRAINS)' with "
            f"nearest-neighbour interpolation, or export the segmentation with the image as reference geometry).")


def _header(path: Path, what: str) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise unreadable(path, what, error) from error
    return reader


def _file_loader(name: str, image_path: Path, label_path: Path, value: int | None) -> Callable[[], CaseData]:
    # A partial of a module-level function, not a closure: the cases can be read in other processes.
    return functools.partial(_load_pair, name, image_path, label_path, value)


def _load_pair(name: str, image_path: Path, label_path: Path, value: int | None = None) -> CaseData:
    image = read_volume(image_path, "image")
    # What 'segment' refuses is no case to learn from or score either: a header in cm would teach tumours a tenth of
    # their size; a blank or 8-bit volume, NaN voxels.
    check_spacing(image.GetSpacing(), f"The image {image_path}")
    try:
        check_image(sitk.GetArrayViewFromImage(image))
    except InputError as error:
        raise InputError(f"{image_path}: {error}") from error
    label = sitk.GetArrayFromImage(read_volume(label_path, "label"))
    check_label_values(label, f"label {label_path}")
    if not label.any():
        raise InputError(f"The label {label_path} is empty: there is no tumour in it to learn from or evaluate on. "
                         "Remove the case or fix its label.")
    positive = label[label > 0]
    fractions = positive[positive != np.round(positive)] if np.issubdtype(positive.dtype, np.floating) else ()
    if len(fractions):  # with --label too: a value picked from an interpolated label would drop part of the tumour
        raise InputError(f"The label {label_path} holds fractional values (e.g. {fractions[0]:g}), as a label "
                         "resampled with linear interpolation does: its outline is no longer known. Resample the "
                         "label with nearest-neighbour interpolation, then run again.")
    if value is not None:
        label = label == value
        if not label.any():
            raise InputError(f"The label {label_path} holds no voxel of --label {value} (its values: "
                             f"{_shown_values(positive)}): no tumour to learn from or evaluate on. Give the tumour's "
                             "value, or remove the case.")
    elif positive.min() != positive.max():  # an organ and a tumour, say: taking both would learn the organ too
        raise InputError(f"The label {label_path} holds several values ({_shown_values(positive)}); a case's label "
                         "holds 0 for the background and one value for the tumour. An organ labelled beside the "
                         "tumour: give the tumour's value with --label N (or save its label alone); lesions numbered "
                         "apart: set them all to 1; fractions: resample the label with nearest-neighbour "
                         "interpolation. Then run again.")
    direction = np.reshape(image.GetDirection(), (3, 3))
    if abs(direction[2, 2]) < 0.9:
        logger.warning("%s is not acquired axially (direction %s): its K slices are learned as if they were axial, "
                       "which the networks never see in use. Reorient it to axial (Slicer: Orient Scalar Volume, "
                       "the label with it) or leave the case out.", image_path, image.GetDirection())
    return CaseData(name, sitk.GetArrayFromImage(image), (label > 0).astype(np.uint8),
                    tuple(float(s) for s in image.GetSpacing()))


def _shown_values(positive: np.ndarray) -> str:
    """The first few distinct values of a label's non-zero voxels, for a message."""
    return ", ".join(f"{found:g}" for found in np.unique(positive)[:6])


def _seed_from_name(name: str) -> int:
    return zlib.crc32(name.encode())
