"""Reading volumes: what ITK would read wrongly or not at all is refused with what to do; grids are compared."""

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from gastric_propagate.data import volumes
from gastric_propagate.errors import InputError


def grid(origin):
    image = sitk.Image([6, 5, 4], sitk.sitkInt16)
    image.SetOrigin(origin)
    image.SetSpacing((0.8, 0.8, 1.0))
    return image


def test_origin_tolerance_does_not_grow_with_the_origin():
    ct = grid(origin=(0.0, 0.0, -1500.0))
    shifted = grid(origin=(0.0, 0.0, -1501.0))
    assert "origin" in volumes.geometry_difference(ct, shifted)
    rounded = grid(origin=tuple(float(np.float32(v)) for v in (0.1, 0.2, -1500.3)))
    assert volumes.geometry_difference(grid(origin=(0.1, 0.2, -1500.3)), rounded) is None, "float32 headers pass"


def test_a_float64_volume_counts_its_bytes(tmp_path, monkeypatch):
    path = tmp_path / "ct.nrrd"
    sitk.WriteImage(sitk.Image([10, 10, 10], sitk.sitkFloat64), str(path))
    monkeypatch.setattr(volumes, "MAX_BYTES", 4000)
    with pytest.raises(InputError, match="16-bit"):
        volumes.read_volume(path)
    sitk.WriteImage(sitk.Image([10, 10, 10], sitk.sitkInt16), str(path))
    assert volumes.read_volume(path).GetSize() == (10, 10, 10)


def ct_like():
    image = sitk.GetImageFromArray(np.random.default_rng(0).normal(0, 300, (16, 32, 32)).astype(np.int16))
    image.SetSpacing((0.8, 0.8, 2.5))
    return image


@pytest.mark.parametrize("name, compress", [("ct.nii.gz", True), ("ct.nii", False), ("ct.mha", True),
                                            ("ct.mha", False), ("ct.nrrd", True), ("ct.nrrd", False)])
@pytest.mark.parametrize("kept", [0.5, 0.67, 0.99])
def test_a_truncated_file_is_refused_not_read_as_zeros(tmp_path, name, compress, kept):
    path = tmp_path / name
    sitk.WriteImage(ct_like(), str(path), useCompression=compress)
    assert volumes.read_volume(path).GetSize() == (32, 32, 16)
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * kept)])
    with pytest.raises(InputError, match="is truncated.*copy or export it again"):
        volumes.read_volume(path)


@pytest.mark.parametrize("header, data, compress", [("ct.hdr", "ct.img", False), ("ct.mhd", "ct.raw", False),
                                                     ("ct.mhd", "ct.zraw", True), ("ct.nhdr", "ct.raw", False),
                                                     ("ct.nhdr", "ct.raw.gz", True)])
def test_a_header_whose_data_file_is_truncated_or_missing_is_refused(tmp_path, header, data, compress):
    """ITK read a short .img as zeros, and called a short .raw a missing file."""
    path = tmp_path / header
    sitk.WriteImage(ct_like(), str(path), useCompression=compress)
    assert volumes.read_volume(path).GetSize() == (32, 32, 16)
    content = (tmp_path / data).read_bytes()
    (tmp_path / data).write_bytes(content[:len(content) // 2])
    with pytest.raises(InputError, match=rf"The image file {tmp_path / data} is truncated"):
        volumes.read_volume(path)
    (tmp_path / data).unlink()
    with pytest.raises(InputError, match=rf"keeps its voxels in {tmp_path / data}, which does not exist"):
        volumes.read_volume(path)


@pytest.mark.parametrize("where", [0.3, 0.5, 0.9])
def test_a_gzip_file_with_corrupted_bytes_is_refused(tmp_path, where):
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(ct_like(), str(path), useCompression=True)
    data = bytearray(path.read_bytes())
    middle = int(len(data) * where)
    data[middle:middle + 50] = bytes(255 - value for value in data[middle:middle + 50])
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="is (corrupt|truncated)"):
        volumes.read_volume(path)


def test_a_tiny_gzip_file_is_called_truncated(tmp_path):
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(ct_like(), str(path), useCompression=True)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputError, match="is truncated"):
        volumes.read_volume(path, "annotation")


def test_a_whole_gzip_file_is_inflated_once(tmp_path, monkeypatch):
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(ct_like(), str(path), useCompression=True)
    monkeypatch.setattr(volumes, "_gunzipped_size", lambda *args: pytest.fail("the stream was inflated a second time"))
    assert np.array_equal(sitk.GetArrayFromImage(volumes.read_volume(path)), sitk.GetArrayFromImage(ct_like()))


def test_a_whole_compressed_metaimage_is_inflated_once(tmp_path, monkeypatch):
    path = tmp_path / "ct.mha"
    sitk.WriteImage(ct_like(), str(path), useCompression=True)
    monkeypatch.setattr(volumes, "_inflated", lambda *args: pytest.fail("the stream was inflated a second time"))
    assert np.array_equal(sitk.GetArrayFromImage(volumes.read_volume(path)), sitk.GetArrayFromImage(ct_like()))


