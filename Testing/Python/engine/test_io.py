"""Reading and writing volumes: geometry checks, output formats, and writes that leave the old file or the new one."""

import errno
import json
import signal
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from gastric_propagate.data import io
from gastric_propagate.errors import InputError


def reference(origin=(0.0, 0.0, 0.0), spacing=(0.8, 0.8, 1.0)):
    image = sitk.Image([6, 5, 4], sitk.sitkInt16)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, -1))
    return image


def mask():
    array = np.zeros((4, 5, 6), np.uint8)
    array[1:3, 1:4, 2:5] = 1
    return array


def leftovers(folder: Path):
    return sorted(path.name for path in folder.rglob(f"{io.PARTIAL_PREFIX}*"))


@pytest.mark.parametrize("name, files", [
    ("out.nrrd", {"out.nrrd"}), ("out.nii.gz", {"out.nii.gz"}), ("out.mha", {"out.mha"}),
    ("out.nhdr", {"out.nhdr", "out.raw.gz"}), ("out.mhd", {"out.mhd", "out.zraw"}), ("out.hdr", {"out.hdr", "out.img"}),
])
def test_every_accepted_format_round_trips_on_the_reference_grid(tmp_path, name, files):
    ct = reference(origin=(-12.5, 30.0, -1500.0))
    io.write_mask(mask(), ct, tmp_path / name)
    assert {path.name for path in tmp_path.iterdir()} == files, "the header names its data file, nothing else left"
    written = sitk.ReadImage(str(tmp_path / name))
    assert written.GetPixelID() == sitk.sitkUInt8
    assert io.geometry_difference(ct, written) is None
    assert np.array_equal(sitk.GetArrayFromImage(written), mask())


def test_a_header_data_pair_is_replaced_whole(tmp_path):
    io.write_mask(np.zeros((4, 5, 6), np.uint8), reference(), tmp_path / "out.mhd")
    io.write_mask(mask(), reference(), tmp_path / "out.mhd")
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out.mhd"))), mask())
    assert not leftovers(tmp_path)


@pytest.mark.parametrize("name", ["out.png", "out.tif", "out.vtk", "out.gipl", "out.nrrdnr", "out", "out.jpg",
                                  ".nrrd", "out.img"])
def test_formats_that_lose_the_geometry_or_are_not_3d_are_refused(name):
    with pytest.raises(InputError, match=r"\.nrrd.*\.nhdr"):
        io.check_mask_format(name)


def test_origin_tolerance_does_not_grow_with_the_origin():
    ct = reference(origin=(0.0, 0.0, -1500.0), spacing=(0.8, 0.8, 1.0))
    shifted = reference(origin=(0.0, 0.0, -1501.0), spacing=(0.8, 0.8, 1.0))
    assert "origin" in io.geometry_difference(ct, shifted)
    rounded = reference(origin=tuple(float(np.float32(v)) for v in (0.1, 0.2, -1500.3)))
    assert io.geometry_difference(reference(origin=(0.1, 0.2, -1500.3)), rounded) is None, "float32 headers pass"


def test_a_failed_second_output_leaves_neither(tmp_path, monkeypatch):
    (tmp_path / "report.json").write_text("old report")

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", no_space)
    with pytest.raises(InputError, match="free space"):
        with io.OutputBatch() as outputs:
            outputs.mask(mask(), reference(), tmp_path / "out.nrrd")
            outputs.json({"a": 1}, tmp_path / "report.json")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["report.json"]
    monkeypatch.undo()
    assert (tmp_path / "report.json").read_text() == "old report"


def test_an_error_inside_the_batch_writes_nothing_and_removes_folders_it_made(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with io.OutputBatch() as outputs:
            outputs.mask(mask(), reference(), tmp_path / "new" / "deeper" / "out.nhdr")
            raise RuntimeError("boom")
    assert not list(tmp_path.iterdir())


def test_sigterm_during_the_renames_is_held_until_both_files_are_in_place(tmp_path, monkeypatch):
    class Stop(BaseException):
        pass

    def handler(number, frame):
        raise Stop()

    previous = signal.signal(signal.SIGTERM, handler)
    replace = io.os.replace
    calls = []

    def replace_then_signal(source, destination):
        replace(source, destination)
        calls.append(destination)
        if len(calls) == 1:
            signal.raise_signal(signal.SIGTERM)  # arrives after the first of three renames

    monkeypatch.setattr(io.os, "replace", replace_then_signal)
    try:
        with pytest.raises(Stop):
            with io.OutputBatch() as outputs:
                outputs.mask(mask(), reference(), tmp_path / "out.mhd")
                outputs.json({"a": 1}, tmp_path / "report.json")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert len(calls) == 3
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out.mhd"))), mask())
    assert json.loads((tmp_path / "report.json").read_text()) == {"a": 1}
    assert not leftovers(tmp_path)


def test_outputs_are_checked_before_the_run(tmp_path):
    ct = tmp_path / "ct.nrrd"
    ct.write_bytes(b"the user's CT")
    check = io.check_outputs
    with pytest.raises(InputError, match="destroy your input"):
        check({"output": ct}, inputs=[ct], overwrite=True, mask_outputs=("output",))
    with pytest.raises(InputError, match="same file"):
        check({"output": tmp_path / "a.nrrd", "report": tmp_path / "a.nrrd"}, mask_outputs=("output",))
    with pytest.raises(InputError, match="is a file, not a folder"):
        check({"output": ct / "out.nrrd"}, mask_outputs=("output",))
    with pytest.raises(InputError, match="is a folder"):
        check({"output": tmp_path}, mask_outputs=("output",))
    with pytest.raises(InputError, match="--overwrite"):
        check({"report": ct})
    check({"output": tmp_path / "new" / "out.nrrd", "report": None}, mask_outputs=("output",))
    assert not (tmp_path / "new").exists(), "checking creates nothing"


def test_a_float64_volume_counts_its_bytes(tmp_path, monkeypatch):
    path = tmp_path / "ct.nrrd"
    sitk.WriteImage(sitk.Image([10, 10, 10], sitk.sitkFloat64), str(path))
    monkeypatch.setattr(io, "MAX_BYTES", 4000)
    with pytest.raises(InputError, match="16-bit"):
        io.read_volume(path)
    sitk.WriteImage(sitk.Image([10, 10, 10], sitk.sitkInt16), str(path))
    assert io.read_volume(path).GetSize() == (10, 10, 10)
