"""Output paths checked before the run: formats that lose the geometry, outputs that are inputs, links, devices."""

from pathlib import Path

import pytest

from gastric_propagate.data import output_checks
from gastric_propagate.errors import InputError


@pytest.mark.parametrize("name", ["out.png", "out.tif", "out.vtk", "out.gipl", "out.nrrdnr", "out", "out.jpg",
                                  ".nrrd", "out.img"])
def test_formats_that_lose_the_geometry_or_are_not_3d_are_refused(name):
    with pytest.raises(InputError, match=r"\.nrrd.*\.nhdr"):
        output_checks.check_mask_format(name)


def test_outputs_are_checked_before_the_run(tmp_path):
    ct = tmp_path / "ct.nrrd"
    ct.write_bytes(b"the user's CT")
    check = output_checks.check_outputs
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


def test_two_outputs_are_one_file_through_a_link_a_hard_link_or_dots(tmp_path):
    """Among many outputs (make-phantoms writes thousands, compared by file, not pair by pair), two that name one
    file another way are refused; different files pass."""
    (tmp_path / "real").mkdir()
    (tmp_path / "via").symlink_to(tmp_path / "real")
    (tmp_path / "real" / "old.nrrd").write_bytes(b"an earlier output")
    (tmp_path / "real" / "hard.nrrd").hardlink_to(tmp_path / "real" / "old.nrrd")
    many = {f"output {i}": tmp_path / "real" / f"case_{i}.nrrd" for i in range(300)}
    output_checks.check_outputs(many, mask_outputs=tuple(many))
    for first, second in ((tmp_path / "real" / "case_7.nrrd", tmp_path / "via" / "case_7.nrrd"),
                          (tmp_path / "real" / "case_7.nrrd", tmp_path / "real" / ".." / "real" / "case_7.nrrd"),
                          (tmp_path / "real" / "old.nrrd", tmp_path / "real" / "hard.nrrd")):
        with pytest.raises(InputError, match="are the same file"):
            output_checks.check_outputs({**many, "output 7": first, "report": second}, overwrite=True)


@pytest.mark.parametrize("name", ["out.nii.GZ", "out.NRRD", "out.Mha", "out.NHDR"])
def test_an_extension_not_in_lower_case_is_refused_before_the_run(tmp_path, name):
    with pytest.raises(InputError, match=f"Name it 'out{name[3:].lower()}'"):
        output_checks.check_outputs({"output": tmp_path / name}, mask_outputs=("output",))


def test_an_output_that_is_a_device_or_a_link_is_refused_even_with_overwrite(tmp_path):
    (tmp_path / "stdout").symlink_to("/proc/self/fd/1")
    (tmp_path / "null").symlink_to("/dev/null")
    (tmp_path / "real.json").write_text("the user's file")
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    for path in (Path("/dev/null"), tmp_path / "stdout", tmp_path / "null", tmp_path / "link.json"):
        with pytest.raises(InputError, match="not a regular file"):
            output_checks.check_outputs({"report": path}, overwrite=True)
    assert (tmp_path / "null").is_symlink()


def test_an_output_that_writes_a_file_of_the_input_is_refused_even_with_overwrite(tmp_path):
    import numpy as np
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 6), np.int16)), str(tmp_path / "ct.hdr"))
    with pytest.raises(InputError, match=rf"would write {tmp_path / 'ct.hdr'}, a file of the input .*destroy"):
        output_checks.check_outputs({"output": tmp_path / "ct.hdr"}, inputs=[tmp_path / "ct.img"],  # read via .hdr
                                    overwrite=True, mask_outputs=("output",))
    output_checks.check_outputs({"output": tmp_path / "other.hdr"}, inputs=[tmp_path / "ct.img"], overwrite=True,
                                mask_outputs=("output",))


@pytest.mark.parametrize("input_name, compressed, output_name", [("ct.mhd", False, "ct.nhdr"),
                                                                 ("ct.nhdr", True, "ct.mhd")])
def test_an_output_of_the_same_stem_that_writes_another_data_file_is_accepted(tmp_path, input_name, compressed,
                                                                              output_name):
    """The outputs are written compressed: ct.nhdr's voxels go to ct.raw.gz, ct.mhd's to ct.zraw, never over an
    input's ct.raw (nor over a ct.raw.gz the input's header does not name)."""
    import numpy as np
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 6), np.int16)), str(tmp_path / input_name),
                    useCompression=compressed)
    output_checks.check_outputs({"output": tmp_path / output_name}, inputs=[tmp_path / input_name], overwrite=True,
                                mask_outputs=("output",))


def test_a_header_output_s_data_file_counts_as_an_output_too(tmp_path):
    """ITK writes out.nhdr's voxels to out.raw.gz: a report there, or one left from an earlier run, is refused before
    the run (it would overwrite the mask's voxels, or fail the run only at its end)."""
    check = output_checks.check_outputs
    with pytest.raises(InputError, match=r"report .*out\.raw\.gz is where the output .*out\.nhdr writes its voxels"):
        check({"output": tmp_path / "out.nhdr", "report": tmp_path / "out.raw.gz"}, overwrite=True,
              mask_outputs=("output",))
    (tmp_path / "out.raw.gz").write_bytes(b"an earlier run's voxels")
    with pytest.raises(InputError, match=r"out\.raw\.gz already exists.*--overwrite"):
        check({"output": tmp_path / "out.nhdr"}, mask_outputs=("output",))
    check({"output": tmp_path / "out.nhdr"}, overwrite=True, mask_outputs=("output",))
    (tmp_path / "other.raw").write_bytes(b"not what other.nhdr writes (other.raw.gz)")
    check({"output": tmp_path / "other.nhdr"}, mask_outputs=("output",))
