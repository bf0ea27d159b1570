"""Write the student version of every lab from its solved twin in ``labs/solutions/``.

The solved notebooks are the only source of the labs: edit those, then run this script, and
``tests/test_labs.py`` fails until the two folders agree. In a solved notebook:

- the code a student writes sits between two marker lines, inside a function body or at the
  top level of a cell::

      ### BEGIN SOLUTION hint: which of dL/dW, dL/db and dL/dx reads x?
      return 4 * numel(x_shape) if layer.weight.requires_grad else 0
      ### END SOLUTION

  and the student version has, at the same indentation, one ``raise NotImplementedError`` whose
  message names the exercise (from the next check cell) and gives the hint;
- a markdown cell tagged ``solution`` (a model answer to a written question) becomes an empty
  answer cell tagged ``answer``; a cell tagged ``solution-only`` is left out.

Everything else, cell ids included, is copied, so the grader (:mod:`ondevice.grade`) can find a
student's cells in the solved notebook. Outputs are dropped.

Usage: ``python labs/make_student.py [--check]`` (``--check``: write nothing, exit 1 and name
the student notebooks that are out of date).
"""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import nbformat

LABS = Path(__file__).resolve().parent
SOLUTIONS = LABS / "solutions"
BEGIN = re.compile(r"^(?P<indent>[ \t]*)### BEGIN SOLUTION(?:[ \t]+hint:[ \t]*(?P<hint>.*?))?[ \t]*$")
END = re.compile(r"^[ \t]*### END SOLUTION[ \t]*$")
CHECK = re.compile(r"^# CHECK exercise (?P<id>\S+): (?P<title>.+?)\s*$")
ANSWER = "**Your answer:**"


def check_marker(source: str) -> tuple[str, str] | None:
    """(exercise id, title) when ``source`` is a check cell (its first line is the marker)."""
    match = CHECK.match(source.split("\n", 1)[0])
    return (match["id"], match["title"]) if match else None


def stub(indent: str, exercise: str, hint: str | None) -> list[str]:
    message = f"Exercise {exercise}: replace this line with your code."
    if hint:
        message += f" Hint: {hint}"
    width = max(40, 96 - len(indent) - 10)
    parts = textwrap.wrap(message, width, drop_whitespace=False)
    lines = [f"{indent}raise NotImplementedError("]
    lines += [f"{indent}    {part!r}" for part in parts[:-1]]
    lines.append(f"{indent}    {parts[-1]!r})")
    return lines


def student_source(source: str, exercise: str, where: str) -> str:
    """``source`` with every solution block replaced by its stub."""
    out, inside = [], None
    for number, line in enumerate(source.split("\n"), 1):
        begin, end = BEGIN.match(line), END.match(line)
        if begin:
            if inside is not None:
                raise ValueError(f"{where}, line {number}: BEGIN SOLUTION inside another solution block")
            inside = begin
        elif end:
            if inside is None:
                raise ValueError(f"{where}, line {number}: END SOLUTION without BEGIN SOLUTION")
            out += stub(inside["indent"], exercise, inside["hint"])
            inside = None
        elif inside is None:
            out.append(line)
    if inside is not None:
        raise ValueError(f"{where}: BEGIN SOLUTION without END SOLUTION")
    return "\n".join(out)


def student_version(solved: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """The student notebook made from the solved one (see the module docstring)."""
    nb = nbformat.from_dict(solved)
    nb.metadata.pop("widgets", None)
    cells = []
    for index, cell in enumerate(nb.cells):
        tags = cell.metadata.get("tags", [])
        where = f"{name}, cell {index} (id {cell.get('id')})"
        if "solution-only" in tags:
            continue
        if cell.cell_type == "markdown" and "solution" in tags:
            cell.source = ANSWER
            cell.metadata["tags"] = [t for t in tags if t != "solution"] + ["answer"]
        elif cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            if "### BEGIN SOLUTION" in cell.source or "### END SOLUTION" in cell.source:
                following = [check_marker(c.source) for c in nb.cells[index + 1:] if c.cell_type == "code"]
                exercise = next((f"{m[0]} ({m[1]})" for m in following if m), None)
                if exercise is None:
                    raise ValueError(f"{where}: a solution block with no check cell after it")
                cell.source = student_source(cell.source, exercise, where)
        cells.append(cell)
    nb.cells = cells
    return nb


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for solved_path in sorted(SOLUTIONS.glob("*.ipynb")):
        target = LABS / solved_path.name
        student = student_version(nbformat.read(solved_path, as_version=4), solved_path.name)
        text = nbformat.writes(student)
        text += "" if text.endswith("\n") else "\n"  # as nbformat.write and tools/strip_outputs.py
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            stale.append(target)
            if not check:
                target.write_text(text, encoding="utf-8")
    for path in stale:
        print(("out of date: " if check else "wrote: ") + str(path.relative_to(LABS.parent)))
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
