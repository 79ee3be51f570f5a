"""The evaluation end to end on tiny synthetic cases with the baseline methods."""

import math
import statistics

import numpy as np
import pytest

from gastric_propagate.evaluation import evaluate
from gastric_propagate.data.cases import case_from_arrays

BASELINES = ["copy_slice", "region_growing", "registration", "fill_between_ideal"]
SPACING = (1.0, 1.0, 2.5)


def _case(name, seed, radius_mm):
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:18, :40, :40]
    cz, cy, cx = 9 + rng.integers(-1, 2), 20 + rng.integers(-2, 3), 20 + rng.integers(-2, 3)
    truth = (((x - cx) * SPACING[0] / radius_mm) ** 2 + ((y - cy) * SPACING[1] / (0.8 * radius_mm)) ** 2
             + ((z - cz) * SPACING[2] / radius_mm) ** 2) <= 1
    image = np.where(truth, 60.0, -90.0) + rng.normal(0, 10, truth.shape)
    image[:, :, :3] = -1000
    return case_from_arrays(name, image.astype(np.int16), truth.astype(np.uint8), SPACING, seed=seed)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluation")
    cases = [_case("tiny_a", 1, 11.0), _case("tiny_b", 2, 13.0)]
    evaluation = evaluate.run_evaluation(cases, methods=BASELINES, variants=["largest", "dilated"], progress=False)
    paths = evaluate.write_reports(evaluation, out, {"data": "2 tiny synthetic ellipsoids", "command": "pytest"})
    return evaluation.rows, paths


def test_one_row_per_case_variant_and_method(evaluated):
    rows, paths = evaluated
    on_disk = evaluate.read_csv(paths["csv"])
    assert len(on_disk) == 2 * 2 * len(BASELINES)
    assert list(on_disk[0]) == list(evaluate.CSV_COLUMNS)
    assert {(r["case"], r["variant"], r["method"]) for r in on_disk} == {
        (c, v, m) for c in ("tiny_a", "tiny_b") for v in ("largest", "dilated") for m in BASELINES}
    for row, written in zip(rows, on_disk):
        assert written["error"] == ""
        assert written["dice"] == row["dice"] and 0.3 < written["dice"] <= 1.0
        assert math.isfinite(written["hd95_mm"]) and written["seconds"] >= 0


def test_easy_cases_rank_sensibly(evaluated):
    rows, _ = evaluated
    mean = {m: statistics.fmean(r["dice"] for r in rows if r["method"] == m and r["variant"] == "largest")
            for m in BASELINES}
    assert mean["region_growing"] > 0.8 and mean["fill_between_ideal"] > 0.75
    assert mean["copy_slice"] < mean["region_growing"]


def test_summary_quotes_the_csv_numbers(evaluated):
    _, paths = evaluated
    text = paths["summary"].read_text()
    assert "2 tiny synthetic ellipsoids" in text and "`pytest`" in text and "Cases:** 2" in text
    assert "## Annotation: largest" in text and "## Annotation: dilated" in text
    rows = evaluate.read_csv(paths["csv"])
    for method in BASELINES:
        dices = [r["dice"] for r in rows if r["method"] == method and r["variant"] == "dilated"]
        expected = (f"{statistics.fmean(dices):.3f} ± {statistics.stdev(dices):.3f} "
                    f"({statistics.median(dices):.3f})")
        assert expected in text


