"""The child-process contract is defined once, in ``gastric_propagate/protocol.py``: no other file defines an exit
code, the progress stages, a progress-line format, a manual-time figure or the report's fields, and the protocol
loads without torch."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

from gastric_propagate import protocol

REPO = Path(__file__).resolve().parents[3]
PROTOCOL = REPO / "GastricPropagate" / "gastric_propagate" / "protocol.py"
# Where the engine, the Slicer module and the scripts live (tests may spell the contract out to check it).
SOURCES = ("GastricPropagate", "scripts")

# A second definition of a protocol constant: an assignment to an exit code, to STAGES (or a STAGE_ name), to a
# manual-time figure or to an old name of one (runner's EXIT_*_ERROR, worker's CODE_*), alone or in a tuple
# assignment; a progress line written or parsed by hand; or a report written field by field (a dict literal).
_NAMES = r"(?:EXIT_[A-Z_]+|CODE_[A-Z_]+|STAGES|STAGE_[A-Z_]+|MANUAL_[A-Z_]+_SECONDS)"
SECOND_DEFINITION = re.compile(rf"^[ \t]*(?:[A-Za-z_][A-Za-z_0-9]*[ \t]*,[ \t]*)*{_NAMES}[ \t]*(?:,[^=\n]*)?=(?!=)"
                               r"|PROGRESS stage=[{(%]"
                               r"|[\"'](?:painted_slices|slice_confidence|slices_to_review|timings_seconds)[\"']\s*:",
                               re.MULTILINE)


def second_definitions(root: Path, protocol_file: Path) -> list[str]:
    """'path:line: text' for each line under ``root`` (its SOURCES folders) that defines a protocol constant, outside
    ``protocol_file``."""
    found = []
    for folder in SOURCES:
        for path in sorted((root / folder).rglob("*.py")):
            if path.resolve() == protocol_file.resolve() or "__pycache__" in path.parts:
                continue
            text = path.read_text(encoding="utf-8")
            for match in SECOND_DEFINITION.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                found.append(f"{path.relative_to(root)}:{line}: {text.splitlines()[line - 1].strip()}")
    return found


def test_exit_codes_stages_and_manual_times_are_defined_only_in_the_protocol():
    assert second_definitions(REPO, PROTOCOL) == []


def test_the_protocol_defines_them(tmp_path):
    """The check above finds the definitions it looks for: it finds every one of the protocol's own."""
    copy = tmp_path / "GastricPropagate" / "protocol_copy.py"
    copy.parent.mkdir()
    copy.write_text(PROTOCOL.read_text(encoding="utf-8"), encoding="utf-8")
    found = "\n".join(second_definitions(tmp_path, PROTOCOL))
    for name in ("EXIT_OK", "EXIT_FAILED", "EXIT_BAD_INPUT", "EXIT_WEIGHTS", "EXIT_CANCELLED", "EXIT_TERMINATED",
                 "STAGES =", "STAGE_LOAD", "MANUAL_FULL_OUTLINE_SECONDS", "MANUAL_ONE_SLICE_SECONDS",
                 "PROGRESS stage=("):
        assert name in found, name


def test_the_check_finds_a_second_definition(tmp_path):
    """The check can fail: the definitions this module replaced, put back in a copy of the tree, are each found."""
    lib = tmp_path / "GastricPropagate" / "GastricPropagateLib"
    lib.mkdir(parents=True)
    (lib / "runner.py").write_text('STAGES = ("load", "read", "proposer", "refiner", "write")\n'
                                   "EXIT_INPUT_ERROR, EXIT_WEIGHTS_ERROR, EXIT_CANCELLED = 2, 3, 130\n")
    (lib / "results_table.py").write_text("MANUAL_ONE_SLICE_SECONDS = 40\n")
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "worker.py").write_text('    CODE_OK, CODE_FAILED = 0, 1\n'
                                       'send(f"PROGRESS stage={stage} done={done} total={total}")\n'
                                       "if code == EXIT_OK:\n    pass\nMANUAL = {EXIT_OK: 1}\n")
    found = second_definitions(tmp_path, PROTOCOL)
    assert [line.split(":")[0:2] for line in found] == [
        ["GastricPropagate/GastricPropagateLib/results_table.py", "1"],
        ["GastricPropagate/GastricPropagateLib/runner.py", "1"],
        ["GastricPropagate/GastricPropagateLib/runner.py", "2"],
        ["scripts/worker.py", "1"], ["scripts/worker.py", "2"]]


