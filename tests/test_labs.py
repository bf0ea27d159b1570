"""The classroom labs (labs/; design.md §6, "Lab shape").

- Every lab has a solved twin in labs/solutions/, and the student notebook is generated from it
  by labs/make_student.py (the two cannot drift apart), with no solution left in it.
- Each lab has the shape of the design: title, time, goals, the setup cell first, locked check
  helpers before the first exercise, a check cell after every YOUR CODE block, written questions.
- Graded by ondevice.grade (one module-scoped run, two notebooks at a time): every solution passes
  every check; every student notebook, unfilled, stops at its first exercise with
  NotImplementedError and raises nothing else anywhere; a solution with an off-by-one answer in
  one exercise and a crash in another is reported as FAIL and error, the other exercises pass.

nbval runs the solved notebooks as well (pyproject's testpaths include labs/solutions).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import nbformat
import pytest

from ondevice import grade

ROOT = Path(__file__).resolve().parent.parent
LABS = ROOT / "labs"
SOLUTIONS = sorted((LABS / "solutions").glob("*.ipynb"))
STUDENTS = [LABS / p.name for p in SOLUTIONS]
WRONG = "lab1_memory_equations.ipynb"


def make_student():
    spec = importlib.util.spec_from_file_location("make_student", LABS / "make_student.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read(path):
    return nbformat.read(path, as_version=4)


def check_cells(nb):
    return [(i, grade.check_marker(c)) for i, c in enumerate(nb.cells) if grade.check_marker(c)]


def test_at_least_five_labs_each_with_a_solved_twin():
    assert len(SOLUTIONS) >= 5
    assert sorted(p.name for p in LABS.glob("*.ipynb")) == [p.name for p in SOLUTIONS]
    assert all(re.fullmatch(r"lab\d_[a-z0-9_]+\.ipynb", p.name) for p in SOLUTIONS)


def test_student_notebooks_are_generated_from_the_solutions():
    tool = make_student()
    assert tool.main(["--check"]) == 0, "run `python labs/make_student.py` after editing a solution"
    for solved, student in zip(SOLUTIONS, STUDENTS):
        assert read(student) == tool.student_version(read(solved), solved.name)


def test_student_notebooks_hold_no_solution():
    for solved, student in zip(SOLUTIONS, STUDENTS):
        text = student.read_text(encoding="utf-8")
        assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text, student.name
        nb = read(student)
        assert not [c for c in nb.cells if {"solution", "solution-only"} & set(c.metadata.get("tags", []))]
        blocks = read(solved).cells
        stubs = [c for c in nb.cells if c.cell_type == "code" and "raise NotImplementedError(" in c.source]
        solution_cells = [c for c in blocks if c.cell_type == "code" and "### BEGIN SOLUTION" in c.source]
        assert len(stubs) == len(solution_cells) > 0, student.name
        answers = [c for c in nb.cells if "answer" in c.metadata.get("tags", [])]
        assert answers and all(c.source == tool_answer() for c in answers), student.name


def tool_answer():
    return make_student().ANSWER


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_lab_shape(path):
    nb = read(path)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# Lab ")
    assert "**Time:**" in first.source and "minutes" in first.source
    assert "**Learning goals.**" in first.source and "**Prerequisites:**" in first.source
    assert nb.metadata["lab"]["id"] == path.stem
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    assert "setup(" in nb.cells[code[0]].source and "locked" in nb.cells[code[0]].metadata["tags"]
    checks = check_cells(nb)
    assert [e.id for _, e in checks] == [str(n) for n in range(1, len(checks) + 1)]
    assert all(nb.cells[i].metadata.get("tags", [])[:2] == ["check", f"exercise-{e.id}"] for i, e in checks)
    solution_cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "### BEGIN SOLUTION" in c.source]
    # check helpers (locked) come before the first exercise
    assert any("locked" in nb.cells[i].metadata.get("tags", []) and "import" in nb.cells[i].source
               for i in code[1:] if i < solution_cells[0])
    # every YOUR CODE block is followed by its check cell before the next block
    for n, i in enumerate(solution_cells):
        following = [j for j, _ in checks if j > i]
        assert following, f"cell {i} has no check after it"
        if n + 1 < len(solution_cells):
            assert following[0] < solution_cells[n + 1], f"cell {i}: two YOUR CODE blocks share a check"
        assert "# YOUR CODE" in nb.cells[i].source
    # written questions at the end, each with a model answer in the solution
    questions = next(i for i, c in enumerate(nb.cells) if c.source.startswith("## Written questions"))
    assert questions > checks[-1][0]
    numbered = re.findall(r"^(\d+)\. ", nb.cells[questions].source, re.M)
    answers = [c for c in nb.cells[questions:] if "solution" in c.metadata.get("tags", [])]
    assert len(answers) == len(numbered) >= 3


def wrong_copy(folder: Path) -> Path:
    """Lab 1's solution with an off-by-one rule in exercise 1 and a crash in exercise 2."""
    nb = read(LABS / "solutions" / WRONG)
    cells = {c.get("id"): c for c in nb.cells}
    right = "return S * numel(x_shape) if layer.weight.requires_grad else 0"
    assert right in cells["ex1"].source
    cells["ex1"].source = cells["ex1"].source.replace(
        right, "return S * (numel(x_shape) + 1) if layer.weight.requires_grad else 0")
    cells["ex2"].source = cells["ex2"].source.replace("layer.parameters()", "layer.paramters()")
    assert "paramters" in cells["ex2"].source
    path = folder / "student" / WRONG
    path.parent.mkdir()
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    wrong = wrong_copy(tmp_path_factory.mktemp("wrong"))
    subs = grade.grade(SOLUTIONS + STUDENTS + [wrong], timeout=300, jobs=2)
    return {sub.path: sub for sub in subs}


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_the_grader_passes_every_solution(graded, path):
    sub = graded[path.resolve()]
    assert sub.results and [r.status for r in sub.results] == [grade.PASS] * len(sub.results), grade.table([sub])
    assert len(sub.results) == len(check_cells(read(path)))
    assert not sub.errors and not sub.notes
    assert sub.seconds < 120  # "well under 2 minutes" on a small CPU: here with another kernel beside it


