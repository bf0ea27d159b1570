"""A raising cell must fail the book build, every time, not only the first build.

Builds a two-page book in a temporary folder with the project's own `_config.yml` and
`tools/build_book.py` (what `make book` runs).
"""

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def write_notebook(path: Path, source: str):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# A page"),
                                         nbformat.v4.new_code_cell(source)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def book(tmp_path):
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["sphinx"]["config"].pop("html_extra_path")  # the vendored JS is not needed here
    (tmp_path / "_config.yml").write_text(yaml.safe_dump(config))
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n- file: page\n")
    (tmp_path / "intro.md").write_text("# Intro\n")
    return tmp_path


def build(book: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "build_book.py"), str(book)],
                          capture_output=True, text=True, timeout=600)


def test_failing_cell_fails_every_build_and_the_fix_passes(book):
    write_notebook(book / "page.ipynb", "raise RuntimeError('deliberately broken cell')")
    for attempt in ("first build", "second build (nothing changed)"):
        result = build(book)
        log = result.stdout + result.stderr
        assert result.returncode != 0, f"{attempt} passed with a raising cell:\n{log[-3000:]}"
        assert "Executing notebook failed" in log, log[-3000:]
    write_notebook(book / "page.ipynb", "print('fixed')")
    result = build(book)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "fixed" in (book / "_build" / "html" / "page.html").read_text()
