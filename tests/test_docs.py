"""The README is a front page (issue 23, section 5): at most 300 lines, and every link in it, and in the
docs pages, reaches an existing file and heading, so no moved table is out of reach. ``make docs`` (CI)
builds the site itself with warnings as errors."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading (MyST's ``myst_heading_anchors`` makes the same)."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    fence, found = False, set()
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and (m := re.match(r"#+ (.*)", line)):
            found.add(slug(m.group(1)))
    return found


def links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", t)]


def test_readme_is_a_front_page():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    for section in ("## Install", "## Quick start", "## Python API", "## Commands", "## What it concludes",
                    "## Documentation"):
        assert section in text


@pytest.mark.parametrize("path", [ROOT / "README.md", *PAGES], ids=lambda p: p.name)
def test_links_reach_a_file_and_heading(path):
    broken = []
    for target in links(path):
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            broken.append(f"{target}: no file {dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert not broken, broken


def test_every_page_with_a_measured_table_is_linked_from_the_readme():
    readme = set(links(ROOT / "README.md"))
    linked = {t.partition("#")[0] for t in readme}
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        if re.search(r"^\|.*\d\.\d", text, re.M):
            assert f"docs/{page.name}" in linked, f"{page.name} holds tables but the README does not link it"


def test_every_page_is_in_the_site():
    index = (DOCS / "index.md").read_text()
    listed = set(re.findall(r"^([\w\-/]+)$", index, re.M))
    assert {p.stem for p in PAGES} - {"index"} <= listed
