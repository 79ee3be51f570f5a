"""Loading cases from folders (three layouts) and the errors a user can fix."""

import numpy as np
import pytest
import SimpleITK as sitk

from gastric_propagate.errors import InputError
from gastric_propagate.data.cases import case_from_arrays, folder_cases
from gastric_propagate.synthetic.generators import load_cases


def _write_pair(image_path, label_path, *, label_spacing=(0.8, 0.8, 2.5), label_size=(20, 18, 6), value=1):
    image = np.full((6, 18, 20), -100, np.int16)
    image[2:4, 5:9, 6:12] = 60
    sitk_image = sitk.GetImageFromArray(image)
    sitk_image.SetSpacing((0.8, 0.8, 2.5))
    sitk_image.SetOrigin((-10.0, 5.0, 30.0))
    label = np.zeros(label_size[::-1], np.uint8)
    label[2:4, 5:9, 6:12] = value
    sitk_label = sitk.GetImageFromArray(label)
    sitk_label.SetSpacing(label_spacing)
    sitk_label.SetOrigin((-10.0, 5.0, 30.0))
    image_path.parent.mkdir(parents=True, exist_ok=True)
    label_path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk_image, str(image_path))
    sitk.WriteImage(sitk_label, str(label_path))


def test_suffix_pairs_nrrd_and_nifti_sorted_and_loaded(tmp_path):
    _write_pair(tmp_path / "b_image.nii.gz", tmp_path / "b_label.nii.gz", value=2)
    _write_pair(tmp_path / "a_image.nrrd", tmp_path / "a_label.nrrd")
    (tmp_path / "notes.txt").write_text("not an image")
    cases = folder_cases(tmp_path)
    assert [case.name for case in cases] == ["a", "b"]
    data = cases[1].load()
    assert data.image.shape == (6, 18, 20) and data.image.dtype == np.int16
    assert data.label.dtype == np.uint8 and set(np.unique(data.label)) == {0, 1}  # any label value = tumour
    assert data.spacing_xyz == pytest.approx((0.8, 0.8, 2.5))
    assert cases[0].seed != cases[1].seed
    assert [case.name for case in load_cases(tmp_path, n_cases=1)] == ["a"]


def test_nnunet_layout(tmp_path):
    _write_pair(tmp_path / "imagesTr" / "gc_001_0000.nii.gz", tmp_path / "labelsTr" / "gc_001.nii.gz")
    _write_pair(tmp_path / "imagesTr" / "gc_002_0000.nii.gz", tmp_path / "labelsTr" / "gc_002.nii.gz")
    cases = folder_cases(tmp_path)
    assert [case.name for case in cases] == ["gc_001", "gc_002"]
    assert cases[0].load().label.sum() == 2 * 4 * 6


@pytest.mark.parametrize("layout", ["suffix", "nnunet"])
def test_a_case_held_by_two_files_or_a_link_to_nothing_is_refused_not_chosen_or_skipped(tmp_path, layout):
    """The original label and a corrected one exported as .nrrd: one was taken without a word, and a link to a moved
    file left its case out without a word."""
    image, label = ((tmp_path / "a_image.nii.gz", tmp_path / "a_label.nii.gz") if layout == "suffix" else
                    (tmp_path / "imagesTr" / "a_0000.nii.gz", tmp_path / "labelsTr" / "a.nii.gz"))
    _write_pair(image, label)
    second = label.with_name(label.name.replace(".nii.gz", ".nrrd"))
    second.write_bytes(label.read_bytes())
    with pytest.raises(InputError, match=f"Two files in .* hold the case file .*: {label.name} and {second.name}"):
        folder_cases(tmp_path)
    second.unlink()
    folder_cases(tmp_path)
    gone = label.with_name("b" + label.name[1:])
    gone.symlink_to(tmp_path / "moved.nii.gz")
    with pytest.raises(InputError, match=f"{gone.name} is a link to .*moved.nii.gz, which does not exist"):
        folder_cases(tmp_path)


