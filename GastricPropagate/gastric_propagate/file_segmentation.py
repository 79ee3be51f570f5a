"""The ``segment`` contract on files: CT + one-slice label in, a label on the CT's grid and a report out."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk

from gastric_propagate import __version__
from gastric_propagate.errors import InputError
from gastric_propagate.data.annotation import describe_slices, occupied_box, painted_slices, side_view
from gastric_propagate.data.mask_boxes import Grid, box_image, on_grid, reordered_on_grid
from gastric_propagate.data.output_checks import check_outputs
from gastric_propagate.data.outputs import OutputBatch
from gastric_propagate.data.validation import check_image_shape, check_spacing
from gastric_propagate.data.volumes import geometry_difference, read_volume, slice_axis
from gastric_propagate.inference.advice import not_axial_advice
from gastric_propagate.metrics import volume_ml
from gastric_propagate.inference.pipeline import PropagationOptions, Segmenter
from gastric_propagate.inference.result import SegmentationResult, slice_span
from gastric_propagate.protocol import STAGE_PROPOSER, STAGE_READ, STAGE_REFINER, STAGE_WRITE, Report


def segment_files(image_path: str | Path, annotation_path: str | Path, output_path: str | Path, *,
                  report_path: str | Path | None = None, options: PropagationOptions = PropagationOptions(),
                  segmenter: Segmenter | None = None, device: str = "auto", overwrite: bool = False,
                  progress=None, stages: Callable[[str, int, int], None] | None = None,
                  read_image: Callable[[str | Path], tuple[sitk.Image, object]] | None = None,
                  crop_output: bool = False, label: int | None = None) -> dict:
    """Runs the pipeline on files and writes the mask (and the report); returns the report.

    The output paths are checked before anything is read (format, folder, existing files, not an input, not each
    other); the mask and the report are then written together at the end, whole, or not at all. Existing outputs
    are refused unless ``overwrite``, also one that appeared while the run was working (a concurrent run to the
    same path); an input file is never overwritten.
    ``stages``, when given, is called with (stage, done, total) as the run goes (``protocol.STAGES``): "read",
    "proposer" (once per propagated slice), "refiner", "write". ``read_image`` reads the CT instead of
    ``read_volume`` and names its voxels (the worker's ``LastImage.read``: it keeps the last CT, and its name is the
    file's identity on disk), so that the pipeline can serve registration walks of earlier runs again.

    The annotation may cover part of the CT's grid (a box of its voxels, e.g. the painted slice alone); ``crop_output``
    writes the mask as the box that holds the tumour, on the CT's grid (``data.mask_boxes``), not as the whole grid.
    ``label``: propagate this label value of the annotation alone; without it, an annotation holding several label
    values is refused (a label map of several structures, not one painted tumour).
    """
    stage = stages or (lambda name, done, total: None)
    check_outputs({"output": output_path, "report": report_path}, inputs=(image_path, annotation_path),
                  overwrite=overwrite, mask_outputs=("output",))
    stage(STAGE_READ, 0, 1)
    image, image_key = read_image(image_path) if read_image is not None else (read_volume(image_path, "image"), None)
    check_image_shape(image.GetSize()[::-1])  # a single DICOM image: said so, not that the annotation does not fit
    check_spacing(image.GetSpacing(), f"The image {image_path}")  # a header in metres: said before the rest
    annotation = read_volume(annotation_path, "annotation")
    painted = _one_label(_painted_on_grid(annotation, image, annotation_path), label, annotation_path)
    _check_not_painted_in_a_side_view(painted, image, annotation_path)  # with keyframes too: never a set of anchors
    segmenter = segmenter or Segmenter(device=device)
    stage(STAGE_READ, 1, 1)

    def on_slice(done: int, total: int) -> None:
        if progress is not None:
            progress(done, total)
        stage(STAGE_PROPOSER, done, total)
        if done >= total and options.use_refiner:
            stage(STAGE_REFINER, 0, 1)

    result = segmenter.segment(sitk.GetArrayViewFromImage(image), image.GetSpacing(),
                               painted, options, progress=on_slice,
                               image_key=image_key)
    if options.use_refiner:
        stage(STAGE_REFINER, 1, 1)
    stage(STAGE_WRITE, 0, 1)
    report = build_report(result, image.GetSpacing(), segmenter, options)
    orientation = slice_axis(image)
    if orientation != "axial":  # propagated along the volume's own slices, as painted: said, not refused
        report["advice"].append(not_axial_advice(orientation).to_dict())
    report.update({"image": str(image_path), "annotation": str(annotation_path), "output": str(output_path)})
    # Without overwrite, a file that appeared at an output path during the run (another run's) is not replaced.
    with OutputBatch(overwrite=overwrite) as outputs:
        if crop_output:
            outputs.image(box_image(result.mask, occupied_box(result.mask), Grid.of(image)), output_path)
        else:
            outputs.mask(result.mask, image, output_path)
        if report_path is not None:
            outputs.json(report, report_path)
    stage(STAGE_WRITE, 1, 1)
    return report


def _painted_on_grid(annotation: sitk.Image, image: sitk.Image, path) -> np.ndarray:
    """The annotation's voxels on the CT's grid: the whole grid, or a box of its voxels placed where it lies."""
    difference = geometry_difference(image, annotation)
    if difference and annotation.GetSize() != image.GetSize():
        try:
            return on_grid(annotation, Grid.of(image))
        except ValueError as error:
            difference = str(error)
    if not difference:
        return sitk.GetArrayViewFromImage(annotation)
    try:  # the CT's own voxels stored in another axis order or direction: reordered, nothing lost
        return reordered_on_grid(annotation, Grid.of(image))
    except ValueError:
        raise InputError(f"The annotation {path} is not on the image's voxel grid ({difference}). Save "
                         "the label map with the CT as its reference geometry (in Slicer: export the segment with "
                         "the CT as reference volume), or resample it onto the CT, then run again.") from None


def _check_not_painted_in_a_side_view(painted: np.ndarray, image: sitk.Image, path) -> None:
    """InputError, saying to paint in the axial view, for an annotation painted in the sagittal or coronal view; or,
    on a sagittal or coronal series painted in the axial view, to reorient the CT to axial slices first."""
    view = side_view(painted, np.reshape(image.GetDirection(), (3, 3)))
    orientation = slice_axis(image)
    if view is not None and orientation != "axial":  # a sagittal or coronal series: its slices are not what to paint
        slices = painted_slices(painted > 0)
        raise InputError(f"The CT has {orientation} slices, and the annotation {path} is painted in the {view} view "
                         f"across {len(slices)} of them ({describe_slices(slices)}). The networks propagate along the "
                         "CT's own slices and learned axial ones: reorient the CT to axial slices (in Slicer: Orient "
                         "Scalar Volume, orientation Axial), paint the tumour's largest cross-section on one slice of "
                         "it, then run again.")
    if view in ("sagittal", "coronal"):  # ("axial" on an axial CT: only a plane tilted about 45 degrees; not refused)
        slices = painted_slices(painted > 0)
        raise InputError(f"The annotation {path} is painted across {len(slices)} axial slices "
                         f"({describe_slices(slices)}) in one {view} plane, or a brush's width of them: it was painted "
                         f"in the {view} view. Paint the tumour's largest cross-section on one axial slice, in the "
                         "axial view, then run again.")


def _one_label(annotation: np.ndarray, label: int | None, path) -> np.ndarray:
    """The painted voxels: those of ``label``, or of the annotation's one label value; InputError, naming the values,
    slices and what to do, when it holds several and none was chosen."""
    painted = annotation[np.flatnonzero(annotation.reshape(annotation.shape[0], -1).any(axis=1))]  # a few slices
    values = np.unique(painted[painted > 0])  # not a pass over the whole CT's grid: no second volume in memory
    lowest = float(np.nanmin(painted)) if painted.size else 0.0
    if label is None and lowest < 0 and values.size > 1:  # HU: its positive values are tissue, not labels to choose
        raise InputError(f"The annotation {path} holds {values.size} positive values and negative ones down to "
                         f"{lowest:g}: it looks like a CT image, not a label map of the painted slice. Give the CT "
                         "to --image and the painted label map (0 for the background, 1 on the painted slice) to "
                         "--annotation, then run again.")
    fractions = values[np.isfinite(values) & (values != np.round(values))]  # NaN and Inf: check_annotation's to say
    if fractions.size:  # as train and evaluate: an outline smoothed into fractions is not the one drawn
        raise InputError(f"The annotation {path} holds fractional values (e.g. {fractions[0]:g}), as a label "
                         "resampled with linear interpolation does: its painted outline is no longer known. Resample "
                         "it with nearest-neighbour interpolation (or export the segment as a label map on the CT's "
                         "grid), then run again.")
    if label is not None:
        chosen = annotation == label
        if not chosen.any():
            found = np.unique(annotation[annotation > 0])
            raise InputError(f"The annotation {path} holds no voxel of label {label:g} (its labels: "
                             f"{', '.join(f'{v:g}' for v in found[:8]) or 'none'}). Give one of them to --label.")
        return chosen
    if values.size <= 1:
        return annotation
    slices = painted_slices(annotation)
    if len(slices) == 1 and values.size > 8:  # one slice of many values: a 0-255 mask resampled, not structures
        raise InputError(f"The annotation {path} holds {values.size} values on slice {slices[0]} alone, as a painted "
                         "slice resampled with linear interpolation (or saved as grey levels) does: its outline is no "
                         "longer known. Resample it with nearest-neighbour interpolation (or export the segment as a "
                         "label map on the CT's grid), then run again.")
    described = "; ".join(f"{v:g} on slice(s) {describe_slices(painted_slices(annotation == v), limit=4)}"
                          for v in values[:6])
    raise InputError(f"The annotation {path} holds {values.size} label values ({described}): a label map of several "
                     "structures, not one painted tumour. Give --label N to propagate label N alone, or save the "
                     "painted tumour's cross-section alone as the annotation, then run again.")


def build_report(result: SegmentationResult, spacing_xyz, segmenter: Segmenter | None = None,
                 options: PropagationOptions | None = None) -> dict:
    """The run's figures as plain JSON-ready values (``protocol.Report.to_json``).

    Every slice the report names agrees with the final mask: the slice range is the mask's, the slices' confidence,
    the least confident slices and the slices to review are those within it, and a stop reason that names a slice
    the final mask contradicts (the vote or the refiner went further, or less far, than the proposer) is replaced by
    where the result ends and what ended it there.
    """
    slice_range = result.slice_range()
    first, last = slice_range or (0, -1)
    inside = [k for k in sorted(result.slice_confidence) if first <= k <= last]
    weights = None
    used = ("proposer", "refiner") if options is None or options.use_refiner else ("proposer",)
    if segmenter is not None:  # the networks that ran: a run without the refiner names no refiner
        weights = {stage: str(getattr(segmenter, stage).path or "in memory") for stage in used}
    timings = {name: round(value, 4) for name, value in result.timings.items()
               if name != "refiner" or "refiner" in used}
    return Report(
        version=__version__,
        volume_ml=round(volume_ml(result.mask, spacing_xyz), 3),
        slices={"first": slice_range[0], "last": slice_range[1],
                "count": slice_range[1] - slice_range[0] + 1} if slice_range else None,
        painted_slices=result.anchor_slices,
        seconds=round(result.seconds, 3),
        device=result.device,
        timings_seconds=timings,
        slice_confidence={k: round(result.slice_confidence[k], 4) for k in inside},
        least_confident_slices=[k for k in result.least_confident_slices(len(result.slice_confidence))
                                if first <= k <= last][:5],
        slices_to_review=[k for k in result.slices_to_review() if first <= k <= last],
        review_reasons={k: reasons for k, reasons in result.review_reasons().items() if first <= k <= last},
        stop_reasons=stop_reasons_on_mask(result.stop_reasons, slice_range, result.mask.shape[0], result.consensus,
                                          slice_span(result.proposer_mask)),
        # what the reader should see before trusting the result: kind, sentence and the figures it names
        advice=[advice.to_dict() for advice in result.advice],
        consensus=result.consensus,  # the vote of the networks, registration and the copied outline
        voxels=int(np.count_nonzero(result.mask)),
        options=None if options is None else dataclasses.asdict(options),
        weights=weights,
    ).to_json()


# What a stop reason says of the slice it names: that the result ends on it ("stopped after slice 12", "reached the
# slice limit (12)", "stopped at slice 12: ..."), or that it lies beyond the result's end ("tumour ended: the proposer
# found 3 mm2 on slice 13", "stopped before slice 13", "ended before slice 13").
_ENDS_ON = re.compile(r"(?:after|at) slice (\d+)|slice limit \((\d+)\)")
_BEYOND = re.compile(r"(?:on|before) slice (\d+)")


def stop_reasons_on_mask(reasons: dict[str, str], slice_range: tuple[int, int] | None, depth: int,
                         consensus: bool, proposer_range: tuple[int, int] | None = None) -> dict[str, str]:
    """The propagation's stop reasons ("up" / "down"), each kept when the final mask agrees with the slice it names
    and ends where the proposer's own mask (``proposer_range``, when given) ends, else replaced by the slice where the
    result ends and what ended it there (a reason naming the slice beyond the proposer's end is no reason for a
    result that the vote ended several slices before it)."""
    if slice_range is None:
        return dict(reasons)
    agreed = {}
    for direction, reason in reasons.items():
        end, outward = (slice_range[1], 1) if direction == "up" else (slice_range[0], -1)
        ends_on = [int(a or b) for a, b in _ENDS_ON.findall(reason)]
        beyond = [int(k) for k in _BEYOND.findall(reason)]
        named = ends_on + beyond
        edge = end == (depth - 1 if outward > 0 else 0)
        proposer_end = None if proposer_range is None else proposer_range[1 if outward > 0 else 0]
        if all(k == end for k in ends_on) and all((k - end) * outward > 0 for k in beyond) and (
                edge or "edge of the volume" not in reason) and proposer_end in (None, end):
            agreed[direction] = reason
            continue
        what = ("the vote of the networks, registration and the copied outline" if consensus
                else "the refiner and the cut to what connects to the painted voxels")
        # Where the proposer itself ended: its own mask's end, else the slice its reason names.
        reference = proposer_end if proposer_end not in (None, end) else (named[0] if named else None)
        networks = "" if reference is None else (
            f" (the proposer alone went {'further' if (reference - end) * outward > 0 else 'less far'})")
        agreed[direction] = f"the result ends on slice {end}, where {what} ends it{networks}"
    return agreed
