"""ondevice.grade, the lab grader, on small synthetic notebooks (no torch in their kernels).

One module fixture grades three submissions at once: one with every kind of result (a pass, a
wrong answer, an unfilled stub, a crash in the student's code, a deleted check, an edited check,
a pass after the crash), one that runs past its time limit, and one whose kernel dies. The real
labs are graded in tests/test_labs.py.
"""

from __future__ import annotations

import csv
import json

import nbformat
import pytest

from ondevice import grade

STATUS = {}  # filled by the fixture: submission name -> {exercise: Result}


def code(source: str, cell_id: str):
    cell = nbformat.v4.new_code_cell(source)
    cell.id = cell_id
    return cell


def notebook(cells, lab: str | None = None):
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if lab:
        nb.metadata["lab"] = {"id": lab}
    return nb


def mixed_reference():
    """The solved notebook of the synthetic lab "mixed": six exercises."""
    return notebook([
        code("LIMIT = 10", "setup"),
        code("def f():\n    return 1", "ex1"),
        code("# CHECK exercise 1: passes\nassert f() == 1", "check-1"),
        code("def g():\n    return 3", "ex2"),
        code("# CHECK exercise 2: a wrong answer\nassert g() == 3, f'expected 3, got {g()}'", "check-2"),
        code("def h():\n    return 3", "ex3"),
        code("# CHECK exercise 3: not done\nassert h() == 3", "check-3"),
        code("def k():\n    return 4", "ex4"),
        code("# CHECK exercise 4: a crash\nassert k() == 4", "check-4"),
        code("# CHECK exercise 5: deleted by the student\nassert LIMIT == 10", "check-5"),
        code("# CHECK exercise 6: after the crash\nassert f() == 1", "check-6"),
    ], lab="mixed")


def mixed_submission():
    """A student's copy: exercise 2 wrong and its check edited to pass, 3 a stub, 4 a syntax
    error, the check of 5 deleted, the locked setup cell edited."""
    return notebook([
        code("LIMIT = 0  # edited: the grader restores it", "setup"),
        code("def f():\n    return 1", "ex1"),
        code("# CHECK exercise 1: passes\nassert f() == 1", "check-1"),
        code("def g():\n    return 2", "ex2"),
        code("# CHECK exercise 2: a wrong answer\nassert True  # edited to pass", "check-2"),
        code("def h():\n    raise NotImplementedError('Exercise 3: replace this line')", "ex3"),
        code("# CHECK exercise 3: not done\nassert h() == 3", "check-3"),
        code("def k(:\n    return 4", "ex4"),
        code("# CHECK exercise 4: a crash\nassert k() == 4", "check-4"),
        code("# CHECK exercise 6: after the crash\nassert f() == 1", "check-6"),
    ], lab="mixed")


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("grading")
    reference = root / "reference"
    reference.mkdir()
    nbformat.write(mixed_reference(), reference / "mixed.ipynb")
    for folder in ("alice", "bob", "carol"):
        (root / "submissions" / folder).mkdir(parents=True)
    # the setup cell is tagged locked in the reference
    ref = nbformat.read(reference / "mixed.ipynb", as_version=4)
    ref.cells[0].metadata["tags"] = ["locked"]
    nbformat.write(ref, reference / "mixed.ipynb")
    nbformat.write(mixed_submission(), root / "submissions" / "alice" / "mixed.ipynb")
    nbformat.write(notebook([
        code("# CHECK exercise 1: quick\nassert True", "c1"),
        code("import time\ntime.sleep(60)", "slow"),
        code("# CHECK exercise 2: after the slow cell\nassert True", "c2"),
    ]), root / "submissions" / "bob" / "slow.ipynb")
    nbformat.write(notebook([
        code("# CHECK exercise 1: quick\nassert True", "c1"),
        code("# CHECK exercise 2: the kernel dies\nimport os\nos._exit(1)", "c2"),
        code("# CHECK exercise 3: after the death\nassert True", "c3"),
    ]), root / "submissions" / "carol" / "dies.ipynb")
    subs = grade.grade([root / "submissions"], timeout=8, jobs=3, reference=reference)
    for sub in subs:
        STATUS[sub.name] = {r.exercise: r for r in sub.results}
    return root, subs


def test_submissions_are_named_by_their_path_below_the_common_folder(graded):
    _, subs = graded
    assert sorted(s.name for s in subs) == ["alice/mixed", "bob/slow", "carol/dies"]
    assert {s.name: s.lab for s in subs} == {"alice/mixed": "mixed", "bob/slow": "slow", "carol/dies": "dies"}