@pytest.mark.parametrize("path", STUDENTS, ids=lambda p: p.stem)
def test_an_unfilled_student_notebook_stops_at_its_first_exercise(graded, path):
    sub = graded[path.resolve()]
    nb = read(path)
    first_check = check_cells(nb)[0][0]
    assert sub.errors, "an unfilled notebook must raise"
    index, ename, evalue = sub.errors[0]
    assert (index, ename) == (first_check, "NotImplementedError"), (index, ename, evalue)
    assert evalue.startswith("Exercise 1 "), evalue  # the stub names the exercise and gives a hint
    assert {e for _, e, _ in sub.errors} == {"NotImplementedError"}, sub.errors  # nothing confusing later
    assert [r.status for r in sub.results] == [grade.TODO] * len(sub.results)


def test_a_wrong_answer_is_a_failed_check_and_a_crash_does_not_hide_the_rest(graded, tmp_path_factory):
    sub = next(s for s in graded.values() if s.path.parent.name == "student")
    status = {r.exercise: r for r in sub.results}
    assert status["1"].status == grade.FAIL
    assert "expected 144, got 148" in status["1"].detail  # 4 bytes too many: the first wrong case
    assert status["2"].status == grade.ERROR and "AttributeError" in status["2"].detail
    assert [status[e].status for e in "34567"] == [grade.PASS] * 5
    assert sub.name.endswith("student/lab1_memory_equations")


@pytest.mark.parametrize("source, words", [
    ("def f():\n    ### BEGIN SOLUTION\n    return 1\n", "BEGIN SOLUTION without END SOLUTION"),
    ("def f():\n    return 1\n    ### END SOLUTION\n", "END SOLUTION without BEGIN SOLUTION"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n", "inside another solution block"),
])
def test_make_student_rejects_unbalanced_markers(source, words):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source),
                                         nbformat.v4.new_code_cell("# CHECK exercise 1: f\nf()")])
    with pytest.raises(ValueError, match=words):
        make_student().student_version(nb, "broken.ipynb")


def test_make_student_needs_a_check_after_each_solution_and_writes_a_hinted_stub():
    tool = make_student()
    lonely = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION")])
    with pytest.raises(ValueError, match="no check cell after it"):
        tool.student_version(lonely, "lonely.ipynb")
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("def f():\n    ### BEGIN SOLUTION hint: return one\n    return 1\n    ### END SOLUTION"),
        nbformat.v4.new_code_cell("# CHECK exercise 3: the function f\nassert f() == 1")])
    source = tool.student_version(nb).cells[0].source
    assert "return 1" not in source
    namespace = {}
    exec(source, namespace)
    with pytest.raises(NotImplementedError, match=r"Exercise 3 \(the function f\): .* Hint: return one"):
        namespace["f"]()