def test_the_protocol_loads_without_torch_or_the_engine():
    """Slicer's own process imports it; it needs the standard library only."""
    code = ("import sys; import gastric_propagate.protocol; print('\\n'.join(name for name in sys.modules "
            "if name.startswith(('torch', 'numpy', 'gastric_propagate.'))))")
    loaded = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    assert loaded == ["gastric_propagate.protocol"]


def test_a_progress_line_reads_back_as_it_was_written():
    for stage in protocol.STAGES:
        assert protocol.parse_progress_line(protocol.progress_line(stage, 3, 20) + "\n") == (stage, 3, 20)
    assert protocol.progress_line(protocol.STAGE_PROPOSER, 3, 20) == "PROGRESS stage=proposer done=3 total=20"
    assert protocol.parse_progress_line("PROGRESS stage=proposer done=x total=20") is None
    assert protocol.parse_progress_line("tumour: 1.0 mL") is None


def test_the_old_report_and_its_reading_are_found(tmp_path):
    """The check can fail on the report too: a report built as a dict literal, as build_report once did."""
    engine = tmp_path / "GastricPropagate"
    engine.mkdir()
    (engine / "file_segmentation.py").write_text('report = {\n    "version": "1",\n'
                                                 '    "painted_slices": result.anchor_slices,\n}\n')
    assert [line.split(":")[1] for line in second_definitions(tmp_path, PROTOCOL)] == ["3"]


def test_the_slicer_side_result_is_the_mask_and_the_report():
    """No hand copy of the result type: ``run_output.RunResult`` holds the mask and a ``protocol.Report``, nothing
    else."""
    runOutput = REPO / "GastricPropagate" / "GastricPropagateLib" / "run_output.py"
    tree = ast.parse(runOutput.read_text(encoding="utf-8"))
    result = next(node for node in ast.walk(tree) if isinstance(node, ast.ClassDef) and node.name == "RunResult")
    fields = [node.target.id for node in result.body if isinstance(node, ast.AnnAssign)]
    assert fields == ["mask", "report"]
    assert ast.unparse(next(node for node in result.body if isinstance(node, ast.AnnAssign)
                            and node.target.id == "report").annotation) == "Report"


def test_a_report_reads_back_as_it_was_written():
    report = protocol.Report(version="1.0", volume_ml=12.5, slices={"first": 3, "last": 7, "count": 5},
                             painted_slices=[5], seconds=1.25, device="cpu", timings_seconds={"proposer": 0.5},
                             slice_confidence={3: 0.4, 4: 0.9, 6: 0.8, 7: 0.3}, least_confident_slices=[7, 3],
                             slices_to_review=[3, 7], review_reasons={3: ["cut_back"], 7: ["low_confidence"]},
                             stop_reasons={"up": "tumour ended"},
                             advice=[{"kind": "edge", "sentence": "Slice 7 is the volume's last."}], consensus=True,
                             voxels=120, weights={"proposer": "p.pt", "refiner": "r.pt"}, output="out.nrrd")
    written = json.loads(json.dumps(report.to_json()))
    assert list(written) == ["version", "volume_ml", "slices", "painted_slices", "seconds", "device",
                             "timings_seconds", "manual_estimate_seconds", "slice_confidence",
                             "least_confident_slices", "slices_to_review", "review_reasons", "stop_reasons", "advice",
                             "consensus", "voxels", "weights", "output"]
    assert written["slice_confidence"] == {"3": 0.4, "4": 0.9, "6": 0.8, "7": 0.3}
    assert written["review_reasons"] == {"3": ["cut_back"], "7": ["low_confidence"]}
    assert written["manual_estimate_seconds"] == {"full_outline": protocol.MANUAL_FULL_OUTLINE_SECONDS,
                                                  "one_slice": protocol.MANUAL_ONE_SLICE_SECONDS}
    assert protocol.Report.from_json(written) == report


def test_a_partial_report_reads_with_defaults():
    """A report missing fields (an older engine's, a test's) reads back; what it lacks takes its default."""
    report = protocol.Report.from_json({"painted_slices": ["2"], "slice_confidence": {"1": "0.3"},
                                        "slices_to_review": [3, 1], "seconds": 1})
    assert report.painted_slices == [2] and report.slice_confidence == {1: 0.3} and report.slices_to_review == [1, 3]
    assert report.seconds == 1.0 and report.device == "" and report.advice == [] and report.slices is None
    assert "weights" not in report.to_json() and report.to_json()["slices"] is None
