"""Writes an evaluation report's summary.md again from its own results.csv, after the report's layout changed.

No case is run again: every figure comes from the per-case rows the report's command wrote (results.csv, and
confidence.csv where there is one). The summary keeps its Data and Command lines, and says when and how it was
written again. A summary that counted the engine's advice is refused: those counts are not in results.csv, so run
its command again instead.

    .venv/bin/python scripts/rerender_report.py docs/evaluation/real-ct-crossval
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
from pathlib import Path

from gastric_propagate.evaluation.reporting import CONFIDENCE_FILE, read_confidence, read_csv, summary_markdown

ADVICE_LINE = "The engine's result came with advice"
# The header's lines that summary_markdown writes itself; any other bullet of the header is a note, kept.
OWN_LINES = ("Data", "Cases", "Command", "Version", "Date")
REWRITTEN = "Written again on "


def rerender(folder: Path) -> None:
    """Writes ``folder``/summary.md again; raises ValueError when its figures cannot all come from its files."""
    summary = (folder / "summary.md").read_text(encoding="utf-8")
    if ADVICE_LINE in summary:
        raise ValueError(f"{folder / 'summary.md'} counts the engine's advice, which results.csv does not hold: run "
                         "its command again instead")
    header = {name: re.search(rf"^- \*\*{name}:\*\* (.*)$", summary, re.MULTILINE) for name in ("Data", "Command")}
    if not all(header.values()):
        raise ValueError(f"{folder / 'summary.md'} has no Data and Command lines: not a report of this project")
    head = summary[header["Data"].start():].split("\n\n", 1)[0].splitlines()  # the header's bullets
    notes = [line[2:] for line in head if line.startswith("- ") and not line.startswith(REWRITTEN, 2)
             and not any(line.startswith(f"- **{name}:**") for name in OWN_LINES)]
    confidence = folder / CONFIDENCE_FILE
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    meta = {"data": header["Data"].group(1), "command": header["Command"].group(1).strip("`"), "device": "cpu",
            "notes": notes + [f"{REWRITTEN}{when} from this folder's results.csv"
                              f"{' and ' + CONFIDENCE_FILE if confidence.is_file() else ''} by `python "
                              f"scripts/rerender_report.py {folder}` (the report's layout changed; no case was run "
                              "again): Version and Date are the rewrite's, every figure is the Command's runs'."]}
    if confidence.is_file():
        meta["confidence"] = read_confidence(confidence)
    (folder / "summary.md").write_text(summary_markdown(read_csv(folder / "results.csv"), meta), encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path, help="report folders (summary.md, results.csv)")
    args = parser.parse_args()
    for folder in args.reports:
        try:
            rerender(folder)
        except (OSError, ValueError) as error:
            print(f"{folder}: {error}", file=sys.stderr)
            return 1
        print(f"wrote {folder / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
