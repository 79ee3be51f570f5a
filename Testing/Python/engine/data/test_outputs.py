"""Writing outputs: every accepted format round-trips on the reference grid, and a write leaves the old file or the
new one, never half of either."""

import errno
import json
import signal
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from gastric_propagate.data import outputs
from gastric_propagate.data.output_checks import check_outputs
from gastric_propagate.data.volumes import geometry_difference
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
    return sorted(path.name for path in folder.rglob(f"{outputs.PARTIAL_PREFIX}*"))


@pytest.mark.parametrize("name, files", [
    ("out.nrrd", {"out.nrrd"}), ("out.nii.gz", {"out.nii.gz"}), ("out.mha", {"out.mha"}),
    ("out.nhdr", {"out.nhdr", "out.raw.gz"}), ("out.mhd", {"out.mhd", "out.zraw"}), ("out.hdr", {"out.hdr", "out.img"}),
])
def test_every_accepted_format_round_trips_on_the_reference_grid(tmp_path, name, files):
    ct = reference(origin=(-12.5, 30.0, -1500.0))
    outputs.write_mask(mask(), ct, tmp_path / name)
    assert {path.name for path in tmp_path.iterdir()} == files, "the header names its data file, nothing else left"
    written = sitk.ReadImage(str(tmp_path / name))
    assert written.GetPixelID() == sitk.sitkUInt8
    assert geometry_difference(ct, written) is None
    assert np.array_equal(sitk.GetArrayFromImage(written), mask())


def test_a_header_data_pair_is_replaced_whole(tmp_path):
    outputs.write_mask(np.zeros((4, 5, 6), np.uint8), reference(), tmp_path / "out.mhd")
    outputs.write_mask(mask(), reference(), tmp_path / "out.mhd")
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out.mhd"))), mask())
    assert not leftovers(tmp_path)


def test_a_failed_second_output_leaves_neither(tmp_path, monkeypatch):
    (tmp_path / "report.json").write_text("old report")

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", no_space)
    with pytest.raises(InputError, match="free space"):
        with outputs.OutputBatch() as batch:
            batch.mask(mask(), reference(), tmp_path / "out.nrrd")
            batch.json({"a": 1}, tmp_path / "report.json")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["report.json"]
    monkeypatch.undo()
    assert (tmp_path / "report.json").read_text() == "old report"


