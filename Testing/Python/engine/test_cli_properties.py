"""The ``segment`` contract under random input (Hypothesis).

Random geometry (size, spacing, origin, direction), voxel types, NaN/Inf, empty, one-voxel, negative and
misplaced annotations, truncated and corrupted files, a NaN direction in a header, and random output and report
paths. Whatever comes in: exit 0 with a uint8 label on
exactly the CT's grid, or exit 2 with a message, and then no file written or changed.
"""

import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import gastric_propagate.cli as cli
from conftest import CopyCoarseRefiner, OracleProposer
from gastric_propagate.data.volumes import geometry_difference
from gastric_propagate.inference.pipeline import Segmenter
from gastric_propagate.inference.preprocessing import Preprocessing

CT_TYPES = (np.int16, np.int32, np.uint8, np.uint16, np.float32, np.float64)
LABEL_TYPES = (np.uint8, np.int8, np.int16, np.uint16, np.float32, np.float64)
EXTENSIONS = (".nrrd", ".nii.gz", ".nii", ".mha", ".nhdr", ".mhd", ".hdr",        # accepted
              ".png", ".tif", ".vtk", ".gipl", ".nrrdnr", ".jpg", "", ".json")  # refused
NAME_CHARACTERS = st.sampled_from("abcXYZ019 _-.é")
ANNOTATIONS = ("disc", "disc", "empty", "one_voxel", "two_slices", "negative", "nan", "edge", "huge_value")
DAMAGE = (None, "truncate_ct", "truncate_annotation", "flip_annotation", "nan_direction_ct")


@st.composite
def cases(draw):
    """About half the cases are valid (to exercise the success path), the others random in every respect."""
    valid = draw(st.booleans())

    def pick(good, anything):
        return draw(good if valid else anything)

    depth = pick(st.integers(3, 8), st.integers(1, 8))
    rows, columns = pick(st.integers(20, 40), st.integers(8, 40)), pick(st.integers(20, 40), st.integers(8, 40))
    spacing = tuple(draw(st.floats(0.3, 5.0)) for _ in range(3))
    origin = tuple(draw(st.floats(-2000.0, 2000.0)) for _ in range(3))
    direction = draw(st.sampled_from([
        (1, 0, 0, 0, 1, 0, 0, 0, 1), (-1, 0, 0, 0, -1, 0, 0, 0, 1), (0, 1, 0, 1, 0, 0, 0, 0, -1),
        tuple(np.round(_rotation(draw(st.floats(-3.0, 3.0))), 12).ravel())]))
    output_name = draw(st.text(NAME_CHARACTERS, min_size=1, max_size=12)).strip(" .") or "out"
    overwrite = draw(st.booleans())
    return {
        "shape": (depth, rows, columns), "spacing": spacing, "origin": origin, "direction": direction,
        "ct_type": pick(st.sampled_from(CT_TYPES[:2] + CT_TYPES[4:]), st.sampled_from(CT_TYPES)),
        "ct_poison": pick(st.none(), st.sampled_from((None, np.nan, np.inf, -np.inf))),
        "annotation": pick(st.sampled_from(("disc", "huge_value")), st.sampled_from(ANNOTATIONS)),
        "damage": pick(st.none(), st.sampled_from(DAMAGE)),
        "damage_at": draw(st.floats(0.2, 0.95)),
        "label_type": draw(st.sampled_from(LABEL_TYPES)),
        "centre": (draw(st.floats(0, 1)), draw(st.floats(0.4, 0.6)), draw(st.floats(0.4, 0.6))),
        "radius_voxels": pick(st.floats(2.5, 5.0), st.floats(0.5, 8.0)),
        "label_shift_voxels": pick(st.sampled_from((0.0, 0.001)), st.sampled_from((0.0, 0.001, 0.5, 1.0))),
        "output_folder": draw(st.sampled_from((".", "new", "new/deeper", "in"))),
        "output_name": output_name,
        "output_extension": pick(st.sampled_from(EXTENSIONS[:7]), st.sampled_from(EXTENSIONS)),
        "report": pick(st.sampled_from((None, "report.json", "new/r.json")),
                       st.sampled_from((None, "report.json", "same_as_output", "new/r.json"))),
        "output_is_input": pick(st.just(False), st.booleans()),
        "existing_output": overwrite if valid else draw(st.booleans()),
        "overwrite": overwrite,
        "extra": draw(st.sampled_from(((), ("--keyframes",), ("--max-distance-mm", "5"),
                                       ("--painted-not-largest",)))),
    }


def _rotation(angle: float) -> np.ndarray:
    cos, sin = np.cos(angle), np.sin(angle)
    return np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])