@pytest.mark.parametrize("where", [0.3, 0.6, 0.9])
def test_a_compressed_metaimage_with_corrupted_bytes_is_refused(tmp_path, where):
    path = tmp_path / "ct.mha"
    large = sitk.GetImageFromArray(np.random.default_rng(1).normal(0, 300, (16, 128, 128)).astype(np.int16))
    sitk.WriteImage(large, str(path), useCompression=True)
    data = bytearray(path.read_bytes())
    start = data.index(b"ElementDataFile = LOCAL\n") + len(b"ElementDataFile = LOCAL\n")
    data[start + int((len(data) - start) * where)] ^= 0x04
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="is (corrupt|truncated)"):
        volumes.read_volume(path)


def test_a_big_endian_compressed_metaimage_whose_voxels_itk_swaps_is_read(tmp_path, monkeypatch):
    """Its trailer is that of the big-endian bytes, not of the voxels ITK returns: the stream is checked whole."""
    voxels = sitk.GetArrayFromImage(ct_like())
    stream = zlib.compress(voxels.astype(">i2").tobytes())
    header = (b"ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = True\n"
              b"CompressedData = True\nCompressedDataSize = %d\nElementSpacing = 0.8 0.8 2.5\nDimSize = 32 32 16\n"
              b"ElementType = MET_SHORT\nElementDataFile = LOCAL\n" % len(stream))
    path = tmp_path / "ct.mha"
    path.write_bytes(header + stream)
    assert zlib.adler32(voxels.astype("<i2").tobytes()) != zlib.adler32(voxels.astype(">i2").tobytes())
    inflated = []
    whole = volumes._inflated
    monkeypatch.setattr(volumes, "_inflated", lambda *args: inflated.append(args) or whole(*args))
    assert np.array_equal(sitk.GetArrayFromImage(volumes.read_volume(path)), voxels)
    assert len(inflated) == 1, "the trailer did not match the swapped voxels: the stream is checked whole, once"


def test_a_compressed_metaimage_that_itk_fails_to_inflate_is_refused(tmp_path):
    """Without CompressedDataSize ITK's MetaImage reader fails to inflate the stream and returns, without an error,
    a buffer it never filled: zeros, or what an earlier read left there (voxels no other test writes, so that even
    a recycled buffer cannot hold them)."""
    voxels = np.random.default_rng(7).normal(0, 300, (16, 32, 32)).astype(np.int16)
    header = (b"ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
              b"CompressedData = True\nElementSpacing = 0.8 0.8 2.5\nDimSize = 32 32 16\nElementType = MET_SHORT\n"
              b"ElementDataFile = LOCAL\n")
    path = tmp_path / "ct.mha"
    path.write_bytes(header + zlib.compress(voxels.astype("<i2").tobytes()))
    with pytest.raises(InputError, match="could not be read: the voxels ITK returned are not those"):
        volumes.read_volume(path)


def test_a_compressed_metaimage_whose_header_itk_refuses_is_said_to_be_unreadable(tmp_path):
    """ITK fails on the header itself (an element type it does not know): the size is unknown, and the message is
    the unreadable file's, not a Python error."""
    path = tmp_path / "ct.mha"
    path.write_bytes(b"ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_NOSUCHTYPE\n"
                     b"CompressedData = True\nElementDataFile = LOCAL\n" + zlib.compress(bytes(64)))
    with pytest.raises(InputError, match="cannot be read as a medical image"):
        volumes.read_volume(path)


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
        volumes.read_volume(path)


@pytest.mark.parametrize("name", ["scaled.nii", "scaled.nii.gz"])
def test_a_whole_nifti_whose_voxels_itk_rescales_is_read(tmp_path, name):
    """ITK returns rescaled int16 voxels as float32: the size check counts the file's own voxels, and a gzip stream,
    whose trailer then does not match the voxels ITK returns, is checked whole instead."""
    plain = tmp_path / "ct.nii"
    sitk.WriteImage(ct_like(), str(plain), useCompression=False)
    data = bytearray(plain.read_bytes())
    data[112:120] = struct.pack("<ff", 2.0, -1024.0)  # scl_slope, scl_inter
    (tmp_path / name).write_bytes(gzip.compress(bytes(data)) if name.endswith(".gz") else bytes(data))
    image = volumes.read_volume(tmp_path / name)
    assert np.allclose(sitk.GetArrayFromImage(image), 2.0 * sitk.GetArrayFromImage(ct_like()) - 1024.0)