def test_an_error_inside_the_batch_writes_nothing_and_removes_folders_it_made(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with outputs.OutputBatch() as batch:
            batch.mask(mask(), reference(), tmp_path / "new" / "deeper" / "out.nhdr")
            raise RuntimeError("boom")
    assert not list(tmp_path.iterdir())


def test_sigterm_during_the_renames_is_held_until_both_files_are_in_place(tmp_path, monkeypatch):
    class Stop(BaseException):
        pass

    def handler(number, frame):
        raise Stop()

    previous = signal.signal(signal.SIGTERM, handler)
    replace = outputs.os.replace
    calls = []

    def replace_then_signal(source, destination):
        replace(source, destination)
        calls.append(destination)
        if len(calls) == 1:
            signal.raise_signal(signal.SIGTERM)  # arrives after the first of three renames

    monkeypatch.setattr(outputs.os, "replace", replace_then_signal)
    try:
        with pytest.raises(Stop):
            with outputs.OutputBatch() as batch:
                batch.mask(mask(), reference(), tmp_path / "out.mhd")
                batch.json({"a": 1}, tmp_path / "report.json")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert len(calls) == 3
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out.mhd"))), mask())
    assert json.loads((tmp_path / "report.json").read_text()) == {"a": 1}
    assert not leftovers(tmp_path)


def _report_cannot_be_replaced(replace):
    """os.replace, except that report.json cannot be replaced (an immutable file)."""

    def immutable_report(source, destination):
        if Path(destination).name == "report.json":
            raise PermissionError(errno.EPERM, "Operation not permitted", str(source))
        replace(source, destination)

    return immutable_report


def test_a_report_that_cannot_be_replaced_leaves_the_old_mask_too(tmp_path, monkeypatch):
    outputs.write_mask(np.zeros((4, 5, 6), np.uint8), reference(), tmp_path / "out.nrrd")
    old_mask = (tmp_path / "out.nrrd").read_bytes()
    (tmp_path / "report.json").write_text("old report")
    monkeypatch.setattr(outputs.os, "replace", _report_cannot_be_replaced(outputs.os.replace))
    with pytest.raises(InputError, match=r"Could not replace .*report\.json.*earlier files are kept") as caught:
        with outputs.OutputBatch() as batch:
            batch.mask(mask(), reference(), tmp_path / "out.nrrd")
            batch.json({"a": 1}, tmp_path / "report.json")
            batch.text("new", tmp_path / "notes.txt")
    assert outputs.PARTIAL_PREFIX not in str(caught.value)
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

        monkeypatch.setattr(outputs.os, "link", no_links)
    check_outputs({"output": tmp_path / name, "report": tmp_path / "report.json"}, overwrite=False)
    with pytest.raises(InputError, match=rf"{appears} exists now.*another run.*--overwrite") as caught:
        with outputs.OutputBatch(overwrite=False) as batch:
            batch.mask(mask(), reference(), tmp_path / name)
            batch.json({"run": "this one"}, tmp_path / "report.json")
            (tmp_path / appears).write_text("the other run's")
    assert outputs.PARTIAL_PREFIX not in str(caught.value)
    assert sorted(path.name for path in tmp_path.iterdir()) == [appears]
    assert (tmp_path / appears).read_text() == "the other run's"


def test_without_overwrite_new_outputs_and_replaceable_ones_are_written(tmp_path):
    (tmp_path / "earlier.json").write_text("an earlier run's, that may be replaced")
    with outputs.OutputBatch(overwrite=False, replaceable=[tmp_path / "earlier.json"]) as batch:
        batch.mask(mask(), reference(), tmp_path / "out.nhdr")
        batch.json({"run": "this one"}, tmp_path / "earlier.json")
    assert json.loads((tmp_path / "earlier.json").read_text()) == {"run": "this one"}
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out.nhdr"))), mask())
    assert sorted(path.name for path in tmp_path.iterdir()) == ["earlier.json", "out.nhdr", "out.raw.gz"]


def test_a_file_removed_with_the_batch_goes_only_when_the_outputs_appear(tmp_path, monkeypatch):
    (tmp_path / "stale.onnx").write_text("the int8 copy of earlier weights")
    (tmp_path / "report.json").write_text("old report")
    with monkeypatch.context() as patch:
        patch.setattr(outputs.os, "replace", _report_cannot_be_replaced(outputs.os.replace))
        with pytest.raises(InputError, match="earlier files are kept"):
            with outputs.OutputBatch() as batch:
                batch.remove(tmp_path / "stale.onnx")
                batch.json({"a": 1}, tmp_path / "report.json")
    assert (tmp_path / "stale.onnx").read_text() == "the int8 copy of earlier weights"
    with outputs.OutputBatch() as batch:
        batch.remove(tmp_path / "stale.onnx")
        batch.remove(tmp_path / "never-there.onnx")
        batch.json({"a": 1}, tmp_path / "report.json")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["report.json"]
    assert outputs.COMMITTED == [str(tmp_path / "report.json")], "what was written, not what was removed"


def test_an_output_dropped_from_the_batch_is_not_written_and_leaves_nothing_behind(tmp_path):
    (tmp_path / "b.json").write_text("earlier b")
    with outputs.OutputBatch() as batch:
        batch.json({"a": 1}, tmp_path / "a.json")
        batch.json({"b": 2}, tmp_path / "b.json")
        batch.drop(tmp_path / "b.json")
        batch.drop(tmp_path / "never-staged.json")  # nothing to drop: nothing happens
    assert json.loads((tmp_path / "a.json").read_text()) == {"a": 1}
    assert (tmp_path / "b.json").read_text() == "earlier b"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.json", "b.json"]


def test_an_earlier_file_that_cannot_be_put_back_is_kept_and_named(tmp_path, monkeypatch):
    """Replacing failed midway, and putting an earlier file back failed too: its only copy is kept where the message
    says, never deleted with the temporary folders."""
    (tmp_path / "a.json").write_text("earlier a")
    replace = outputs.os.replace

    def failing(source, destination):
        if Path(destination).name == "b.json" or Path(source).parent.name == ".old":  # b, and every restore
            raise PermissionError(errno.EPERM, "Operation not permitted", str(source))
        replace(source, destination)

    monkeypatch.setattr(outputs.os, "replace", failing)
    with pytest.raises(InputError, match="the outputs are incomplete: .* copy them back from") as caught:
        with outputs.OutputBatch() as batch:
            batch.json({"a": 1}, tmp_path / "a.json")
            batch.json({"b": 2}, tmp_path / "b.json")
    kept = Path(str(caught.value).split("copy them back from ")[1].split(". Check")[0])
    assert kept.read_text() == "earlier a"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowed exception itself
def test_a_signal_whose_exception_was_swallowed_still_stops_the_batch_from_being_renamed(tmp_path):
    """The command line's handler notes the signal, then raises; raised inside a callback whose exceptions Python
    ignores (a weakref callback of the garbage collector, during the ONNX export), the run went on and its outputs
    replaced the earlier ones. The batch delivers the signal again before renaming anything."""
    import weakref

    from gastric_propagate.cli import _on_sigterm_unwind, _Terminated

    (tmp_path / "report.json").write_text('{"earlier": true}')
    previous = _on_sigterm_unwind()
    outputs.RECEIVED.clear()
    try:
        with pytest.raises(_Terminated):
            with outputs.OutputBatch() as batch:
                batch.json({"a": 1}, tmp_path / "report.json")

                class Dropped:
                    pass

                dropped = Dropped()
                weakref.finalize(dropped, signal.raise_signal, signal.SIGTERM)  # its exception: ignored by Python
                del dropped
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        outputs.RECEIVED.clear()
    assert json.loads((tmp_path / "report.json").read_text()) == {"earlier": True}
    assert not leftovers(tmp_path)
