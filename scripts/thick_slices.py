"""A folder of CT cases made again as thick-slice series, to see what slice thickness alone does to the results.

../shared/real-ct's only thick series are its sarcomas, so its rows by thickness mix thickness with the group. This
writes each case of --data (``<case>_image`` / ``<case>_label`` pairs) as a series of --thickness mm slices, as a
scanner's thick reconstruction makes it: each slice averages the HU of the thin slices it covers (SimpleITK: linear
resampling along z onto a fine grid, then ``BinShrink`` averaging each slab's fine slices), and is labelled where the
lesion fills more than ``LABEL_COVERAGE`` of it (the rule the synthetic generators' thick slices follow). In-plane
pixels are left as they are.

    .venv/bin/python scripts/thick_slices.py --data ../shared/real-ct --out runs/thick5 --thickness 5
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from gastric_propagate.data.cases import find_pairs
from gastric_propagate.synthetic.acquisition import LABEL_COVERAGE

FINE_SLICE_MM = 0.5  # the fine grid's slice spacing, about: thin slices are interpolated onto it, then averaged


def thick_series(image: sitk.Image, label: sitk.Image, thickness_mm: float) -> tuple[sitk.Image, sitk.Image]:
    """(int16 image, uint8 label) of ``thickness_mm`` slices over the z extent of the thin series' slice centres."""
    per_slab = max(1, math.ceil(thickness_mm / FINE_SLICE_MM))
    fine_mm = thickness_mm / per_slab
    size = list(image.GetSize())
    spacing = list(image.GetSpacing())
    slabs = int((size[2] - 1) * spacing[2] // thickness_mm)
    if slabs < 1:
        raise ValueError(f"the series spans {(size[2] - 1) * spacing[2]:.1f} mm, less than one {thickness_mm} mm slice")
    fine = sitk.ResampleImageFilter()
    fine.SetReferenceImage(image)
    fine.SetSize([size[0], size[1], slabs * per_slab])
    fine.SetOutputSpacing([spacing[0], spacing[1], fine_mm])
    fine.SetInterpolator(sitk.sitkLinear)
    lesion = label > 0  # the share of each slab the lesion covers, whatever value the label stores it as
    averaged = [sitk.BinShrink(fine.Execute(sitk.Cast(volume, sitk.sitkFloat32)), [1, 1, per_slab])
                for volume in (image, lesion)]
    thick_image = sitk.Cast(sitk.Round(averaged[0]), sitk.sitkInt16)
    thick_label = sitk.Cast(averaged[1] > LABEL_COVERAGE, sitk.sitkUInt8)
    return thick_image, thick_label


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder of <case>_image / <case>_label pairs")
    parser.add_argument("--out", required=True, help="folder for the thick series (created)")
    parser.add_argument("--thickness", type=float, default=5.0, help="slice thickness and spacing in mm")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, image_path, label_path in find_pairs(args.data):
        image, label = sitk.ReadImage(str(image_path)), sitk.ReadImage(str(label_path))
        if image.GetSpacing()[2] >= args.thickness:
            print(f"{name}: slices already {image.GetSpacing()[2]:.2f} mm, left out")
            continue
        thick_image, thick_label = thick_series(image, label, args.thickness)
        spanned = int(np.count_nonzero(sitk.GetArrayViewFromImage(thick_label).any(axis=(1, 2))))
        sitk.WriteImage(thick_image, str(out / f"{name}_image.nii.gz"), useCompression=True)
        sitk.WriteImage(thick_label, str(out / f"{name}_label.nii.gz"), useCompression=True)
        print(f"{name}: {image.GetSize()[2]} slices of {image.GetSpacing()[2]:.2f} mm -> "
              f"{thick_image.GetSize()[2]} of {args.thickness:g} mm, lesion on {spanned}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