def make_inputs(case: dict, folder: Path) -> tuple[Path, Path, sitk.Image]:
    depth, rows, columns = case["shape"]
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[:depth, :rows, :columns]
    centre = (case["centre"][0] * (depth - 1), case["centre"][1] * (rows - 1), case["centre"][2] * (columns - 1))
    inside = ((y - centre[1]) ** 2 + (x - centre[2]) ** 2) <= case["radius_voxels"] ** 2
    image = np.where(inside, 120.0, -60.0) + rng.normal(0, 8, inside.shape)
    image[:, :2] = -1000.0
    info = np.iinfo(case["ct_type"]) if np.issubdtype(case["ct_type"], np.integer) else None
    if info is not None:
        image = np.clip(image, info.min, info.max)
    image = image.astype(case["ct_type"])
    if case["ct_poison"] is not None and np.issubdtype(image.dtype, np.floating):
        image[0, 0, 0] = case["ct_poison"]

    k = int(round(centre[0]))
    annotation = np.zeros(case["shape"], np.float64)
    kind = case["annotation"]
    if kind in ("disc", "negative", "nan", "huge_value", "two_slices"):
        annotation[k][inside[k]] = 1
    if kind == "two_slices" and depth > 1:
        annotation[(k + 1) % depth][inside[k]] = 1
    if kind == "one_voxel":
        annotation[k, int(centre[1]), int(centre[2])] = 1
    if kind == "edge":
        annotation[k, :, 0] = 1
    if kind == "negative":
        annotation[annotation > 0] = -1
    if kind == "nan" and np.issubdtype(case["label_type"], np.floating):
        annotation[annotation > 0] = np.nan
    if kind == "huge_value":
        annotation[annotation > 0] = 200
    if not np.issubdtype(case["label_type"], np.floating):
        info = np.iinfo(case["label_type"])
        annotation = np.clip(np.nan_to_num(annotation), info.min, info.max)
    annotation = annotation.astype(case["label_type"])

    ct = sitk.GetImageFromArray(image)
    ct.SetSpacing(case["spacing"])
    ct.SetOrigin(case["origin"])
    ct.SetDirection(case["direction"])
    label = sitk.GetImageFromArray(annotation)
    label.CopyInformation(ct)
    label.SetOrigin(tuple(o + case["label_shift_voxels"] * case["spacing"][2] * d
                          for o, d in zip(case["origin"], case["direction"][2::3])))
    folder.mkdir()
    paths = folder / "ct.nrrd", folder / "annotation.nii.gz"
    sitk.WriteImage(ct, str(paths[0]))
    sitk.WriteImage(label, str(paths[1]))
    written = sitk.ReadImage(str(paths[0]))
    damage(case, *paths)
    return paths[0], paths[1], written


def damage(case: dict, ct: Path, annotation: Path) -> None:
    """Cuts a file short, flips bytes in the middle of the annotation's gzip stream, or writes a NaN direction."""
    kind, at = case["damage"], case["damage_at"]
    if kind in ("truncate_ct", "truncate_annotation"):
        path = ct if kind == "truncate_ct" else annotation
        path.write_bytes(path.read_bytes()[:int(path.stat().st_size * at)])
    elif kind == "flip_annotation":
        data = bytearray(annotation.read_bytes())
        start = int(len(data) * at)
        data[start:start + 50] = bytes(255 - value for value in data[start:start + 50])
        annotation.write_bytes(bytes(data))
    elif kind == "nan_direction_ct":
        data = ct.read_bytes()
        start = data.index(b"space directions: ")
        end = data.index(b"\n", start)
        ct.write_bytes(data[:start] + b"space directions: (1,0,0) (0,1,0) (nan,nan,nan)" + data[end:])


def snapshot(folder: Path) -> dict:
    return {path: path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def fast_segmenter():
    return Segmenter.from_networks(OracleProposer(), CopyCoarseRefiner(), Preprocessing(), device="cpu")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=cases())
def test_segment_either_writes_on_the_ct_grid_or_refuses_cleanly(case, fast_segmenter, monkeypatch):
    monkeypatch.setattr(cli, "_segmenter", lambda args: fast_segmenter)
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        ct_path, annotation_path, ct = make_inputs(case, root / "in")
        output = root / case["output_folder"] / (case["output_name"] + case["output_extension"])
        if case["output_is_input"]:
            output = ct_path
        report = {None: None, "same_as_output": output}.get(case["report"], root / str(case["report"]))
        if case["existing_output"] and not output.exists() and output.parent.is_dir():
            output.write_bytes(b"an earlier result")
        argv = ["segment", "--image", str(ct_path), "--annotation", str(annotation_path), "--output", str(output),
                *(["--report", str(report)] if report else []), *(["--overwrite"] if case["overwrite"] else []),
                *case["extra"]]
        before = snapshot(root)
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = cli.main(argv)
        message = err.getvalue()
        event(f"exit {code}")
        assert "Traceback" not in message
        assert not list(root.rglob(".partial*")), "no temporary file left"
        assert case["damage"] is None or code == 2, f"a damaged file ({case['damage']}) was read: {message}"
        if code == 0:
            written = sitk.ReadImage(str(output))
            assert written.GetPixelID() == sitk.sitkUInt8
            assert written.GetSize() == ct.GetSize()
            assert geometry_difference(ct, written) is None, "on the CT's grid"
            assert set(np.unique(sitk.GetArrayViewFromImage(written))) <= {0, 1}
            assert report is None or Path(report).is_file()
            assert all(snapshot(root)[path] == content for path, content in before.items()
                       if path != output and path.name.split(".")[0] != output.name.split(".")[0]
                       and path != report), "no other file changed"
        else:
            assert code == 2, message
            if case["damage"] is not None:
                event(f"{case['damage']} refused")
            assert "error" in message and len(message) > 40, message
            assert snapshot(root) == before, "nothing written or changed"
