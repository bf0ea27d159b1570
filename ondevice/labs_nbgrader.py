"""The labs as an nbgrader course (labs/README.md): configuration, the student stubs, generation.

A course that grades the labs with nbgrader uses ``labs/nbgrader_config.py``, which calls
:func:`configure`. It changes two steps of nbgrader's pipeline and keeps the others:

- ``generate_assignment``: :class:`LabStubs` instead of ``ClearSolutions``. In a solved lab, the
  code a student writes sits between ``### BEGIN SOLUTION hint: <hint>`` and ``### END
  SOLUTION``; the student gets, at the same indentation, one ``raise NotImplementedError`` that
  names the exercise (from the next check cell, ``# CHECK exercise <id>: <title>``) and gives the
  hint. A prediction (``### BEGIN SOLUTION prediction``, a region that assigns one name
  ``prediction...``) becomes ``prediction... = None``, for the student to type a number. A
  written answer (a markdown solution cell) becomes ``**Your answer:**``. A cell tagged ``solution-only`` (numbers behind the model
  answers) is left out. Hidden tests (``### BEGIN HIDDEN TESTS``) go, as nbgrader always does.
- ``autograde``: :class:`ondevice.grade_run.IsolatedExecute` instead of ``Execute``; and a
  deleted graded cell is put back (``OverwriteCells.add_missing_cells``).

:func:`generate` runs ``generate_assignment`` on a course folder; ``make labs`` uses it to
write ``labs/*.ipynb`` from ``labs/solutions/``.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import textwrap
from pathlib import Path

from traitlets.config import Config

from nbgrader.converters import Autograde, GenerateAssignment
from nbgrader.preprocessors import ClearSolutions, Execute

CHECK = re.compile(r"^# CHECK exercise (?P<id>\S+): (?P<title>.+?)\s*$", re.M)
BEGIN = re.compile(r"^(?P<indent>[ \t]*)### BEGIN SOLUTION(?:[ \t]+(?P<what>hint:|prediction)[ \t]*(?P<hint>.*?))?[ \t]*$")
END = re.compile(r"^[ \t]*### END SOLUTION[ \t]*$")
PREDICTION = re.compile(r"^(?P<indent>[ \t]*)(?P<name>[A-Za-z_]\w*)[ \t]*=")
ANSWER = "**Your answer:**"
SOLUTION_ONLY = "solution-only"


def check_marker(source: str) -> tuple[str, str] | None:
    """(exercise id, title) of a check cell: its line ``# CHECK exercise <id>: <title>``."""
    match = CHECK.search(source)
    return (match["id"], match["title"]) if match else None


def stub(indent: str, exercise: str, hint: str | None) -> list[str]:
    """``raise NotImplementedError("Exercise <exercise>: replace this line ... Hint: <hint>")``,
    wrapped to the lab's line length."""
    message = f"Exercise {exercise}: replace this line with your code."
    if hint:
        message += f" Hint: {hint}"
    width = max(40, 96 - len(indent) - 10)
    parts = textwrap.wrap(message, width, drop_whitespace=False)
    lines = [f"{indent}raise NotImplementedError("]
    lines += [f"{indent}    {part!r}" for part in parts[:-1]]
    lines.append(f"{indent}    {parts[-1]!r})")
    return lines


def prediction_stub(indent: str, body: list[str], where: str) -> list[str]:
    """``prediction_<n> = None``: the one ``prediction...`` name the region assigns at its own
    indentation (other lines of the region, the model answer's working, are left out)."""
    names = [m["name"] for m in map(PREDICTION.match, body)
             if m and m["indent"] == indent and m["name"].startswith("prediction")]
    if len(names) != 1:
        raise ValueError(f"{where}: a prediction region must assign one name prediction... at its "
                         f"indentation, got {body!r}")
    return [f"{indent}{names[0]} = None  # your prediction: replace None with a number"]


def student_source(source: str, exercise: str | None, where: str) -> tuple[str, bool]:
    """``source`` with every solution region replaced by its stub; and whether there was one."""
    out, inside, body, replaced = [], None, [], False
    for number, line in enumerate(source.split("\n"), 1):
        begin, end = BEGIN.match(line), END.match(line)
        if begin:
            if inside is not None:
                raise ValueError(f"{where}, line {number}: BEGIN SOLUTION inside another solution region")
            inside, body, replaced = begin, [], True
        elif end:
            if inside is None:
                raise ValueError(f"{where}, line {number}: END SOLUTION without BEGIN SOLUTION")
            if inside["what"] == "prediction":
                out += prediction_stub(inside["indent"], body, where)
            elif exercise is None:
                raise ValueError(f"{where}: a solution region with no check cell after it")
            else:
                out += stub(inside["indent"], exercise, inside["hint"])
            inside = None
        elif inside is not None:
            body.append(line)
        else:
            out.append(line)
    if inside is not None:
        raise ValueError(f"{where}: BEGIN SOLUTION without END SOLUTION")
    return "\n".join(out), replaced


