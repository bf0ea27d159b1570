"""The classroom labs as files (labs/; their shape is described in labs/index.md). No kernel runs here:
tests/test_nbgrader.py grades them, nbval runs the solved notebooks.

- Every lab has a solved twin in labs/solutions/; the student notebook is what nbgrader's
  generate_assignment makes of it (labs/generate.py), so the two cannot drift apart.
- The solved notebooks carry nbgrader metadata that the pinned nbgrader validates: the setup,
  helpers and demonstrations locked, every check a graded cell with points and hidden tests,
  every exercise cell a solution cell, every written answer a manually graded answer.
- Each lab has the shape of the design: title, time, goals, the setup cell first, check helpers
  before the first exercise, a check cell after every YOUR CODE block, at least one prediction
  that its check compares with a measurement, written questions with model answers.
- The stubs: each names its exercise and gives the hint; predictions become None; unbalanced
  markers are refused.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import nbformat
import pytest
from nbgrader.nbgraderformat import MetadataValidator

from ondevice.labcheck import compare_prediction
from ondevice.labs_nbgrader import check_marker, student_source

ROOT = Path(__file__).resolve().parent.parent
LABS = ROOT / "labs"
SOLUTIONS = sorted((LABS / "solutions").glob("*.ipynb"))
PREDICTION = re.compile(r"^(prediction_\w+) = ", re.M)


def read(path):
    return nbformat.read(path, as_version=4)


def meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def checks(nb):
    return [(i, check_marker(c.source)) for i, c in enumerate(nb.cells)
            if c.cell_type == "code" and meta(c).get("grade")]


def test_seven_labs_each_with_a_solved_twin():
    assert len(SOLUTIONS) >= 7
    assert sorted(p.name for p in LABS.glob("*.ipynb")) == [p.name for p in SOLUTIONS]
    assert all(re.fullmatch(r"lab\d_[a-z0-9_]+\.ipynb", p.name) for p in SOLUTIONS)


def test_student_notebooks_are_generated_from_the_solutions():
    spec = importlib.util.spec_from_file_location("generate", LABS / "generate.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main(["--check"]) == 0, "run `make labs` after editing a solution"


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_nbgrader_metadata(path):
    nb = read(path)
    MetadataValidator().validate_nb(nb)  # raises on a schema or grade_id error
    for cell in nb.cells:
        m, solution_only = meta(cell), "solution-only" in cell.metadata.get("tags", [])
        if m:
            assert m["grade_id"] == cell.get("id") and m["schema_version"] == 3
        if cell.cell_type == "markdown":
            assert not m or (m["grade"] and m["solution"] and m["points"] > 0)  # a written answer
        elif solution_only:
            assert not m
        elif "### BEGIN SOLUTION" in cell.source:
            assert m["solution"] and not m["grade"] and not m["locked"], cell.get("id")
        elif check_marker(cell.source) and cell.source.startswith("# CHECK"):
            assert m["grade"] and m["locked"] and m["points"] > 0 and not m["solution"], cell.get("id")
            assert "### BEGIN HIDDEN TESTS" in cell.source and "### END HIDDEN TESTS" in cell.source
        else:  # setup, helpers, demonstrations: given, read-only
            assert m["locked"] and not m["grade"] and not m["solution"], cell.get("id")


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_lab_shape(path):
    nb = read(path)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# Lab ")
    assert "**Time:**" in first.source and "minutes" in first.source
    assert "**Learning goals.**" in first.source and "**Prerequisites:**" in first.source
    assert "**Predict, then see.**" in first.source and "**Grading.**" in first.source
    assert nb.metadata["lab"]["id"] == path.stem
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    assert "setup(" in nb.cells[code[0]].source and meta(nb.cells[code[0]])["locked"]
    found = checks(nb)
    assert [e[0] for _, e in found] == [str(n) for n in range(1, len(found) + 1)]
    exercises = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "# YOUR CODE" in c.source]
    assert any(meta(nb.cells[i]).get("locked") and "import" in nb.cells[i].source
               for i in code[1:] if i < exercises[0])  # check helpers before the first exercise
    for n, i in enumerate(exercises):  # every YOUR CODE block has its own check after it
        following = [j for j, _ in found if j > i]
        assert following, f"cell {i} has no check after it"
        if n + 1 < len(exercises):
            assert following[0] < exercises[n + 1], f"cell {i}: two YOUR CODE blocks share a check"
    questions = next(i for i, c in enumerate(nb.cells) if c.source.startswith("## Written questions"))
    assert questions > found[-1][0]
    numbered = re.findall(r"^(\d+)\. ", nb.cells[questions].source, re.M)
    answers = [c for c in nb.cells[questions:] if c.cell_type == "markdown" and meta(c).get("solution")]
    assert len(answers) == len(numbered) >= 3


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_an_exercise_opens_with_a_prediction_that_its_check_compares(path):
    nb = read(path)
    predictions = [(i, c) for i, c in enumerate(nb.cells)
                   if c.cell_type == "code" and "### BEGIN SOLUTION prediction" in c.source]
    assert predictions, "every lab opens at least one exercise with a prediction cell"
    for i, cell in predictions:
        name = PREDICTION.search(cell.source)[1]
        assert "# YOUR CODE" in nb.cells[i + 1].source  # the exercise follows the prediction
        check = next(c for c in nb.cells[i:] if c.cell_type == "code" and meta(c).get("grade"))
        assert f'compare_prediction(' in check.source and f'globals().get("{name}")' in check.source


def test_compare_prediction_says_how_far_and_never_fails(capsys):
    assert compare_prediction("x", 100, 144, "bytes").endswith("off by -44 bytes, -31% of the measured value.")
    assert "exactly right" in compare_prediction("x", 144, 144.0)
    assert "none typed" in compare_prediction("x", None, 144)
    assert "is not a number" in compare_prediction("x", "many", 144)
    assert "off by 2" in compare_prediction("x", 2, 0)
    assert capsys.readouterr().out.count("Prediction for x") == 5


@pytest.mark.parametrize("source, words", [
    ("def f():\n    ### BEGIN SOLUTION\n    return 1\n", "BEGIN SOLUTION without END SOLUTION"),
    ("def f():\n    return 1\n    ### END SOLUTION\n", "END SOLUTION without BEGIN SOLUTION"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n", "inside another solution region"),
    ("### BEGIN SOLUTION prediction\nx = 1\n### END SOLUTION\n", "must assign one name prediction"),
])
def test_stubs_refuse_unbalanced_markers(source, words):
    with pytest.raises(ValueError, match=words):
        student_source(source, "1 (f)", "broken.ipynb")


def test_stubs_name_the_exercise_and_give_the_hint():
    with pytest.raises(ValueError, match="no check cell after it"):
        student_source("### BEGIN SOLUTION\nx = 1\n### END SOLUTION", None, "lonely.ipynb")
    source, replaced = student_source(
        "def f():\n    ### BEGIN SOLUTION hint: return one\n    return 1\n    ### END SOLUTION", "3 (the function f)", "nb")
    assert replaced and "return 1" not in source
    namespace = {}
    exec(source, namespace)
    with pytest.raises(NotImplementedError, match=r"Exercise 3 \(the function f\): .* Hint: return one"):
        namespace["f"]()
    guess, _ = student_source("### BEGIN SOLUTION prediction\nwork = 2\nprediction_2 = work * 3  # why\n"
                              "### END SOLUTION", None, "nb")
    assert guess.startswith("prediction_2 = None") and "work" not in guess