def test_figure_is_a_png(evaluated):
    _, paths = evaluated
    assert paths["figure"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths["figure"].stat().st_size > 10_000


def test_a_failing_method_is_recorded_not_fatal(monkeypatch):
    def broken(*_args, **_kw):
        raise RuntimeError("boom")

    monkeypatch.setitem(evaluate.BASELINES, "copy_slice",
                        evaluate.Method("copy_slice", "Broken copy", broken))
    rows = evaluate.run_evaluation([_case("tiny_c", 3, 10.0)], methods=["copy_slice", "region_growing"],
                                   variants=["largest"], progress=False).rows
    assert "RuntimeError: boom" in rows[0]["error"] and math.isnan(rows[0]["dice"])
    assert rows[1]["error"] == ""
    text = evaluate.summary_markdown(rows, {"data": "x", "command": "y"})
    assert "| 0 | 1 |" in text  # one failure counted



def test_where_a_method_failed_the_summary_also_compares_every_method_on_the_cases_all_scored():
    """The vote refused a case the baselines found easy: its row was a mean over 19 cases, theirs over 20."""
    base = {"variant": "largest", "seconds": 0.1, "truth_ml": 1.0, "painted_slice": 5, "slice_mm": 2.5,
            "source": "x", "hd95_mm": 2.0, "volume_error_percent": 0.0, "predicted_ml": 1.0}
    rows = [{**base, "case": case, "method": method, "dice": dice, "error": ""}
            for case, method, dice in (("a", "copy_slice", 0.6), ("a", "region_growing", 0.8),
                                       ("b", "copy_slice", 0.7), ("b", "region_growing", 0.6),
                                       ("c", "copy_slice", 0.95))]
    rows.append({**base, "case": "c", "method": "region_growing", "dice": math.nan, "error": "InputError: no"})
    text = evaluate.summary_markdown(rows, {"data": "x", "command": "y"})
    assert ("Some method failed on 1 case(s) (c), so the rows above are means over different cases. On the 2 "
            "case(s) every method scored, mean Dice: Copy the painted slice (± its radius) 0.650; 3D region growing "
            "0.700.") in text  # copy-slice's row says 0.750, over a, b and c
    clean = evaluate.summary_markdown([row for row in rows if row["case"] != "c"], {"data": "x", "command": "y"})
    assert "Some method failed" not in clean


def test_a_cell_of_one_scored_run_shows_no_spread():
    """Three runs of a method: one scored, one empty (no HD95), one failed: n is 3, the HD95 cell is one run's."""
    base = {"variant": "largest", "method": "copy_slice", "seconds": 0.1, "truth_ml": 1.0, "painted_slice": 5,
            "slice_mm": 2.5, "source": "x"}
    rows = [{**base, "case": "a", "dice": 0.9, "hd95_mm": 2.0, "volume_error_percent": 5.0, "predicted_ml": 1.05,
             "error": ""},
            {**base, "case": "b", "dice": 0.0, "hd95_mm": math.inf, "volume_error_percent": -100.0,
             "predicted_ml": 0.0, "error": ""},
            {**base, "case": "c", "dice": math.nan, "hd95_mm": math.nan, "volume_error_percent": math.nan,
             "predicted_ml": math.nan, "error": "RuntimeError: boom"}]
    text = evaluate.summary_markdown(rows, {"data": "x", "command": "y"})
    assert ("| 3 | 0.450 ± 0.636 (0.450) | 2.00 (one run) | -47.5 ± 74.2 (-47.5) | 0.100 ± 0.000 (0.100) | 1 | 1 |"
            in text)
    assert "n counts every run, the failed ones too" in text

def test_a_case_refused_as_bad_input_is_logged_in_one_line(monkeypatch, caplog):  # issue 26: 15
    from gastric_propagate.errors import InputError

    def not_ct(*_args, **_kw):
        raise InputError("This does not look like a CT in Hounsfield units.")

    monkeypatch.setitem(evaluate.BASELINES, "copy_slice", evaluate.Method("copy_slice", "Not CT", not_ct))
    rows = evaluate.run_evaluation([_case("tiny_d", 4, 10.0)], methods=["copy_slice"], variants=["largest"],
                                   progress=False).rows
    assert rows[0]["error"] == "InputError: This does not look like a CT in Hounsfield units."
    failures = [record for record in caplog.records if "failed on tiny_d" in record.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is None, "one line, no traceback"
    assert "does not look like a CT" in failures[0].getMessage()


def test_a_case_that_cannot_be_read_is_recorded_as_failed_and_the_others_still_give_the_figure(caplog):
    from gastric_propagate.data.cases import Case
    from gastric_propagate.errors import InputError

    def empty_label():
        raise InputError("The label a_label.nrrd is empty: there is no tumour in it to learn from or evaluate on.")

    cases = [Case(name="a_empty", source="a_image.nrrd", seed=0, loader=empty_label), _case("tiny_e", 5, 10.0)]
    evaluation = evaluate.run_evaluation(cases, methods=["copy_slice", "region_growing"], variants=["largest"],
                                         progress=False)
    failed = [row for row in evaluation.rows if row["case"] == "a_empty"]
    assert len(failed) == 2 and all(row["error"].startswith("InputError: The label") for row in failed)
    assert all(math.isnan(row["dice"]) for row in failed)
    assert all(row["error"] == "" for row in evaluation.rows if row["case"] == "tiny_e")
    assert evaluation.example is not None, "the figure's example is the first case that loads"
    assert any("a_empty cannot be evaluated" in record.getMessage() for record in caplog.records)
    text = evaluate.summary_markdown(evaluation.rows, {"data": "x", "command": "y"})
    assert "| 1 |" in text  # counted as failed, the run finished


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown method"):
        evaluate.run_evaluation([], methods=["magic"], progress=False)


def test_engine_rows_from_two_runs_per_case(oracle_segmenter, monkeypatch):
    """The three GastricPropagate rows come from two engine calls per case and variant (with and without the
    vote), and the proposer row is timed without the refiner."""
    from gastric_propagate.inference import pipeline

    calls = []
    original = pipeline.Segmenter.segment

    def counted(self, image, spacing, annotation, options, **kwargs):
        calls.append(options.use_consensus)
        return original(self, image, spacing, annotation, options, **kwargs)

    monkeypatch.setattr(pipeline.Segmenter, "segment", counted)
    evaluation = evaluate.run_evaluation([_case("tiny_e", 5, 12.0)], methods=["proposer", "networks", "engine"],
                                         variants=["largest", "eroded"], segmenter=oracle_segmenter, progress=False)
    rows = evaluation.rows
    assert sorted(calls) == [False, False, True, True] and len(rows) == 6
    assert [(row["variant"], row["advised"]) for row in evaluation.advice][0] == ("largest", 0)  # painted: the largest
    assert [row["variant"] for row in evaluation.advice] == ["largest", "eroded"]
    text = evaluate.summary_markdown(rows, {"data": "x", "command": "y", "advice": evaluation.advice})
    assert text.count("came with advice that the painted slice may not be the largest") == 2
    assert "other kinds of advice are not counted here) in 0 of 1 runs." in text and "today only" not in text
    for row in rows:
        assert row["error"] == "" and row["dice"] > 0.8, row
    proposer, networks = rows[0], rows[1]
    assert 0 < proposer["seconds"] <= networks["seconds"]


def test_engine_methods_called_without_a_case_key_run_the_engine_each_time(oracle_segmenter):
    """The methods are public (``method_registry``): without the key that names a case, a call never reuses the
    result of another volume."""
    from conftest import make_volume

    from gastric_propagate.data.annotation import annotation_from_label

    engine = evaluate.method_registry(segmenter=oracle_segmenter)["engine"]
    small, large = make_volume(depth=20, size=64, centre_z=10, radius_mm=8.0), make_volume()
    results = [engine.run(image, (0.8, 0.8, 2.5), annotation_from_label(label)) for image, label in (small, large)]
    masks = [result[0] if isinstance(result, tuple) else result for result in results]
    assert [mask.shape for mask in masks] == [small[0].shape, large[0].shape]


def test_bundled_weights_beat_copy_slice_on_a_small_held_out_phantom(bundled_segmenter):
    from gastric_propagate.synthetic.generators import load_cases
    from gastric_propagate.synthetic.phantom import HELD_OUT_SEED_START

    cases = load_cases(None, 1, seed_start=HELD_OUT_SEED_START + 7, size_xy=160, slice_spacing=4.0,
                       tumour_diameter_mm=30.0)
    rows = evaluate.run_evaluation(cases, methods=["engine", "proposer", "copy_slice"],
                                   variants=["largest"], segmenter=bundled_segmenter, progress=False).rows
    by_method = {row["method"]: row for row in rows}
    assert all(row["error"] == "" for row in rows), rows
    assert by_method["engine"]["dice"] > 0.7
    assert by_method["engine"]["dice"] > by_method["copy_slice"]["dice"]


def test_evaluate_command_on_held_out_phantoms(tmp_path):
    from gastric_propagate.synthetic.phantom import HELD_OUT_SEED_START

    out = evaluate.evaluate_command(None, str(tmp_path / "report"), n_cases=2, methods=["copy_slice", "region_growing"],
                                    variants=["largest"], progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["example.npz", "figure.png", "results.csv", "summary.md"]
    text = (out / "summary.md").read_text()
    assert f"2 held-out synthetic 'phantom' cases (gastric_propagate.synthetic, seeds {HELD_OUT_SEED_START}-" in text
    assert "### Dice by case group" in text and "| Method | phantom |" in text  # one group: "phantom"
    assert "### Dice by slice thickness" in text and "### Against copy-slice" in text
    assert "gastric-propagate evaluate --out" in text and "--cases 2" in text
    assert len(evaluate.read_csv(out / "results.csv")) == 4



@pytest.mark.parametrize("seed_start, said", [
    (0, "seeds 0-1: seeds below 100000 are those training draws from)"),
    (1_000_000, "seeds 1000000-1000001: the development seeds engine choices were made on)")])
def test_a_report_on_synthetic_seeds_outside_the_held_out_range_does_not_call_them_held_out(tmp_path, seed_start,
                                                                                            said):
    out = evaluate.evaluate_command(None, str(tmp_path / "report"), n_cases=2, methods=["copy_slice"],
                                    variants=["largest"], progress=False, seed_start=seed_start)
    text = (out / "summary.md").read_text()
    assert f"2 synthetic 'phantom' cases (gastric_propagate.synthetic, {said}" in text and "held-out" not in text

def test_evaluate_command_end_to_end_on_one_held_out_phantom(tmp_path, capsys):
    """The evaluation command of docs/evaluation.md, tiny: one case, every method, the default annotation."""
    from gastric_propagate.cli import main

    assert main(["evaluate", "--out", str(tmp_path), "--cases", "1", "--variants", "largest", "--device", "cpu"]) == 0
    rows = evaluate.read_csv(tmp_path / "results.csv")
    assert {row["method"] for row in rows} == set(evaluate.ALL_METHODS)
    engine = next(row for row in rows if row["method"] == "engine")
    assert float(engine["dice"]) > 0.7 and not engine["error"]
    summary = (tmp_path / "summary.md").read_text()
    assert "gastric-propagate evaluate" in summary and "phantom" in summary
    assert (tmp_path / "figure.png").read_bytes().startswith(b"\x89PNG")


def test_the_report_says_when_the_weights_were_trained_on_the_cases_it_scores(oracle_segmenter, tmp_path, capsys,
                                                                               monkeypatch):
    """Cases the weights learned are no test on unseen CT: the report and the console say so, with the count."""
    from conftest import write_cases_folder

    folder = write_cases_folder(tmp_path / "cases", 3)
    monkeypatch.setattr(oracle_segmenter.proposer, "training", {"case_names": ["case1", "phantom_0"], "cases": 2})
    monkeypatch.setattr(oracle_segmenter.refiner, "training", {"case_names": ["case2"], "cases": 1})
    out = evaluate.evaluate_command(str(folder), str(tmp_path / "seen"), methods=["engine"], variants=["largest"],
                                    segmenter=oracle_segmenter, progress=False)
    summary = (out / "summary.md").read_text()
    assert "**The weights were trained on 2 of these 3 cases** (by patient: case1, case2):" in summary
    assert "warning: The weights were trained on 2 of these 3 cases" in capsys.readouterr().out
    # Older weights list only their first 50 names: then the count may be short, and the note says so.
    monkeypatch.setattr(oracle_segmenter.refiner, "training", {"case_names": ["case2"], "cases": 900})
    out = evaluate.evaluate_command(str(folder), str(tmp_path / "partial"), methods=["engine"],
                                    variants=["largest"], segmenter=oracle_segmenter, progress=False)
    assert "case1, case2; these weights list only some of their training cases, so there may be more)" in (
        out / "summary.md").read_text()
    # What the weights they were fine-tuned from learned counts too, and so does another lesion of the same patient.
    monkeypatch.setattr(oracle_segmenter.proposer, "training", {"case_names": ["another_case"],
                                                                "earlier_case_names": ["case0"]})
    monkeypatch.setattr(oracle_segmenter.refiner, "training", {"case_names": ["case1_n2"]})
    out = evaluate.evaluate_command(str(folder), str(tmp_path / "ancestry"), methods=["engine"],
                                    variants=["largest"], segmenter=oracle_segmenter, progress=False)
    assert "trained on 2 of these 3 cases** (by patient: case0, case1)" in (out / "summary.md").read_text()
    monkeypatch.setattr(oracle_segmenter.proposer, "training", {"case_names": ["another_case"]})
    monkeypatch.setattr(oracle_segmenter.refiner, "training", {})
    out = evaluate.evaluate_command(str(folder), str(tmp_path / "unseen"), methods=["engine"], variants=["largest"],
                                    segmenter=oracle_segmenter, progress=False)
    assert "trained on" not in (out / "summary.md").read_text()
