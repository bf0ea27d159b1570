"""Strip notebooks for committing: no outputs except the small text outputs nbval compares.

A code cell whose source contains ``# NBVAL_CHECK_OUTPUT`` keeps its plain-text and stream
outputs and its execution count (nbval, run with ``--nbval-lax``, compares exactly those
outputs); every other output and execution count, and the saved widget state, are removed. ``--check`` only reports notebooks
that would change (exit 1), which is what ``tests/test_repository.py`` uses.

Usage: ``python tools/strip_outputs.py [--check] NOTEBOOK...``
"""

from __future__ import annotations

import sys

import nbformat

CHECK_MARK = "# NBVAL_CHECK_OUTPUT"
KEPT_MIME = {"text/plain"}


def stripped(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    nb = nbformat.from_dict(nb)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        keep = []
        if CHECK_MARK in cell.source:
            for out in cell.outputs:
                if out.output_type == "stream":
                    keep.append(out)
                elif out.output_type in ("execute_result", "display_data"):
                    data = {k: v for k, v in out.data.items() if k in KEPT_MIME}
                    if data:
                        out.data = data
                        out.metadata = {}
                        keep.append(out)
        cell.outputs = keep
        if not keep:  # nbval rejects a cell with outputs but no execution count: keep it there
            cell.execution_count = None
    return nb


def main(argv: list[str]) -> int:
    check = "--check" in argv
    paths = [a for a in argv if a != "--check"]
    dirty = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        clean = stripped(nb)
        if clean != nb:
            dirty.append(path)
            if not check:
                nbformat.write(clean, path)
    for path in dirty:
        print(("needs stripping: " if check else "stripped: ") + path)
    return 1 if check and dirty else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