def test_every_kind_of_result_is_told_apart(graded):
    r = STATUS["alice/mixed"]
    assert {k: v.status for k, v in r.items()} == {
        "1": grade.PASS, "2": grade.FAIL, "3": grade.TODO, "4": grade.ERROR, "5": grade.MISSING,
        "6": grade.PASS}
    assert "expected 3, got 2" in r["2"].detail  # the reference's check ran, not the edited one
    assert "SyntaxError" in r["4"].detail and "NameError" in r["4"].detail  # the cause first
    assert "CHECK exercise 5" in r["5"].detail


def test_locked_and_check_cells_are_restored_from_the_reference(graded):
    _, subs = graded
    alice = next(s for s in subs if s.name == "alice/mixed")
    assert any("check of exercise 2" in n for n in alice.notes)
    assert any("locked cell setup" in n for n in alice.notes)
    assert alice.passed == 2


def test_time_limit_stops_the_notebook_and_later_checks_are_not_run(graded):
    r = STATUS["bob/slow"]
    assert r["1"].status == grade.PASS
    assert r["2"].status == grade.NOT_RUN and "time limit" in r["2"].detail


def test_a_dead_kernel_is_reported_and_the_rest_is_not_run(graded):
    r = STATUS["carol/dies"]
    assert (r["1"].status, r["2"].status, r["3"].status) == (grade.PASS, grade.CRASHED, grade.NOT_RUN)
    assert "kernel died" in r["3"].detail


def test_table_and_csv_report_every_exercise(graded, tmp_path):
    _, subs = graded
    text = grade.table(subs)
    assert "mixed: 1 submission, 6 exercises" in text
    row = next(line for line in text.splitlines() if line.strip().startswith("alice/mixed"))
    assert row.split()[1:7] == ["pass", "FAIL", "todo", "error", "missing", "pass"]
    assert "alice/mixed, exercise 3: todo" in text
    grade.write_csv(subs, tmp_path / "out.csv")
    rows = list(csv.DictReader(open(tmp_path / "out.csv", encoding="utf-8")))
    assert tuple(rows[0]) == grade.CSV_FIELDS
    assert len(rows) == 6 + 2 + 3
    alice = {r["exercise"]: r["status"] for r in rows if r["submission"] == "alice/mixed"}
    assert alice == {k: v.status for k, v in STATUS["alice/mixed"].items()}


def test_command_line_exit_codes_and_csv(graded, tmp_path, capsys):
    root, _ = graded
    submission = root / "submissions" / "alice" / "mixed.ipynb"
    out = tmp_path / "results.csv"
    args = [str(submission), "--reference", str(root / "reference"), "--jobs", "1", "--timeout", "30"]
    assert grade.main(args + ["--csv", str(out)]) == 0  # graded: failures are results
    printed = capsys.readouterr().out
    assert printed.startswith("mixed: 1 submission, 6 exercises") and f"wrote {out}" in printed
    assert [r["status"] for r in csv.DictReader(open(out, encoding="utf-8"))] == [
        "pass", "FAIL", "todo", "error", "missing", "pass"]
    assert grade.main(args + ["--strict"]) == 1


@pytest.mark.parametrize("make, words", [
    (lambda d: d / "missing.ipynb", "no such file or folder"),
    (lambda d: (d / "notes.txt").write_text("hello") and d / "notes.txt", "is not a notebook"),
    (lambda d: (d / "broken.ipynb").write_text("{not json") and d / "broken.ipynb", "is not a valid notebook"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "no notebooks"),
])
def test_bad_arguments_exit_2_with_a_clear_message(tmp_path, capsys, make, words):
    path = make(tmp_path)
    assert grade.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert words in err and str(path.name) in err


def test_a_kernel_that_cannot_start_exits_3(tmp_path, capsys):
    nb = notebook([code("# CHECK exercise 1: anything\nassert True", "c1")])
    nbformat.write(nb, tmp_path / "lab.ipynb")
    assert grade.main([str(tmp_path / "lab.ipynb"), "--kernel", "no-such-kernel", "--no-reference"]) == 3
    assert "could not be started" in capsys.readouterr().out


def test_exercises_are_read_from_the_check_markers():
    nb = mixed_reference()
    assert [(e.id, e.title) for e in grade.exercises(nb)] == [
        ("1", "passes"), ("2", "a wrong answer"), ("3", "not done"), ("4", "a crash"),
        ("5", "deleted by the student"), ("6", "after the crash")]
    assert grade.check_marker(nbformat.v4.new_markdown_cell("# CHECK exercise 1: x")) is None
    assert json.loads(json.dumps(grade.CSV_FIELDS)) == list(grade.CSV_FIELDS)
