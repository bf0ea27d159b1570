"""The book's structure, read from its files (no notebook is executed): page length, the table of
contents, links between pages, the references page, the diagrams and the exercise solutions
(issue 18, the second edition)."""

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
MAX_CELLS = 35  # no page above this many cells
MIN_DIAGRAMS = 5

NOTEBOOKS = sorted([*BOOK.rglob("*.ipynb"), *(ROOT / "labs").rglob("*.ipynb")])
NOTEBOOKS = [p for p in NOTEBOOKS if ".ipynb_checkpoints" not in p.parts]
PAGES = sorted([*BOOK.rglob("*.md"), *BOOK.rglob("*.ipynb"), *(ROOT / "labs").rglob("*.ipynb"),
                *(ROOT / "labs").glob("*.md")])
PAGES = [p for p in PAGES if ".ipynb_checkpoints" not in p.parts]


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def markdown_of(path: Path) -> str:
    """The page's markdown: a .md file's text, or a notebook's markdown cells joined."""
    if path.suffix == ".md":
        return path.read_text()
    cells = json.loads(path.read_text())["cells"]
    return "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


def toc_files() -> list:
    """Every `file:` entry of _toc.yml (the root included), as written there (no suffix)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    found = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                found.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc.get("parts", toc.get("chapters", [])))
    return found


def source_of(entry: str):
    """The .ipynb or .md file a _toc.yml entry names, or None."""
    for suffix in (".ipynb", ".md"):
        path = ROOT / (entry + suffix)
        if path.is_file():
            return path
    return None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=rel)
def test_no_page_above_35_cells(path):
    n = len(json.loads(path.read_text())["cells"])
    assert n <= MAX_CELLS, f"{rel(path)} has {n} cells; split it into pages of at most {MAX_CELLS}"


def test_every_toc_entry_exists_and_every_book_notebook_is_in_the_toc():
    entries = toc_files()
    missing = [e for e in entries if source_of(e) is None]
    assert not missing, f"_toc.yml names pages that do not exist: {missing}"
    listed = {rel(source_of(e)) for e in entries}
    absent = [rel(p) for p in sorted(BOOK.rglob("*.ipynb"))
              if ".ipynb_checkpoints" not in p.parts and rel(p) not in listed]
    assert not absent, f"book notebooks missing from _toc.yml: {absent}"


def test_intro_links_the_references_page():
    assert (BOOK / "references.md").is_file()
    intro = (BOOK / "intro.md").read_text()
    assert re.search(r"\{doc\}`(?:[^`<]*<)?references>?`", intro), "book/intro.md must link {doc}`references`"
    assert "references" in toc_files()[1:] or "book/references" in toc_files(), "references.md is not in _toc.yml"


def test_at_least_five_diagrams_each_referenced_from_a_page():
    diagrams = sorted((BOOK / "figures").glob("*.svg"))
    texts = {rel(p): markdown_of(p) for p in PAGES}
    unreferenced = [d.name for d in diagrams if not any(d.name in text for text in texts.values())]
    assert not unreferenced, f"diagrams no page shows: {unreferenced}"
    assert len(diagrams) >= MIN_DIAGRAMS, (
        f"{len(diagrams)} SVG diagrams in book/figures ({[d.name for d in diagrams]}); "
        f"the second edition needs at least {MIN_DIAGRAMS}")


DOC_LINK = re.compile(r"\{doc\}`([^`]+)`")


def doc_target(link: str) -> str:
    """`title <target>` or `target` -> target."""
    match = re.search(r"<([^>]+)>\s*$", link)
    return (match.group(1) if match else link).strip()


def test_every_doc_link_target_exists():
    broken = []
    for page in PAGES:
        for link in DOC_LINK.findall(markdown_of(page)):
            target = doc_target(link)
            base = ROOT if target.startswith("/") else page.parent
            path = (base / target.lstrip("/")).resolve()
            if not any(path.with_name(path.name + suffix).is_file() for suffix in (".ipynb", ".md")):
                broken.append(f"{rel(page)}: {{doc}}`{link}`")
    assert not broken, "links to pages that do not exist:\n" + "\n".join(broken)


EXERCISE = re.compile(r"^(?:\*\*\d+\.\*\*|\d+\.\s)")
SOLUTION = re.compile(r"^```+\{admonition\}\s*Solution")


def exercise_sections(text: str) -> list:
    """The lines of every '## Exercises' section (up to the next heading of level 1 or 2)."""
    sections, current = [], None
    for line in text.splitlines():
        if re.match(r"^#{1,2}\s", line):
            current = [] if re.match(r"^#{1,2}\s+Exercises\b", line) else None
            if current is not None:
                sections.append(current)
        elif current is not None:
            current.append(line)
    return sections


def unsolved(lines: list) -> list:
    """Exercises of a section not followed, before the next exercise, by a dropdown Solution."""
    missing, open_exercise, fence = [], None, None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if fence is not None:  # inside an admonition or code block: exercises cannot start here
            if stripped.startswith(fence) and not stripped[len(fence):].strip():
                fence = None
            continue
        if SOLUTION.match(stripped):
            fence = re.match(r"^`+", stripped).group(0)
            dropdown = any(":class: dropdown" in lines[j] for j in range(i + 1, min(i + 4, len(lines))))
            if open_exercise is not None and dropdown:
                open_exercise = None
            continue
        if stripped.startswith("```"):
            fence = re.match(r"^`+", stripped).group(0)
            continue
        if EXERCISE.match(line):
            if open_exercise is not None:
                missing.append(open_exercise)
            open_exercise = stripped[:60]
    if open_exercise is not None:
        missing.append(open_exercise)
    return missing


CHAPTER_PAGES = [p for p in PAGES if p.is_relative_to(BOOK) and p.parent != BOOK]


@pytest.mark.parametrize("path", CHAPTER_PAGES, ids=rel)
def test_every_exercise_has_a_dropdown_solution(path):
    missing = [m for section in exercise_sections(markdown_of(path)) for m in unsolved(section)]
    assert not missing, f"{rel(path)}: exercises without a dropdown Solution under them: {missing}"


def test_the_exercise_check_can_fail():
    # the parser above must see a missing solution, a plain (not dropdown) one, and accept a good one
    good = ["**1.** Do it.", "", "```{admonition} Solution", ":class: dropdown", "1. a list inside", "```"]
    assert unsolved(good) == []
    assert unsolved(["1. Do it.", "2. And this."]) == ["1. Do it.", "2. And this."]
    plain = ["**1.** Do it.", "```{admonition} Solution", "text", "```"]
    assert unsolved(plain) == ["**1.** Do it."]


GLUE_USE = re.compile(r"\{glue(?::\w+)?\}`([A-Za-z0-9_]+)")
GLUE_DEF = re.compile(r"""glue\(\s*(?:f?["'])([A-Za-z0-9_{}]+)["']""")


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if "{glue" in markdown_of(p)], ids=rel)
def test_every_glued_number_is_computed_by_a_cell_of_its_page(path):
    cells = json.loads(path.read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    defined = GLUE_DEF.findall(code)
    patterns = [re.compile("^" + re.sub(r"\\\{[^}]*\\\}", "[A-Za-z0-9_]+", re.escape(d)) + "$") for d in defined]
    missing = sorted({key for key in GLUE_USE.findall(markdown_of(path))
                      if not any(p.match(key) for p in patterns)})
    assert not missing, f"{rel(path)} shows glued values no cell of it computes: {missing}"


def test_every_ref_citation_has_an_entry_on_the_references_page():
    labels = set(re.findall(r"^\((ref-[A-Za-z0-9-]+)\)=", (BOOK / "references.md").read_text(), re.M))
    cited = {(rel(p), key) for p in PAGES for key in re.findall(r"\{ref\}`(?:[^`<]*<)?(ref-[A-Za-z0-9-]+)>?`",
                                                              markdown_of(p))}
    missing = sorted(f"{page}: {key}" for page, key in cited if key not in labels)
    assert not missing, "citations of entries book/references.md does not have:\n" + "\n".join(missing)
