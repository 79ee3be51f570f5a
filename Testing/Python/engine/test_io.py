"""Reading and writing volumes: geometry checks, output formats, and writes that leave the old file or the new one."""

import errno
import gzip
import json
import signal
import struct
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


def ct_like():
    image = sitk.GetImageFromArray(np.random.default_rng(0).normal(0, 300, (16, 32, 32)).astype(np.int16))
    image.SetSpacing((0.8, 0.8, 2.5))
    return image


@pytest.mark.parametrize("name, compress", [("ct.nii.gz", True), ("ct.nii", False), ("ct.mha", True),
                                            ("ct.mha", False), ("ct.nrrd", True)])
@pytest.mark.parametrize("kept", [0.5, 0.67, 0.99])
def test_a_truncated_file_is_refused_not_read_as_zeros(tmp_path, name, compress, kept):
    path = tmp_path / name
    sitk.WriteImage(ct_like(), str(path), useCompression=compress)
    assert io.read_volume(path).GetSize() == (32, 32, 16)
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * kept)])
    with pytest.raises(InputError, match="is truncated.*copy or export it again"):
        io.read_volume(path)


@pytest.mark.parametrize("where", [0.3, 0.5, 0.9])
def test_a_gzip_file_with_corrupted_bytes_is_refused(tmp_path, where):
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(ct_like(), str(path), useCompression=True)
    data = bytearray(path.read_bytes())
    middle = int(len(data) * where)
    data[middle:middle + 50] = bytes(255 - value for value in data[middle:middle + 50])
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="is (corrupt|truncated)"):
        io.read_volume(path)


def test_a_tiny_gzip_file_is_called_truncated(tmp_path):
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(ct_like(), str(path), useCompression=True)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputError, match="is truncated"):
        io.read_volume(path, "annotation")


def test_a_whole_gzip_file_is_inflated_once(tmp_path, monkeypatch):
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(ct_like(), str(path), useCompression=True)
    monkeypatch.setattr(io, "_gunzipped_size", lambda *args: pytest.fail("the stream was inflated a second time"))
    assert np.array_equal(sitk.GetArrayFromImage(io.read_volume(path)), sitk.GetArrayFromImage(ct_like()))


@pytest.mark.parametrize("where", [0.3, 0.9])
def test_corrupted_bytes_that_itk_reads_without_error_are_refused(tmp_path, where):
    """ITK's header read inflates only the stream's start: in a larger file it reads the damage as voxels."""
    path = tmp_path / "ct.nii.gz"
    large = sitk.GetImageFromArray(np.random.default_rng(1).normal(0, 300, (16, 128, 128)).astype(np.int16))
    sitk.WriteImage(large, str(path), useCompression=True)
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x04
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="is (corrupt|truncated)"):
        io.read_volume(path)


@pytest.mark.parametrize("name", ["scaled.nii", "scaled.nii.gz"])
def test_a_whole_nifti_whose_voxels_itk_rescales_is_read(tmp_path, name):
    """ITK returns rescaled int16 voxels as float32: the size check counts the file's own voxels, and a gzip stream,
    whose trailer then does not match the voxels ITK returns, is checked whole instead."""
    plain = tmp_path / "ct.nii"
    sitk.WriteImage(ct_like(), str(plain), useCompression=False)
    data = bytearray(plain.read_bytes())
    data[112:120] = struct.pack("<ff", 2.0, -1024.0)  # scl_slope, scl_inter
    (tmp_path / name).write_bytes(gzip.compress(bytes(data)) if name.endswith(".gz") else bytes(data))
    image = io.read_volume(tmp_path / name)
    assert np.allclose(sitk.GetArrayFromImage(image), 2.0 * sitk.GetArrayFromImage(ct_like()) - 1024.0)


@pytest.mark.parametrize("directions", [b"(0.8,0,0) (0,0.8,0) (nan,nan,nan)", b"(0.8,0,0) (0,0.8,0) (0,0,inf)",
                                        b"(0.8,0,0) (0,0.8,0) (0,0,0)", b"(0.8,0,0) (0.8,0,0) (0,0,2.5)"])
def test_a_nrrd_of_non_finite_or_degenerate_geometry_is_refused(tmp_path, directions):
    path = tmp_path / "ct.nrrd"
    sitk.WriteImage(ct_like(), str(path), useCompression=False)
    data = path.read_bytes()
    start = data.index(b"space directions: ") + len(b"space directions: ")
    path.write_bytes(data[:start] + directions + data[data.index(b"\n", start):])
    with pytest.raises(InputError, match="corrupt geometry"):
        io.read_volume(path)


