"""The README's first command ends in the demo: it must segment the built-in example well and say so."""

import json

from gastric_propagate.demo import run_demo


def test_demo_prints_volume_dice_and_time_beside_manual_estimates(tmp_path, capsys, bundled_segmenter):
    report = run_demo(tmp_path, segmenter=bundled_segmenter)
    printed = capsys.readouterr().out
    assert "mL" in printed and "Dice vs truth" in printed and "7 min" in printed and "40 s" in printed
    assert report["dice_vs_truth"] > 0.8  # 0.81 with the shipped weights; a broken pipeline scores far less
    assert {p.name for p in tmp_path.iterdir()} >= {"ct.nrrd", "truth.nrrd", "annotation.nrrd", "result.nrrd",
                                                    "report.json"}
    written = json.loads((tmp_path / "report.json").read_text())
    assert written["volume_ml"] == report["volume_ml"]
    assert written["consensus"] is True and "consensus" in written["timings_seconds"]
    run_demo(tmp_path, segmenter=bundled_segmenter)  # running it again replaces its own earlier output