def test_a_folder_without_pairs_says_how_to_name_them(tmp_path):
    _write_pair(tmp_path / "lonely_image.nrrd", tmp_path / "other" / "x.nrrd")
    with pytest.raises(InputError, match="_label.nrrd"):
        folder_cases(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        folder_cases(tmp_path / "missing")


@pytest.mark.parametrize("change", [{"label_spacing": (0.8, 0.8, 3.0)}, {"label_size": (20, 18, 7)}])
def test_a_pair_with_another_geometry_is_refused(tmp_path, change):
    _write_pair(tmp_path / "a_image.nrrd", tmp_path / "a_label.nrrd", **change)
    with pytest.raises(InputError, match="does not lie on the grid"):
        folder_cases(tmp_path)


def test_an_empty_label_is_refused_when_loaded(tmp_path):
    _write_pair(tmp_path / "a_image.nrrd", tmp_path / "a_label.nrrd", value=0)
    with pytest.raises(InputError, match="empty"):
        folder_cases(tmp_path)[0].load()


def test_an_image_segment_would_refuse_is_refused_when_loaded_naming_its_file(tmp_path):
    """train and evaluate learn from / score only what 'segment' accepts: an MR-like volume, raw values, NaN..."""
    _write_pair(tmp_path / "a_image.nrrd", tmp_path / "a_label.nrrd")
    raw = sitk.ReadImage(str(tmp_path / "a_image.nrrd")) + 1124  # unrescaled: fat at 1024, no negative value
    sitk.WriteImage(raw, str(tmp_path / "a_image.nrrd"))
    with pytest.raises(InputError, match=r"a_image\.nrrd: This does not look like a CT in Hounsfield units"):
        folder_cases(tmp_path)[0].load()


def test_a_header_in_centimetres_is_refused_when_loaded_not_learned_at_a_tenth_of_its_size(tmp_path):
    _write_pair(tmp_path / "a_image.nrrd", tmp_path / "a_label.nrrd")
    for name in ("a_image.nrrd", "a_label.nrrd"):
        volume = sitk.ReadImage(str(tmp_path / name))
        volume.SetSpacing([s / 10 for s in volume.GetSpacing()])
        sitk.WriteImage(volume, str(tmp_path / name))
    with pytest.raises(InputError, match=r"a_image\.nrrd has a voxel spacing of .* outside that of any CT"):
        folder_cases(tmp_path)[0].load()


@pytest.mark.parametrize("layout", ["suffix", "nnunet"])
def test_macos_metadata_files_beside_the_cases_are_skipped(tmp_path, layout):
    """Copied from a Mac to a USB or network disk, every file gets a '._' twin that no reader can read."""
    image, label = ((tmp_path / "a_image.nrrd", tmp_path / "a_label.nrrd") if layout == "suffix" else
                    (tmp_path / "imagesTr" / "a_0000.nrrd", tmp_path / "labelsTr" / "a.nrrd"))
    _write_pair(image, label)
    for path in (image, label):
        path.with_name("._" + path.name).write_bytes(b"\x00\x05\x16\x07" + bytes(80))
    cases = folder_cases(tmp_path)
    assert [case.name for case in cases] == ["a"]
    assert cases[0].load().label.sum() == 2 * 4 * 6


def test_a_label_saved_by_slicer_as_a_segmentation_pairs_and_one_of_overlapping_layers_says_what_to_export(tmp_path):
    _write_pair(tmp_path / "a_image.nrrd", tmp_path / "a_label.seg.nrrd")
    cases = folder_cases(tmp_path)
    assert [case.name for case in cases] == ["a"]
    assert cases[0].load().label.sum() == 2 * 4 * 6
    layers = sitk.JoinSeries([sitk.ReadImage(str(tmp_path / "a_label.seg.nrrd"))] * 2)  # two overlapping segments
    sitk.WriteImage(layers, str(tmp_path / "a_label.seg.nrrd"))
    with pytest.raises(InputError, match=r"a_label\.seg\.nrrd is a 4D label \(a Slicer segmentation whose segments "
                                         r"overlap.*as a_label\.nrrd, and move the \.seg\.nrrd out"):
        folder_cases(tmp_path)


def test_case_from_arrays():
    label = np.zeros((3, 4, 4), np.uint8)
    label[1, 1:3, 1:3] = 5
    case = case_from_arrays("tiny", np.zeros((3, 4, 4), np.int16), label, (1, 1, 2), seed=4)
    data = case.load()
    assert case.seed == 4 and data.label.max() == 1 and data.spacing_xyz == (1.0, 1.0, 2.0)


def test_held_out_phantoms_by_default():
    from gastric_propagate.synthetic.phantom import HELD_OUT_SEED_START

    cases = load_cases(None, 2)
    assert [case.seed for case in cases] == [HELD_OUT_SEED_START, HELD_OUT_SEED_START + 1]
    assert [case.name for case in cases] == [f"phantom_{HELD_OUT_SEED_START}", f"phantom_{HELD_OUT_SEED_START + 1}"]
    data = load_cases(None, 1, seed_start=5)[0].load()
    assert data.name == "phantom_5" and data.image.dtype == np.int16 and data.label.dtype == np.uint8
    assert data.image.shape == data.label.shape and data.label.any() and len(data.spacing_xyz) == 3


def test_folder_and_phantom_cases_load_in_other_processes(tmp_path):
    """Training reads its cases in worker processes: every kind of case must survive pickling."""
    from gastric_propagate.synthetic.generators import load_all, phantom_cases

    _write_pair(tmp_path / "a_image.nrrd", tmp_path / "a_label.nrrd")
    _write_pair(tmp_path / "b_image.nrrd", tmp_path / "b_label.nrrd")
    cases = folder_cases(tmp_path) + phantom_cases(1, seed_start=0, size_xy=96)
    loaded = load_all(cases, workers=2)
    assert [data.name for data in loaded] == ["a", "b", "phantom_0"]
    np.testing.assert_array_equal(loaded[0].image, cases[0].load().image)


def test_a_case_s_patient_is_its_name_without_the_lesion_number():
    from gastric_propagate.data.cases import patient_of

    assert patient_of("lidc_0415_n3") == patient_of("lidc_0415_n1") == "lidc_0415"
    assert patient_of("ibsi_sts_004") == "ibsi_sts_004" and patient_of("phantom_12") == "phantom_12"


def test_linking_a_split_refuses_a_folder_that_holds_another_split_s_cases(tmp_path):
    from gastric_propagate.data.cases import link_cases

    for name in ("a_1", "b_1"):
        for kind in ("image", "label"):
            (tmp_path / f"{name}_{kind}.nrrd").write_bytes(b"x")
    pair = {name: (name, tmp_path / f"{name}_image.nrrd", tmp_path / f"{name}_label.nrrd") for name in ("a_1", "b_1")}
    side = tmp_path / "split" / "train"
    link_cases([pair["a_1"]], side)
    link_cases([pair["a_1"]], side)  # the same split again: nothing to add
    assert sorted(path.name for path in side.iterdir()) == ["a_1_image.nrrd", "a_1_label.nrrd"]
    with pytest.raises(InputError, match="already holds 2 other file"):
        link_cases([pair["b_1"]], side)
    assert sorted(path.name for path in side.iterdir()) == ["a_1_image.nrrd", "a_1_label.nrrd"]