def test_paths_that_are_not_a_file_say_what_they_are(tmp_path):
    (tmp_path / "loop_a").symlink_to(tmp_path / "loop_b")
    (tmp_path / "loop_b").symlink_to(tmp_path / "loop_a")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone.nrrd")
    for path, message in ((tmp_path, "is a folder, not a file"), (Path("/dev/zero"), "not a regular file"),
                          (tmp_path / "loop_a", "loop of symbolic links"), (tmp_path / "dangling", "does not exist"),
                          (tmp_path / "missing.nrrd", "does not exist")):
        with pytest.raises(InputError, match=message):
            io.read_volume(path)


@pytest.mark.parametrize("name", ["out.nii.GZ", "out.NRRD", "out.Mha", "out.NHDR"])
def test_an_extension_not_in_lower_case_is_refused_before_the_run(tmp_path, name):
    with pytest.raises(InputError, match=f"Name it 'out{name[3:].lower()}'"):
        io.check_outputs({"output": tmp_path / name}, mask_outputs=("output",))


def test_an_output_that_is_a_device_or_a_link_is_refused_even_with_overwrite(tmp_path):
    (tmp_path / "stdout").symlink_to("/proc/self/fd/1")
    (tmp_path / "null").symlink_to("/dev/null")
    (tmp_path / "real.json").write_text("the user's file")
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    for path in (Path("/dev/null"), tmp_path / "stdout", tmp_path / "null", tmp_path / "link.json"):
        with pytest.raises(InputError, match="not a regular file"):
            io.check_outputs({"report": path}, overwrite=True)
    assert (tmp_path / "null").is_symlink()


def test_a_report_that_cannot_be_replaced_leaves_the_old_mask_too(tmp_path, monkeypatch):
    io.write_mask(np.zeros((4, 5, 6), np.uint8), reference(), tmp_path / "out.nrrd")
    old_mask = (tmp_path / "out.nrrd").read_bytes()
    (tmp_path / "report.json").write_text("old report")
    replace = io.os.replace

    def immutable_report(source, destination):
        if Path(destination).name == "report.json":
            raise PermissionError(errno.EPERM, "Operation not permitted", str(source))
        replace(source, destination)

    monkeypatch.setattr(io.os, "replace", immutable_report)
    with pytest.raises(InputError, match=r"Could not replace .*report\.json.*earlier files are kept") as caught:
        with io.OutputBatch() as outputs:
            outputs.mask(mask(), reference(), tmp_path / "out.nrrd")
            outputs.json({"a": 1}, tmp_path / "report.json")
            outputs.text("new", tmp_path / "notes.txt")
    assert io.PARTIAL_PREFIX not in str(caught.value)
    assert (tmp_path / "out.nrrd").read_bytes() == old_mask
    assert (tmp_path / "report.json").read_text() == "old report"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.nrrd", "report.json"]


@pytest.mark.parametrize("name, appears", [("out.nrrd", "report.json"), ("out.nrrd", "out.nrrd"),
                                           ("out.nhdr", "out.raw.gz"), ("out.nhdr", "out.nhdr")])
@pytest.mark.parametrize("hard_links", [True, False])
def test_without_overwrite_a_file_that_appeared_during_the_run_is_kept(tmp_path, monkeypatch, name, appears,
                                                                        hard_links):  # issue 26: 9
    """Another run wrote one of the outputs between the pre-run check and the renames: it is kept, and the outputs
    of this run already put in place are taken back, with or without hard links on the file system."""
    if not hard_links:
        def no_links(source, destination):
            raise PermissionError(errno.EPERM, "Operation not permitted", str(source))

        monkeypatch.setattr(io.os, "link", no_links)
    io.check_outputs({"output": tmp_path / name, "report": tmp_path / "report.json"}, overwrite=False)
    with pytest.raises(InputError, match=rf"{appears} exists now.*another run.*--overwrite") as caught:
        with io.OutputBatch(overwrite=False) as outputs:
            outputs.mask(mask(), reference(), tmp_path / name)
            outputs.json({"run": "this one"}, tmp_path / "report.json")
            (tmp_path / appears).write_text("the other run's")
    assert io.PARTIAL_PREFIX not in str(caught.value)
    assert sorted(path.name for path in tmp_path.iterdir()) == [appears]
    assert (tmp_path / appears).read_text() == "the other run's"


def test_without_overwrite_new_outputs_and_replaceable_ones_are_written(tmp_path):
    (tmp_path / "earlier.json").write_text("an earlier run's, that may be replaced")
    with io.OutputBatch(overwrite=False, replaceable=[tmp_path / "earlier.json"]) as outputs:
        outputs.mask(mask(), reference(), tmp_path / "out.nhdr")
        outputs.json({"run": "this one"}, tmp_path / "earlier.json")
    assert json.loads((tmp_path / "earlier.json").read_text()) == {"run": "this one"}
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out.nhdr"))), mask())
    assert sorted(path.name for path in tmp_path.iterdir()) == ["earlier.json", "out.nhdr", "out.raw.gz"]