@pytest.mark.parametrize("name", ["ct.nii", "ct.nii.gz", "ct.hdr"])  # .hdr: its voxels in ct.img
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_or_inf_in_a_float_nifti_is_refused_not_read_as_water(tmp_path, name, dtype):
    """ITK's NIfTI reader returns NaN and Inf as 0 (water, to the networks): the file's own voxels are checked."""
    values = sitk.GetArrayFromImage(ct_like()).astype(dtype)
    clean = sitk.GetImageFromArray(values)
    sitk.WriteImage(clean, str(tmp_path / name))
    assert np.array_equal(sitk.GetArrayFromImage(volumes.read_volume(tmp_path / name)), values), "finite: read"
    values[1, 2, :3] = np.nan
    values[2, 0, 0] = -np.inf
    sitk.WriteImage(sitk.GetImageFromArray(values), str(tmp_path / name))
    assert np.isfinite(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / name)))).all(), "ITK hides them"
    with pytest.raises(InputError, match=r"contains 3 NaN and 1 Inf voxels \(read by ITK as 0, which would pass "
                                         r"for water\)"):
        volumes.read_volume(tmp_path / name)
    with pytest.raises(InputError, match=r"would pass for background"):  # a label map's 0 is its background
        volumes.read_volume(tmp_path / name, "annotation")


@pytest.mark.parametrize("directions", [b"(0.8,0,0) (0,0.8,0) (nan,nan,nan)", b"(0.8,0,0) (0,0.8,0) (0,0,inf)",
                                        b"(0.8,0,0) (0,0.8,0) (0,0,0)", b"(0.8,0,0) (0.8,0,0) (0,0,2.5)"])
def test_a_nrrd_of_non_finite_or_degenerate_geometry_is_refused(tmp_path, directions):
    path = tmp_path / "ct.nrrd"
    sitk.WriteImage(ct_like(), str(path), useCompression=False)
    data = path.read_bytes()
    start = data.index(b"space directions: ") + len(b"space directions: ")
    path.write_bytes(data[:start] + directions + data[data.index(b"\n", start):])
    with pytest.raises(InputError, match="corrupt geometry"):
        volumes.read_volume(path)


def test_paths_that_are_not_a_file_say_what_they_are(tmp_path):
    (tmp_path / "loop_a").symlink_to(tmp_path / "loop_b")
    (tmp_path / "loop_b").symlink_to(tmp_path / "loop_a")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone.nrrd")
    for path, message in ((tmp_path, "is a folder, not a file"), (Path("/dev/zero"), "not a regular file"),
                          (tmp_path / "loop_a", "loop of symbolic links"), (tmp_path / "dangling", "does not exist"),
                          (tmp_path / "missing.nrrd", "does not exist")):
        with pytest.raises(InputError, match=message):
            volumes.read_volume(path)


def test_header_and_data_layouts_itk_reads_are_read(tmp_path):
    """What the data-file checks must not refuse: an upper-case Analyze pair (CT.HDR + CT.IMG, as old exports name
    them), slices listed one file each (NRRD 'LIST 2', MetaImage 'LIST 2D'), a MetaImage of text voxels."""
    voxels = np.arange(120, dtype=np.int16).reshape(4, 5, 6)
    image = sitk.GetImageFromArray(voxels)
    sitk.WriteImage(image, str(tmp_path / "ct.hdr"))
    (tmp_path / "ct.hdr").rename(tmp_path / "CT.HDR")
    (tmp_path / "ct.img").rename(tmp_path / "CT.IMG")
    slices = [tmp_path / f"slice{k}.raw" for k in range(4)]
    for k, path in enumerate(slices):
        path.write_bytes(voxels[k].tobytes())
    (tmp_path / "list.nhdr").write_text(
        "NRRD0004\ntype: short\ndimension: 3\nsizes: 6 5 4\nendian: little\nencoding: raw\ndata file: LIST 2\n"
        + "".join(f"{path.name}\n" for path in slices))
    (tmp_path / "list.mhd").write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 6 5 4\nElementType = MET_SHORT\nBinaryDataByteOrderMSB = False\n"
        "ElementDataFile = LIST 2D\n" + "".join(f"{path.name}\n" for path in slices))
    (tmp_path / "text.txt").write_text(" ".join(str(value) for value in voxels.ravel()) + " \n")
    (tmp_path / "text.mhd").write_text("ObjectType = Image\nNDims = 3\nDimSize = 6 5 4\nElementType = MET_SHORT\n"
                                       "BinaryData = False\nElementDataFile = text.txt\n")
    for name in ("CT.HDR", "list.nhdr", "list.mhd", "text.mhd"):
        np.testing.assert_array_equal(sitk.GetArrayFromImage(volumes.read_volume(tmp_path / name)), voxels, name)
    content = (tmp_path / "CT.IMG").read_bytes()
    (tmp_path / "CT.IMG").write_bytes(content[:len(content) // 2])
    with pytest.raises(InputError, match=r"CT\.IMG is truncated"):
        volumes.read_volume(tmp_path / "CT.HDR")
