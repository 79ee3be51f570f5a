"""The benchmark's whole runs (click to segment written): a fresh segment process and a warm serve worker, and the
child's own peak memory."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import SPACING, make_volume
from gastric_propagate.data.mask_boxes import Grid, on_grid
from gastric_propagate.benchmark import (CORRECTION_OPTIONS, CORRECTION_REQUEST, _click_to_segment,
                                         _correct_least_confident, _segment_process, _Worker, _write_ct,
                                         run_with_peak)

CPU = ["--device", "cpu"]


def small_case():
    """A 64 x 64 x 16 CT with its tumour's slice 8 painted: the image and label arrays, the painted slice, the CT."""
    image, label = make_volume(depth=16, size=64, centre_z=8, radius_mm=10.0)
    annotation = np.zeros_like(label)
    annotation[8] = label[8]
    ct = sitk.GetImageFromArray(image)
    ct.SetSpacing(SPACING)
    return image, label, annotation, ct


def written_mask(folder, ct):
    """The run's mask on the CT's grid: the benchmark asks for the tumour's box, as the module does."""
    return on_grid(sitk.ReadImage(str(folder / "output.nrrd")), Grid.of(ct))


def test_a_fresh_process_and_the_warm_worker_write_the_same_result_from_the_same_arrays(tmp_path):
    _, _, annotation, ct = small_case()
    fresh_seconds, peak = _click_to_segment(ct, annotation, tmp_path, lambda paths: _segment_process(paths, CPU))
    fresh = written_mask(tmp_path, ct)
    with _Worker(CPU) as worker:
        written = []
        for write_image in (True, False):  # the second request on the CT file the first one read, as the module
            warm_seconds, returned = _click_to_segment(ct, annotation, tmp_path, worker.segment,
                                                       write_image=write_image)
            written.append((tmp_path / "image.nrrd").stat().st_mtime_ns)
        assert worker.served == 2 and written[0] == written[1]
        assert 0 < returned["engine"] <= returned["request"] <= warm_seconds, "the engine inside the request inside"
    warm = written_mask(tmp_path, ct)
    assert fresh.any() and np.array_equal(fresh, warm)
    assert fresh_seconds > 0 and warm_seconds > 0
    assert 0.05 < peak.gb < 16  # GB: a whole segment process
    assert peak.own == sys.platform.startswith("linux")  # VmHWM, for that child alone


def test_a_ct_sent_ahead_is_read_before_the_run_that_then_names_the_same_unchanged_file(tmp_path):
    _, _, annotation, ct = small_case()
    with _Worker(CPU) as worker:
        worker.preload(_write_ct(ct, tmp_path / "image.nrrd"))  # returns once the worker answered
        written = (tmp_path / "image.nrrd").stat().st_mtime_ns
        _click_to_segment(ct, annotation, tmp_path, worker.segment, write_image=False)
        assert worker.served == 2 and (tmp_path / "image.nrrd").stat().st_mtime_ns == written
        with pytest.raises(RuntimeError, match="could not read the CT ahead"):
            worker.preload(tmp_path / "missing.nrrd")
    ahead = written_mask(tmp_path, ct)
    _click_to_segment(ct, annotation, tmp_path, lambda paths: _segment_process(paths, CPU))
    assert ahead.any() and np.array_equal(ahead, written_mask(tmp_path, ct))


def test_the_warm_re_propagation_keeps_the_corrected_slice_as_a_second_anchor(tmp_path, bundled_segmenter):
    image, label, annotation, ct = small_case()
    first = bundled_segmenter.segment(image, SPACING, annotation)
    corrected = _correct_least_confident(first, label, annotation, SPACING)
    k = next(k for k in range(len(label)) if corrected[k].any() and k != 8)
    assert label[k].any() and k not in first.anchor_slices
    with _Worker(CPU) as worker:
        _click_to_segment(ct, corrected, tmp_path, lambda paths: worker.segment(paths, CORRECTION_REQUEST))
    result = written_mask(tmp_path, ct)
    for anchor in (8, k):  # without keyframes two painted slices are refused; with them both are kept as painted
        np.testing.assert_array_equal(result[anchor] > 0, corrected[anchor] > 0)
    engine = bundled_segmenter.segment(image, SPACING, corrected, CORRECTION_OPTIONS)
    np.testing.assert_array_equal(result, engine.mask)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is read from /proc")
def test_the_peak_of_a_child_leaves_out_the_memory_of_its_parent():
    held = np.ones(100_000_000)  # 800 MB in this process, every page touched
    code, stderr, peak = run_with_peak("platform", [])
    assert code == 0, stderr
    assert peak.own and peak.gb < 0.2 < held.nbytes / 1e9  # a bare interpreter: about 0.01 GB



@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is read from /proc")
def test_the_peak_of_a_running_process_is_its_own_high_water_mark():
    """The serve worker's peak, read while it runs (the module's process keeps its largest call's memory)."""
    import subprocess

    from gastric_propagate.benchmark import running_peak

    child = subprocess.Popen([sys.executable, "-c", "import sys, numpy; a = numpy.ones(40_000_000); "
                              "print('held', flush=True); sys.stdin.readline()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "held\n"
        peak = running_peak(child.pid)
        assert peak.own and 0.3 < peak.gb < 0.6  # 320 MB of ones and the interpreter
    finally:
        child.communicate("\n", timeout=60)
    assert running_peak(child.pid) is None, "an ended process has no status to read"

def test_a_warm_run_is_painted_again_one_rim_pixel_short_and_each_time_another():
    from gastric_propagate.benchmark import _repainted

    _, _, annotation, _ = small_case()
    again = [_repainted(annotation, i) for i in range(3)]
    for painted in again:
        left_out = np.argwhere(painted != annotation)
        assert len(left_out) == 1 and left_out[0][0] == 8 and annotation[tuple(left_out[0])]
    assert not np.array_equal(again[0], again[1]) and not np.array_equal(again[1], again[2])


def test_a_result_waits_for_the_module_timers_next_reading():
    from gastric_propagate.benchmark import until_polled

    assert until_polled(0.0, 20) == 0.0  # (no run ends at once; the arithmetic's edge)
    assert until_polled(0.001, 20) == pytest.approx(0.019)
    assert until_polled(0.020, 20) == pytest.approx(0.0, abs=1e-12)  # read at that very tick
    assert until_polled(0.4712, 20) == pytest.approx(0.0088)
    assert until_polled(0.4712, 100) == pytest.approx(0.0288)
