"""The labs on nbgrader, end to end (labs/README.md, "With nbgrader" and "What the grader trusts").

Two module fixtures, each built once:

- ``course``: a temporary course folder with the shipped ``labs/nbgrader_config.py`` and every
  solved lab in ``source/``, released by the ``nbgrader generate_assignment`` command a teacher
  runs;
- ``graded``: one run of ``ondevice.grade`` (nbgrader's autograder in sandboxes, two jobs) over
  a folder with every solved lab, every unfilled student lab, the three cheats of issue 19 on an
  unfilled lab 3 (a custom exception handler, a patched ``Checks.__exit__``, the solved cells read
  from the solutions and ``exec``-ed), a submission that renames the reference and deletes the
  next student's notebook, that next student's notebook with its checks edited to ``pass``, and
  one file that is not a notebook.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell

from ondevice import grade
from ondevice.grade_report import PASS, TODO
from ondevice.labs_nbgrader import tools_on_path

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = sorted((ROOT / "labs" / "solutions").glob("*.ipynb"))
LABS = [p.stem for p in SOLUTIONS]
LAB3 = "lab3_binary_masks"


def nbgrader_meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    root = tmp_path_factory.mktemp("course")
    shutil.copy(ROOT / "labs" / "nbgrader_config.py", root)
    for path in SOLUTIONS:
        (root / "source" / path.stem).mkdir(parents=True)
        shutil.copy(path, root / "source" / path.stem)
    out = subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", "*"], cwd=root,
                         env=tools_on_path(dict(os.environ)), capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Exception while loading config file" not in out.stdout + out.stderr  # nbgrader only logs it
    return root


def test_generate_assignment_gives_the_committed_student_versions(course):
    for lab in LABS:
        released = course / "release" / lab / f"{lab}.ipynb"
        assert released.read_text(encoding="utf-8") == (ROOT / "labs" / f"{lab}.ipynb").read_text(encoding="utf-8"), lab


def solution_regions(source: str) -> list[list[str]]:
    """The code lines inside each ### BEGIN SOLUTION ... ### END SOLUTION region."""
    regions, inside = [], None
    for line in source.split("\n"):
        if "### BEGIN SOLUTION" in line:
            inside = []
        elif "### END SOLUTION" in line:
            regions.append(inside)
            inside = None
        elif inside is not None and line.strip() and not line.strip().startswith("#"):
            inside.append(line.strip())
    return regions


@pytest.mark.parametrize("lab", LABS)
def test_student_versions_hold_no_solution_code_and_no_hidden_tests(course, lab):
    solved = nbformat.read(course / "source" / lab / f"{lab}.ipynb", as_version=4)
    student = nbformat.read(course / "release" / lab / f"{lab}.ipynb", as_version=4)
    text = json.dumps(student.cells)
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
        assert marker not in text, (lab, marker)
    by_id = {c.get("id"): c for c in student.cells}
    hidden = 0
    for cell in solved.cells:
        meta = nbgrader_meta(cell)
        if "solution-only" in cell.metadata.get("tags", []):
            assert cell.get("id") not in by_id  # numbers behind the model answers are not released
            continue
        mine = by_id[cell.get("id")]
        for region in solution_regions(cell.source):
            assert region and not [line for line in region if line in mine.source.split("\n")
                                   or line in [m.strip() for m in mine.source.split("\n")]], (lab, cell.get("id"))
        if meta.get("grade") and cell.cell_type == "code":
            assert "### BEGIN HIDDEN TESTS" in cell.source, (lab, cell.get("id"))  # every check has hidden cases
            hidden_lines = cell.source.split("### BEGIN HIDDEN TESTS")[1].split("### END HIDDEN TESTS")[0]
            assert hidden_lines.strip() and hidden_lines.strip() not in mine.source
            hidden += 1
        if meta.get("solution") and cell.cell_type == "markdown":
            assert mine.source == "**Your answer:**"
    assert hidden >= 3


# ---------------------------------------------------------------------------------------------
# Autograding


def add_cell(nb, index, source):
    nb.cells.insert(index, new_code_cell(source))
    return nb


def cheats(unfilled, solved_lab3: Path):
    """The three cheats of issue 19, each in an unfilled lab 3 (index 2: after the setup cell)."""
    handler = "get_ipython().set_custom_exc((Exception,), lambda *args, **kwargs: None)"
    patch = "import ondevice.labcheck\nondevice.labcheck.Checks.__exit__ = lambda *args: True"
    exec_solutions = (f"import json\nsolved = json.load(open({str(solved_lab3)!r}))\n"
                      "_ = [exec(''.join(c['source'])) for c in solved['cells']\n"
                      "     if c['cell_type'] == 'code' and 'BEGIN SOLUTION' in ''.join(c['source'])]")
    return {name: add_cell(nbformat.from_dict(unfilled), 4, source) for name, source in
            (("handler", handler), ("patched_exit", patch), ("exec_solutions", exec_solutions))}


def tamperer(unfilled, reference: Path, victim: Path):
    """Lab 3 whose exercise 1 renames the reference solution and deletes the next student's notebook."""
    nb = nbformat.from_dict(unfilled)
    cell = next(c for c in nb.cells if nbgrader_meta(c).get("grade_id") == "ex1")
    cell.source = (f"import os\n\n\ndef pack_bits(mask):\n"
                   f"    os.rename({str(reference)!r}, {str(reference) + '.moved'!r})\n"
                   f"    os.remove({str(victim)!r})\n"
                   f"    return kernels.pack_bits_reference(mask)")
    return nb