class LabStubs(ClearSolutions):
    """nbgrader's ClearSolutions with the labs' stubs (see the module docstring)."""

    def preprocess(self, nb, resources):
        nb.cells = [c for c in nb.cells if SOLUTION_ONLY not in c.metadata.get("tags", [])]
        self._exercises = {}
        following = None
        for index in reversed(range(len(nb.cells))):  # each cell's next check, from the end
            cell = nb.cells[index]
            marker = check_marker(cell.source) if cell.cell_type == "code" else None
            if marker:
                following = f"{marker[0]} ({marker[1]})"
            self._exercises[index] = following
        self._name = resources.get("unique_key", "notebook")
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell, resources, cell_index):
        self._where = f"{self._name}, cell {cell_index} (id {cell.get('id')})"
        self._exercise = self._exercises.get(cell_index)
        return super().preprocess_cell(cell, resources, cell_index)

    def _replace_solution_region(self, cell, language):
        if cell.cell_type != "code":
            return super()._replace_solution_region(cell, language)
        cell.source, replaced = student_source(cell.source, self._exercise, self._where)
        return replaced


def _replaced(steps, old, new):
    return [new if step is old else step for step in steps]


def configure(c: Config, *, timeout: float | None = None, library: str | None = None,
              protected=(), sandbox_root: str | None = None, threads: str | None = None) -> Config:
    """Set up ``c`` (an nbgrader configuration) for the labs (see the module docstring); the
    keywords go to :class:`ondevice.grade_run.IsolatedExecute`."""
    from .grade_run import IsolatedExecute

    c.GenerateAssignment.preprocessors = _replaced(
        GenerateAssignment.class_traits()["preprocessors"].default(), ClearSolutions, LabStubs)
    c.Autograde.autograde_preprocessors = _replaced(
        Autograde.class_traits()["autograde_preprocessors"].default(), Execute, IsolatedExecute)
    c.LabStubs.text_stub = ANSWER
    c.OverwriteCells.add_missing_cells = True
    for name, value in (("timeout", timeout), ("library", library), ("sandbox_root", sandbox_root),
                        ("threads", threads)):
        if value is not None:
            setattr(c.IsolatedExecute, name, value)
    if protected:
        c.IsolatedExecute.protected_paths = [str(p) for p in protected]
    return c


def tools_on_path(env: dict | None = None) -> dict:
    """``env`` (default ``os.environ``, changed in place) with this Python's folder first on
    ``PATH``: nbgrader runs the ``alembic`` command that is installed beside it."""
    env = os.environ if env is None else env
    here = str(Path(sys.executable).parent)
    if env.get("PATH", "").split(os.pathsep)[0] != here:
        env["PATH"] = os.pathsep.join([here, env.get("PATH", "")])
    return env


def course_config(root: Path, **options) -> Config:
    """An nbgrader configuration for the course folder ``root`` (:func:`configure`'s keywords)."""
    c = configure(Config(), **options)
    c.CourseDirectory.root = str(root)
    c.CourseDirectory.db_url = f"sqlite:///{Path(root).resolve() / 'gradebook.db'}"
    return c


def generate(root: Path, solved: dict[str, str], **options) -> dict[str, Path]:
    """Run ``nbgrader generate_assignment`` for each solved lab in the course folder ``root``:
    ``solved`` maps a lab's id to its notebook's text; each lab is an assignment with one notebook
    of the same name. Returns lab id -> the student version (``release/<lab>/<lab>.ipynb``).
    Raises RuntimeError with nbgrader's log when it fails."""
    import logging

    from nbgrader.coursedir import CourseDirectory

    root = Path(root)
    tools_on_path()
    config = course_config(root, **options)
    out = {}
    for lab, text in solved.items():
        folder = root / "source" / lab
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        (folder / f"{lab}.ipynb").write_text(text, encoding="utf-8")
        coursedir = CourseDirectory(config=config)
        coursedir.assignment_id = lab
        app = GenerateAssignment(coursedir=coursedir, config=config)
        app.force = True
        app.log.setLevel(logging.ERROR)
        try:
            app.start()
        except Exception as error:
            raise RuntimeError(f"nbgrader generate_assignment failed for {lab}: {error}") from error
        out[lab] = root / "release" / lab / f"{lab}.ipynb"
    return out


__all__ = ["ANSWER", "LabStubs", "check_marker", "configure", "course_config", "generate", "student_source",
           "tools_on_path"]
