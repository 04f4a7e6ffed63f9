"""The documentation a newcomer reads: a short README, a config reference that matches the code,
and links that lead somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.benchrun import load_script

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]

# The README's two commands: the first is what a newcomer runs, the second is what .ci/run
# reads from the line after the marker, so both must stay exactly as they are.
DEMO_COMMAND = "pip install torch==2.13.0 -e . && atari-agent demo"
TEST_COMMAND = 'pip install torch==2.13.0 -e ".[test]" && ruff check . && python -m pytest'
MARKER = "<!-- test command -->"


# ------------------------------------------------------------------------------ config reference
def test_config_reference_is_up_to_date(capsys):
    gen = load_script("gen_config_docs")
    assert gen.main(["--check"]) == 0, capsys.readouterr().err


def test_config_reference_lists_every_setting_with_its_default():
    from agent.config import SECTIONS, Config

    text = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f"## [{section}]" in text
    assert "| `lr` | `float` | `0.0001` | `--lr` |" in text
    assert "| `capacity` | `int` | `1_000_000` | `--capacity` |" in text
    assert "`--double-dqn` / `--no-double-dqn`" in text
    assert len(re.findall(r"^\| `\w+` \|", text, re.M)) == sum(
        len(vars(getattr(Config(), s))) for s in SECTIONS)


def test_check_fails_in_one_line_on_a_stale_page_and_a_rewrite_fixes_it(tmp_path, capsys):
    gen = load_script("gen_config_docs")
    page = tmp_path / "config.md"
    current = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    intro = current.split(gen.BEGIN)[0]
    page.write_text(current.replace("`--lr` | Adam step size.", "`--lr` | An old doc."),
                    encoding="utf-8")

    assert gen.main(["--check", "--path", str(page)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(page) in err and "gen_config_docs.py" in err
    assert "An old doc." in page.read_text(encoding="utf-8")  # --check changes nothing

    assert gen.main(["--path", str(page)]) == 0
    assert gen.main(["--check", "--path", str(page)]) == 0
    assert page.read_text(encoding="utf-8").startswith(intro)  # the hand-written part is kept


def test_check_fails_when_the_page_is_missing(tmp_path, capsys):
    gen = load_script("gen_config_docs")
    assert gen.main(["--check", "--path", str(tmp_path / "config.md")]) == 1
    assert "stale" in capsys.readouterr().err


# ------------------------------------------------------------------------------ README
def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move depth to docs/"


def test_readme_keeps_its_two_commands():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert lines.count(MARKER) == 1
    # What .ci/run does: the first line after the marker that is not a code fence.
    after = [line for line in lines[lines.index(MARKER) + 1:] if not line.startswith("```")]
    assert after[0] == TEST_COMMAND
    assert DEMO_COMMAND in lines
    assert lines.index(DEMO_COMMAND) < lines.index(MARKER)  # the demo comes first


# ------------------------------------------------------------------------------ links
def _without_code(text: str) -> str:
    """The text with fenced blocks and inline code removed: links there are not links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation (backticks too) dropped, spaces to
    hyphens; headings inside fenced blocks are not headings."""
    found: set[str] = set()
    fenced = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#{1,6}\s+(.*)", line)):
            found.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return found


def _links(page: Path) -> list[str]:
    text = _without_code(page.read_text(encoding="utf-8"))
    return re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_files_that_exist(page):
    broken = []
    for link in _links(page):
        if re.match(r"[a-z]+:", link):  # https:, mailto:: not checked (no network in tests)
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link} (no such file)")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            broken.append(f"{link} (no heading #{anchor} in {target.name})")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {', '.join(broken)}"
