"""The built-in example: a held-out phantom, its largest cross-section painted, segmented like a user's CT."""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk

from gastric_propagate.data.annotation import annotation_from_label
from gastric_propagate.file_segmentation import MANUAL_FULL_OUTLINE_SECONDS, MANUAL_ONE_SLICE_SECONDS, segment_files
from gastric_propagate.data.io import write_image, write_mask
from gastric_propagate.metrics import dice, volume_ml
from gastric_propagate.synthetic.phantom import HELD_OUT_SEED_START, make_phantom
from gastric_propagate.inference.pipeline import Segmenter

DEMO_SEED = HELD_OUT_SEED_START + 7


def demo_outputs(out_dir: str | Path) -> dict[str, Path]:
    """The files the demo writes into ``out_dir``: the example's CT, truth and painted slice, the result and the
    report."""
    out_dir = Path(out_dir)
    paths = {name: out_dir / f"{name}.nrrd" for name in ("ct", "truth", "annotation", "result")}
    paths["report"] = out_dir / "report.json"
    return paths


def run_demo(out_dir: str | Path, *, seed: int | None = None, segmenter: Segmenter | None = None) -> dict:
    """Writes the example CT, truth and painted slice to ``out_dir``, segments it, prints and returns the figures."""
    out_dir = Path(out_dir)
    seed = DEMO_SEED if seed is None else seed
    phantom = make_phantom(seed)
    image, truth = phantom.arrays()
    annotation = annotation_from_label(truth)
    paths = demo_outputs(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_image(phantom.image, paths["ct"])
    write_mask(truth, phantom.image, paths["truth"])
    write_mask(annotation, phantom.image, paths["annotation"])

    segmenter = segmenter or Segmenter()
    # The demo's folder is its own: re-running replaces its earlier result.
    report = segment_files(paths["ct"], paths["annotation"], paths["result"], report_path=paths["report"],
                           segmenter=segmenter, overwrite=True)
    result = sitk.GetArrayFromImage(sitk.ReadImage(str(paths["result"])))
    report["dice_vs_truth"] = round(dice(result, truth), 4)
    painted = report["painted_slices"][0]
    size = phantom.image.GetSize()
    spacing = phantom.spacing
    print(f"Built-in example: synthetic abdominal CT (phantom seed {seed}, {phantom.phase} phase, "
          f"{size[0]}x{size[1]}x{size[2]} voxels, {spacing[0]:.2f}x{spacing[1]:.2f}x{spacing[2]:.2f} mm)")
    print(f"Painted: the tumour's largest cross-section on axial slice {painted}")
    print(f"Result:  {report['volume_ml']:.1f} mL on slices {report['slices']['first']}-{report['slices']['last']} "
          f"(truth {volume_ml(truth, spacing):.1f} mL); Dice vs truth {report['dice_vs_truth']:.3f}")
    print(f"Time:    {report['seconds']:.2f} s on {report['device']}, against about "
          f"{MANUAL_ONE_SLICE_SECONDS} s to paint the one slice and about {MANUAL_FULL_OUTLINE_SECONDS // 60} min "
          "for a full manual 3D outline")
    print(f"Files:   {out_dir}/ (ct, truth, annotation, result .nrrd; report.json): open them in 3D Slicer")
    return report
