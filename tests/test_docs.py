"""The documentation holds together: the code cites only docs/ sections that exist, never a document
outside the repository, and every relative link in README.md and docs/*.md reaches a file (and, with
an anchor, a heading) that exists."""
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CODE_FOLDERS = ("ptycho", "runners", "tests")
# Written in two pieces so that this file does not match its own patterns.
OUTSIDE_CITATIONS = ("DESIGN" + " §", "CONTRACTS", "../" + "shared")
SECTION_CITATION = re.compile(r"docs/([\w.-]+\.md) (§\d+(?:(?:, | and )§\d+)*)")  # "docs/design.md §4, §5"
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def code_files():
    for folder in CODE_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in (".py", ".yaml") and "__pycache__" not in path.parts:
                yield path


def markdown_files():
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def numbered_sections(markdown: str) -> set[str]:
    """The n of every heading that starts with "n." (``## 5. Physics ...``)."""
    return set(re.findall(r"^#+\s+(\d+)\.\s", markdown, re.M))


def heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings: lower case, punctuation dropped, spaces to hyphens,
    "-1", "-2", ... appended to repeats."""
    anchors, seen = set(), {}
    for title in re.findall(r"^#+\s+(.+?)\s*#*$", FENCE.sub("", markdown), re.M):
        slug = re.sub(r"[^\w\- ]", "", title.replace("`", "").lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def relative_links(markdown: str) -> list[str]:
    """Targets of the links and images outside code, without web addresses."""
    prose = INLINE_CODE.sub("", FENCE.sub("", markdown))
    return [target for target in LINK.findall(prose) if not re.match(r"[a-z]+:", target)]


def link_problems(source: Path) -> list[str]:
    problems = []
    for target in relative_links(source.read_text(encoding="utf-8")):
        file_part, _, anchor = target.partition("#")
        destination = (source.parent / file_part).resolve() if file_part else source
        if not destination.exists():
            problems.append(f"{source.name}: {target}: no such file")
        elif anchor and destination.suffix == ".md":
            if anchor not in heading_anchors(destination.read_text(encoding="utf-8")):
                problems.append(f"{source.name}: {target}: no heading with that anchor")
    return problems


def citation_problems(path: Path, root: Path = ROOT) -> list[str]:
    text, name = path.read_text(encoding="utf-8"), path.relative_to(root)
    problems = [f"{name} cites {cited!r}, outside the repository"
                for cited in OUTSIDE_CITATIONS if cited in text]
    for doc_name, sections in SECTION_CITATION.findall(text):
        doc = root / "docs" / doc_name
        if not doc.exists():
            problems.append(f"{name} cites docs/{doc_name}, which does not exist")
            continue
        present = numbered_sections(doc.read_text(encoding="utf-8"))
        problems += [f"{name} cites docs/{doc_name} §{number}, which has no such section"
                     for number in re.findall(r"§(\d+)", sections) if number not in present]
    return problems


def test_code_cites_only_docs_sections_that_exist():
    problems = [problem for path in code_files() if path != Path(__file__).resolve()
                for problem in citation_problems(path)]
    assert not problems, "\n".join(problems)


def test_docs_cite_only_docs_sections_that_exist():
    problems = [problem for path in markdown_files() for problem in citation_problems(path)]
    assert not problems, "\n".join(problems)


def test_every_relative_link_reaches_a_file_and_heading():
    problems = [problem for path in markdown_files() for problem in link_problems(path)]
    assert not problems, "\n".join(problems)


def test_the_readme_figures_are_committed():
    """A figure only in a working tree would be missing from a fresh clone."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    images = [target for target in relative_links((ROOT / "README.md").read_text(encoding="utf-8"))
              if target.lower().endswith((".png", ".jpg", ".svg"))]
    assert images, "the README shows its science figure"
    tracked = subprocess.run(["git", "ls-files", "--", *images], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    assert sorted(tracked) == sorted(images)


@pytest.mark.parametrize("text, problem", [
    ("see docs/design.md §99", "no such section"),
    ("see docs/design.md §1, §98", "§98, which has no such section"),
    ("see docs/nowhere.md §1", "does not exist"),
    ("see " + "DESIGN" + " §7", "outside the repository"),
    ("see " + "CONTRACTS" + ' "Scaling"', "outside the repository"),
    ("see ../" + "shared/DESIGN.md", "outside the repository"),
])
def test_a_bad_citation_is_caught(tmp_path, text, problem):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "design.md").write_text("# Design\n\n## 1. Purpose\n", encoding="utf-8")
    cited = tmp_path / "module.py"
    cited.write_text(f'"""{text}."""\n', encoding="utf-8")
    problems = citation_problems(cited, tmp_path)
    assert problems and problem in problems[0]


def test_a_broken_link_and_anchor_are_caught(tmp_path):
    (tmp_path / "other.md").write_text("# Other\n\n## 2. A section: with `code`\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#2-a-section-with-code) [file](missing.md) [anchor](other.md#nowhere)\n"
                    "`[in code](missing.md)` [web](https://example.org/x.md)\n", encoding="utf-8")
    assert link_problems(page) == ["page.md: missing.md: no such file",
                                   "page.md: other.md#nowhere: no heading with that anchor"]
