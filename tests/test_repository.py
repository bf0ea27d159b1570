"""Repository rules that keep the book installable, offline and reviewable."""

import re
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p for d in ("book", "labs") for p in (ROOT / d).rglob("*.ipynb")
                   if ".ipynb_checkpoints" not in p.parts)


def test_requirements_are_exact_pins():
    lines = [l.split("#")[0].strip() for l in (ROOT / "requirements.txt").read_text().splitlines()]
    pins = dict(l.split("==") for l in lines if l)
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[A-Za-z0-9_.+\-]+", f"{k}=={v}") for k, v in pins.items())
    assert pins["torch"] == "2.13.0" and pins["triton"] == "3.7.1"
    assert pins["jupyter-book"].startswith("1.")
    assert "numpy" in pins


def test_notebooks_are_committed_stripped():
    assert NOTEBOOKS, "the book has notebooks"
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "strip_outputs.py"), "--check",
                          *map(str, NOTEBOOKS)], capture_output=True, text=True)
    assert out.returncode == 0, "run `make strip`:\n" + out.stdout


def test_notebooks_start_with_the_setup_cell():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        first = next(c for c in nb.cells if c.cell_type == "code")
        assert "setup(" in first.source, f"{path.name}: first code cell must call ondevice.notebook.setup"


def test_no_javascript_under_static_folders():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert not [f for f in tracked if re.search(r"(^|/)_static/.*\.js$", f)]
