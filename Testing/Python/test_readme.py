"""The README and docs/ hold together: every relative link resolves (file and heading), the README stays short, and
every command it shows is one the CLI accepts. Nothing is run and nothing is fetched."""

from __future__ import annotations

import re
import shlex
import unicodedata
from pathlib import Path

import pytest

from gastric_propagate.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_LINES = 200

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"(`+)(.+?)\1")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def _prose_lines(text: str, blank_code: bool = True):
    """(line number, line) outside fenced code blocks, inline code spans blanked unless ``blank_code`` is False."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, _INLINE_CODE.sub(lambda m: " " * len(m.group(0)), line) if blank_code else line


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: the rendered text, lower case, without punctuation, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    text = re.sub(r"(?<!\w)_+|_+(?!\w)", "", text)  # emphasis underscores, not those inside a word
    kept = "".join(c for c in text.lower()
                   if c in " -" or unicodedata.category(c)[0] in "LMN" or unicodedata.category(c) == "Pc")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file; repeated headings get -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in _prose_lines(path.read_text(encoding="utf-8"), blank_code=False):
        match = _HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def broken_links(path: Path) -> list[str]:
    """'file:line: target (why)' for each relative link of a Markdown file that points at nothing."""
    lines = dict(_prose_lines(path.read_text(encoding="utf-8")))
    prose = "\n".join(lines.get(number, "") for number in range(1, max(lines, default=0) + 1))
    found = [(prose.count("\n", 0, m.start()) + 1, m.group(1)) for m in _LINK.finditer(prose)]
    found += [(number, m.group(1)) for number, line in lines.items() for m in [_REFERENCE.match(line)] if m]
    problems = []
    for number, target in sorted(found, key=lambda item: item[0]):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:, ...
            continue
        file_part, _, anchor = target.partition("#")
        where = (path.parent / file_part).resolve() if file_part else path
        if not where.exists():
            problems.append(f"{path.name}:{number}: {target} (no such file)")
        elif anchor and where.suffix == ".md" and anchor not in anchors(where):
            problems.append(f"{path.name}:{number}: {target} (no heading '{anchor}' in {where.name})")
    return problems


def readme_commands(text: str) -> list[str]:
    """The command lines the README shows: each line of a code block, and each inline code span of its prose."""
    commands, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif fenced:
            commands.append(line.strip())
        else:
            commands += [m.group(2).strip() for m in _INLINE_CODE.finditer(line)]
    return [part.strip() for command in commands for part in command.split("&&")]


def command_problems(command: str) -> list[str]:
    """Why a README command would not run: an unknown sub-command or option, or a script that does not exist."""
    words = shlex.split(command, comments=True)
    if words[:1] == ["bash"] and len(words) > 1:
        return [] if (ROOT / words[1]).is_file() else [f"{command}: {words[1]} does not exist"]
    if words[:1] not in ([".venv/bin/gastric-propagate"], ["gastric-propagate"]):
        return []
    try:
        build_parser().parse_args(words[1:])
    except SystemExit:
        return [f"{command}: gastric-propagate does not accept it"]
    return []


# ------------------------------------------------------------------------------------------------- the tests


def test_the_readme_is_short():
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move detail into docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page):
    assert not broken_links(page)


def test_the_quick_start_commands_are_there():
    commands = readme_commands(README.read_text(encoding="utf-8"))
    lines = README.read_text(encoding="utf-8").splitlines()
    assert "bash scripts/setup.sh && .venv/bin/gastric-propagate demo" in lines
    assert "bash scripts/test.sh" in lines
    assert any(command.startswith(".venv/bin/gastric-propagate segment ") for command in commands)


def test_every_readme_command_parses_and_every_script_exists():
    commands = [c for c in readme_commands(README.read_text(encoding="utf-8"))
                if c.startswith((".venv/bin/gastric-propagate", "gastric-propagate ", "bash "))]
    assert len(commands) >= 3
    assert not [problem for command in commands for problem in command_problems(command)]


def test_the_checks_can_fail(tmp_path, capsys):
    """A missing file, a missing heading and an unknown option are each reported; code blocks are not links."""
    (tmp_path / "other.md").write_text("# Other page\n\n## Exit codes\n\n## Exit codes\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text("# Page: one `code` heading\n\n"
                    "[fine](other.md#exit-codes-1) [fine too](#page-one-code-heading) [web](https://example.org)\n"
                    "[gone](missing.md) and ![gone picture](docs/none.png)\n"
                    "[no heading](other.md#exit-code) [a link over\ntwo lines](nowhere.md)\n"
                    "```\n[inside a code block](nowhere.md)\n```\n", encoding="utf-8")
    problems = broken_links(page)
    assert problems == ["page.md:4: missing.md (no such file)", "page.md:4: docs/none.png (no such file)",
                        "page.md:5: other.md#exit-code (no heading 'exit-code' in other.md)",
                        "page.md:5: nowhere.md (no such file)"]
    assert command_problems(".venv/bin/gastric-propagate segment --image a.nrrd --no-such-option")
    assert command_problems(".venv/bin/gastric-propagate segmnt --image a.nrrd")
    assert command_problems("bash scripts/no-such-script.sh")
    assert not command_problems(".venv/bin/gastric-propagate demo --out somewhere")
    capsys.readouterr()  # argparse's usage messages


def test_github_slugs():
    assert github_slug("Tutorial: the built-in example in Slicer") == "tutorial-the-built-in-example-in-slicer"
    assert github_slug("train: your own weights, or fine-tuning") == "train-your-own-weights-or-fine-tuning"
    assert github_slug("A painted slice (dev cases)") == "a-painted-slice-dev-cases"
    assert github_slug("`segment` and `file_segmentation`") == "segment-and-file_segmentation"