def edited_checks(unfilled):
    nb = nbformat.from_dict(unfilled)
    for cell in nb.cells:
        if nbgrader_meta(cell).get("grade") and cell.cell_type == "code":
            cell.source = "pass  # edited"
    return nb


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("grading")
    reference = root / "reference"
    shutil.copytree(ROOT / "labs" / "solutions", reference)
    subs = root / "submissions"
    for path in SOLUTIONS:
        (subs / "solved").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, subs / "solved")
        (subs / "unfilled").mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "labs" / path.name, subs / "unfilled")
    unfilled = nbformat.read(ROOT / "labs" / f"{LAB3}.ipynb", as_version=4)
    for name, nb in cheats(unfilled, reference / f"{LAB3}.ipynb").items():
        (subs / name).mkdir()
        nbformat.write(nb, subs / name / f"{LAB3}.ipynb")
    victim = subs / "trent" / f"{LAB3}.ipynb"
    victim.parent.mkdir()
    nbformat.write(edited_checks(unfilled), victim)
    (subs / "mallory").mkdir()
    nbformat.write(tamperer(unfilled, reference / f"{LAB3}.ipynb", victim), subs / "mallory" / f"{LAB3}.ipynb")
    (subs / "broken").mkdir()
    (subs / "broken" / f"{LAB3}.ipynb").write_text('{"cells": [', encoding="utf-8")
    before = {p: p.read_bytes() for p in [*reference.iterdir(), *subs.rglob("*.ipynb")]}
    feedback = root / "feedback"
    results, changed = grade.grade([subs], reference=reference, timeout=300, jobs=2, feedback=feedback)
    changed = [c for c in changed if c.startswith(str(root))]  # the library may be edited meanwhile
    return {s.name: s for s in results}, changed, before, feedback


@pytest.mark.parametrize("lab", LABS)
def test_autograde_gives_every_solved_lab_full_points_in_under_a_minute(graded, lab):
    sub = graded[0][f"solved/{lab}"]
    assert not sub.problem and not sub.flags and not sub.notes, grade.table([sub])
    assert sub.results and [r.status for r in sub.results] == [PASS] * len(sub.results), grade.table([sub])
    assert all(r.points == r.max_points > 0 for r in sub.results)
    solved = nbformat.read(ROOT / "labs" / "solutions" / f"{lab}.ipynb", as_version=4)
    answers = [c for c in solved.cells if c.cell_type == "markdown" and nbgrader_meta(c).get("grade")]
    assert sub.manual == len(answers) >= 3  # written answers: left to the teacher by nbgrader
    assert sub.seconds < 60  # the grading run, kernel start included, beside another job


@pytest.mark.parametrize("lab", LABS)
def test_autograde_gives_every_unfilled_lab_zero_on_every_graded_cell(graded, lab):
    sub = graded[0][f"unfilled/{lab}"]
    assert [r.status for r in sub.results] == [TODO] * len(sub.results), grade.table([sub])
    assert all(r.points == 0 for r in sub.results) and sub.manual == 0  # unanswered: 0, automatically
    assert not sub.flags
    nb = nbformat.read(graded[3] / f"unfilled/{lab}.ipynb", as_version=4)
    errors = [o for c in nb.cells if nbgrader_meta(c).get("grade") and c.cell_type == "code"
              for o in c.outputs if o.output_type == "error"]
    assert len(errors) == len(sub.results)
    assert all(e.ename == "NotImplementedError" and e.evalue.startswith("Exercise ") and "Hint:" in e.evalue
               for e in errors)


def test_the_hidden_tests_run_in_the_grading_run(graded):
    nb = nbformat.read(graded[3] / "solved/lab1_memory_equations.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert printed.count(", more cases") == 7  # one hidden block per check of lab 1


@pytest.mark.parametrize("name, flag", [
    ("handler", "uses get_ipython"),
    ("patched_exit", "changes ondevice.labcheck.Checks.__exit__"),
    ("exec_solutions", "uses exec"),
])
def test_each_cheat_gets_zero_points_and_a_flag(graded, name, flag):
    sub = graded[0][f"{name}/{LAB3}"]
    assert sub.results and sub.points == 0, grade.table([sub])
    assert any(flag in f for f in sub.flags), sub.flags


def test_the_tamperer_is_refused_and_flagged_and_the_next_student_is_graded_as_usual(graded):
    results, changed, before, _ = graded
    mallory, trent = results[f"mallory/{LAB3}"], results[f"trent/{LAB3}"]
    status = {r.exercise: r for r in mallory.results}
    assert status["1"].status == "error" and "PermissionError" in status["1"].detail
    assert any("denied: os.rename" in f for f in mallory.flags) and any("imports os" in f for f in mallory.flags)
    assert [r.status for r in trent.results] == [TODO] * 4 and trent.points == 0  # the checks came back
    assert changed == []
    assert {p: p.read_bytes() for p in before} == before  # every reference and submission intact


def test_a_notebook_that_is_not_valid_is_listed_and_the_others_are_graded(graded):
    results = graded[0]
    broken = results[f"broken/{LAB3}"]
    assert broken.problem.startswith("not a valid notebook") and not broken.results
    assert sum(not s.problem for s in results.values()) == len(results) - 1
    assert "Not graded:" in grade.table(list(results.values()))
