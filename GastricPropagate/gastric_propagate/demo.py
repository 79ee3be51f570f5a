"""The built-in example: a held-out phantom, its largest cross-section painted, segmented like a user's CT.

Re-runnable into the same folder: it replaces the files an earlier demo wrote (listed with their SHA-256 in its
manifest), never a file the user put there or changed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import SimpleITK as sitk

from gastric_propagate.data.annotation import annotation_from_label
from gastric_propagate.data.output_checks import check_outputs, check_writable_folder
from gastric_propagate.data.outputs import OutputBatch
from gastric_propagate.digests import file_sha256
from gastric_propagate.errors import InputError
from gastric_propagate.file_segmentation import build_report
from gastric_propagate.metrics import dice, volume_ml
from gastric_propagate.protocol import MANUAL_FULL_OUTLINE_SECONDS, MANUAL_ONE_SLICE_SECONDS
from gastric_propagate.synthetic.phantom import HELD_OUT_SEED_START, make_phantom
from gastric_propagate.inference.pipeline import PropagationOptions, Segmenter

DEMO_SEED = HELD_OUT_SEED_START + 7
# The list of the files a demo run wrote, with their SHA-256, so that the next run knows which files it may replace.
MANIFEST = "demo-files.json"
WRITTEN_BY = "gastric-propagate demo"


def demo_outputs(out_dir: str | Path) -> dict[str, Path]:
    """The files the demo writes into ``out_dir``: the example's CT, truth and painted slice, the result, the
    report, and the manifest listing them."""
    out_dir = Path(out_dir)
    paths = {name: out_dir / f"{name}.nrrd" for name in ("ct", "truth", "annotation", "result")}
    paths["report"] = out_dir / "report.json"
    paths["manifest"] = out_dir / MANIFEST
    return paths


def earlier_demo_files(out_dir: str | Path) -> set[Path]:
    """The demo's files in ``out_dir`` that an earlier demo run wrote and nobody changed since: those its manifest
    lists with the SHA-256 they still have (and the manifest itself). Any other file is the user's."""
    paths = demo_outputs(out_dir)
    try:
        manifest = json.loads(paths["manifest"].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    if not isinstance(manifest, dict) or manifest.get("written_by") != WRITTEN_BY or \
            not isinstance(manifest.get("sha256"), dict):
        return set()
    ours = {paths["manifest"]}
    for path in paths.values():
        listed = manifest["sha256"].get(path.name)
        if listed and path.is_file() and not path.is_symlink() and file_sha256(path) == listed:
            ours.add(path)
    return ours


def check_demo_outputs(out_dir: str | Path, overwrite: bool = False) -> set[Path]:
    """Before any work: InputError when ``out_dir`` holds a file of the demo's names that an earlier demo did not
    write, or that was changed since (unless ``overwrite``). Returns the files the demo may replace."""
    paths = demo_outputs(out_dir)
    check_outputs({f"{name} file": path for name, path in paths.items()}, overwrite=True)  # folders, links, devices
    ours = earlier_demo_files(out_dir)
    theirs = [path for path in paths.values() if path.exists() and path not in ours]
    if theirs and not overwrite:
        names = ", ".join(path.name for path in theirs)
        raise InputError(f"The folder {Path(out_dir)} holds {names}, which an earlier demo did not write or which "
                         "was changed since: the demo does not replace them. Choose another --out, or pass "
                         "--overwrite to replace them.")
    return set(paths.values()) if overwrite else ours


def demo_main(*, out: str, seed: int | None, overwrite: bool, load_segmenter: Callable[[], Segmenter]) -> int:
    """``gastric-propagate demo``: checks the folder and the files it would replace, then loads the weights
    (``load_segmenter``) and runs the demo; returns 0."""
    check_writable_folder(out, f"the output folder {out}")
    check_demo_outputs(out, overwrite)  # before the weights load
    run_demo(out, seed=seed, segmenter=load_segmenter(), overwrite=overwrite)
    return 0


def run_demo(out_dir: str | Path, *, seed: int | None = None, segmenter: Segmenter | None = None,
             overwrite: bool = False) -> dict:
    """Segments the example and writes its CT, truth, painted slice, result and report to ``out_dir``; prints and
    returns the figures.

    The files appear together, or none. They replace those of an earlier demo run (recognised by the manifest it
    wrote, ``MANIFEST``); any other file of the same name is refused (InputError) unless ``overwrite``.
    """
    out_dir = Path(out_dir)
    replaceable = check_demo_outputs(out_dir, overwrite)
    seed = DEMO_SEED if seed is None else seed
    phantom = make_phantom(seed)
    image, truth = phantom.arrays()
    annotation = annotation_from_label(truth)
    paths = demo_outputs(out_dir)

    segmenter = segmenter or Segmenter()
    options = PropagationOptions()  # the defaults, as a plain 'segment' runs them: recorded in the report
    result = segmenter.segment(image, phantom.spacing, annotation, options)
    report = build_report(result, phantom.spacing, segmenter, options)
    report.update({"image": str(paths["ct"]), "annotation": str(paths["annotation"]), "output": str(paths["result"])})
    digests = {}

    def image_file(name: str, written: sitk.Image) -> None:
        def write(temporary: Path) -> None:
            sitk.WriteImage(written, str(temporary), useCompression=True)
            digests[paths[name].name] = file_sha256(temporary)

        outputs.file(paths[name], write)

    def label(array) -> sitk.Image:
        written = sitk.GetImageFromArray(array.astype("uint8"))
        written.CopyInformation(phantom.image)
        return written

    # A file that appeared during the run (another program's) is kept, unless overwrite.
    with OutputBatch(overwrite=overwrite, replaceable=replaceable) as outputs:
        image_file("ct", phantom.image)
        image_file("truth", label(truth))
        image_file("annotation", label(annotation))
        image_file("result", label(result.mask))
        text = json.dumps(report, indent=2) + "\n"
        outputs.text(text, paths["report"])
        digests[paths["report"].name] = hashlib.sha256(text.encode("utf-8")).hexdigest()
        outputs.json({"written_by": WRITTEN_BY, "note": "the files an earlier demo wrote, which the next demo may "
                      "replace; a file changed since is kept", "sha256": digests}, paths["manifest"])

    report["dice_vs_truth"] = round(dice(result.mask, truth), 4)
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
