"""ondevice.grade (the thin layer over nbgrader's autograder) on small synthetic labs, and its two
defences on their own: what of a student's cell runs (ondevice.grade_scan) and the guard in the
grading kernel (ondevice.grade_guard). The real labs are graded in tests/test_nbgrader.py.

One module fixture grades four submissions at once (two jobs): one with every kind of result
(a pass, a wrong answer behind an edited check, an unfilled stub, a syntax error, a deleted check,
a check that wrote to stderr, an edited locked cell, a cell of its own), one that runs past its
time limit, one whose kernel dies, and one whose nbgrader metadata is broken.
"""

from __future__ import annotations

import csv
import os

import nbformat
import pytest

from ondevice import grade
from ondevice.grade_guard import Guard, toolchain
from ondevice.grade_report import ERROR, FAIL, PASS, TODO
from ondevice.grade_run import CRASHED, NOT_RUN, TIMEOUT
from ondevice.grade_scan import definitions, trusted_bindings


def meta(cell_id, *, grade=False, solution=False, locked=False, points=None):
    m = {"grade": grade, "grade_id": cell_id, "locked": locked, "schema_version": 3, "solution": solution,
         "task": False}
    if points is not None:
        m["points"] = points
    return {"nbgrader": m}


def given(cell_id, source):
    cell = nbformat.v4.new_code_cell(source, metadata=meta(cell_id, locked=True))
    cell.id = cell_id
    return cell


def exercise(cell_id, source):
    cell = nbformat.v4.new_code_cell(source, metadata=meta(cell_id, solution=True))
    cell.id = cell_id
    return cell


def check(number, title, source, points=1):
    cell = nbformat.v4.new_code_cell(f"# CHECK exercise {number}: {title}\n{source}",
                                     metadata=meta(f"check-{number}", grade=True, locked=True, points=points))
    cell.id = f"check-{number}"
    return cell


def solved(body):
    return f"### BEGIN SOLUTION hint: think\n{body}\n### END SOLUTION"


def notebook(lab, cells):
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["lab"] = {"id": lab}
    return nb


def mixed(student: bool):
    """The lab "mixed": seven exercises; ``student``: alice's copy (see the module docstring)."""
    def pick(reference, hers):
        return hers if student else solved(reference)
    cells = [
        given("setup", "LIMIT = 0  # edited: the grader restores it" if student else "LIMIT = 10"),
        exercise("ex1", pick("def f():\n    return 1", "def f():\n    return 1")),
        check(1, "passes", "assert f() == 1\n### BEGIN HIDDEN TESTS\nassert f() + 1 == 2\n### END HIDDEN TESTS"),
        exercise("ex2", pick("def g():\n    return 3", "def g():\n    return 2")),
        check(2, "a wrong answer", "assert True  # edited to pass" if student else
              "assert g() == 3, f'expected 3, got {g()}'"),
        exercise("ex3", pick("def h():\n    return 3", "def h():\n    raise NotImplementedError('Exercise 3: do it')")),
        check(3, "not done", "assert h() == 3"),
        exercise("ex4", pick("def k():\n    return 4", "def k(:\n    return 4")),
        check(4, "a crash", "assert k() == 4"),
        check(5, "deleted by the student", "assert LIMIT == 10"),
        exercise("ex6", pick("def w():\n    return 6",
                             "import sys\n\n\ndef w():\n    print('debugging', file=sys.stderr)\n    return 6")),
        check(6, "writes to stderr", "assert w() == 6"),
        check(7, "after the crash", "assert f() == 1", points=2),
    ]
    if student:
        cells = [c for c in cells if c.get("id") != "check-5"]
        mine = nbformat.v4.new_code_cell("print('exploring')\nLIMIT = 99")
        cells.insert(2, mine)
    return notebook("mixed", cells)


def slow(student: bool):
    body = "def wait():\n    import time\n    time.sleep(60)" if student else "def wait():\n    return None"
    return notebook("slow", [
        check(1, "quick", "assert True"),
        exercise("ex2", body if student else solved(body)),
        check(2, "calls the slow function", "wait()"),
        check(3, "after the slow cell", "assert True"),
    ])


def dies(student: bool):
    body = "import os\n\n\ndef die():\n    os._exit(1)" if student else "def die():\n    return None"
    return notebook("dies", [
        check(1, "quick", "assert True"),
        exercise("ex2", body if student else solved(body)),
        check(2, "the kernel dies", "die()"),
        check(3, "after the death", "assert True"),
    ])


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("grading")
    reference = root / "reference"
    reference.mkdir()
    for make in (mixed, slow, dies):
        nbformat.write(make(False), reference / f"{make.__name__}.ipynb")
    subs = root / "submissions"
    for folder, nb in (("alice", mixed(True)), ("bob", slow(True)), ("carol", dies(True))):
        (subs / folder).mkdir(parents=True)
        nbformat.write(nb, subs / folder / f"{nb.metadata['lab']['id']}.ipynb")
    broken = mixed(True)
    del broken.cells[3].metadata["nbgrader"]["points"]  # check 1 without points: nbgrader rejects it
    (subs / "dave").mkdir()
    nbformat.write(broken, subs / "dave" / "mixed.ipynb")
    results, changed = grade.grade([subs], reference=reference, timeout=8, jobs=2)
    assert [c for c in changed if c.startswith(str(root))] == []  # (the library may be edited meanwhile)
    return root, {s.name: s for s in results}


def status(sub):
    return {r.exercise: r for r in sub.results}


def test_submissions_are_named_by_their_path_below_the_common_folder(graded):
    _, subs = graded
    assert sorted(subs) == ["alice/mixed", "bob/slow", "carol/dies", "dave/mixed"]


def test_every_kind_of_result_is_told_apart(graded):
    alice = graded[1]["alice/mixed"]
    r = status(alice)
    assert {k: v.status for k, v in r.items()} == {
        "1": PASS, "2": FAIL, "3": TODO, "4": ERROR, "5": PASS, "6": ERROR, "7": PASS}
    assert "expected 3, got 2" in r["2"].detail  # the gradebook's check ran, not the edited one
    assert "SyntaxError" in r["4"].detail and "NameError" in r["4"].detail  # the cause first
    assert "stderr" in r["6"].detail and r["6"].points == 0  # nbgrader gives no points
    assert [r[e].points for e in "1234567"] == [1, 0, 0, 0, 1, 0, 2] and alice.max_points == 8
    assert any("check of exercise 5 was missing" in n for n in alice.notes)  # put back, graded


def test_only_definitions_of_the_students_cells_run_and_suspicious_code_is_flagged(graded):
    alice = graded[1]["alice/mixed"]
    assert status(alice)["5"].status == PASS  # the edited setup was restored, LIMIT = 99 left out
    assert any("imports sys" in f for f in alice.flags)
    assert not any("print" in f for f in alice.flags)  # left out, but nothing suspicious


def test_time_limit_and_dead_kernel(graded):
    bob, carol = status(graded[1]["bob/slow"]), status(graded[1]["carol/dies"])
    assert (bob["1"].status, bob["2"].status, bob["3"].status) == (PASS, TIMEOUT, NOT_RUN)
    assert (carol["1"].status, carol["2"].status, carol["3"].status) == (PASS, CRASHED, NOT_RUN)


def test_a_notebook_nbgrader_rejects_is_listed_and_the_others_are_graded(graded):
    dave = graded[1]["dave/mixed"]
    assert dave.problem.startswith("nbgrader could not grade it") and not dave.results
    assert all(s.results for name, s in graded[1].items() if name != "dave/mixed")


def test_table_and_csv_report_every_exercise(graded, tmp_path):
    subs = list(graded[1].values())
    text = grade.table(subs)
    assert "mixed: 1 submission, 7 exercises, 8 points" in text
    row = next(line for line in text.splitlines() if line.strip().startswith("alice/mixed"))
    assert row.split()[1:9] == ["pass", "FAIL", "todo", "error", "pass", "error", "pass", "4/8"]
    assert "Not graded:" in text and "alice/mixed, exercise 3: todo" in text and "FLAG: cell" in text
    grade.write_csv(subs, tmp_path / "out.csv")
    rows = list(csv.DictReader(open(tmp_path / "out.csv", encoding="utf-8")))
    assert tuple(rows[0]) == grade.CSV_FIELDS
    assert len(rows) == 7 + 3 + 3 + 1
    assert [r["status"] for r in rows if r["submission"] == "dave/mixed"] == ["not graded"]
    alice = {r["exercise"]: (r["status"], r["points"]) for r in rows if r["submission"] == "alice/mixed"}
    assert alice == {k: (v.status, f"{v.points:g}") for k, v in status(graded[1]["alice/mixed"]).items()}


def test_command_line_strict_exit_and_csv(graded, tmp_path, capsys):
    root, _ = graded
    out = tmp_path / "results.csv"
    args = [str(root / "submissions" / "carol"), "--reference", str(root / "reference"), "--jobs", "1",
            "--timeout", "30", "--csv", str(out), "--strict"]
    assert grade.main(args) == 1  # graded; --strict: an exercise did not pass
    printed = capsys.readouterr().out
    assert printed.startswith("dies: 1 submission, 3 exercises") and f"wrote {out}" in printed
    assert [r["status"] for r in csv.DictReader(open(out, encoding="utf-8"))] == [PASS, CRASHED, NOT_RUN]


@pytest.mark.parametrize("make, words", [
    (lambda d: d / "missing.ipynb", "no such file or folder"),
    (lambda d: (d / "notes.txt").write_text("hello") and d / "notes.txt", "is not a notebook"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "no notebooks"),
])
def test_bad_arguments_exit_2_with_a_clear_message(tmp_path, capsys, make, words):
    path = make(tmp_path)
    assert grade.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert words in err and str(path.name) in err


def test_an_invalid_notebook_is_a_result_not_an_error(tmp_path, capsys):
    (tmp_path / "broken.ipynb").write_text("{not json")
    assert grade.main([str(tmp_path / "broken.ipynb")]) == 0
    assert "broken: not a valid notebook: NotJSONError" in capsys.readouterr().out
    assert grade.main([str(tmp_path / "broken.ipynb"), "--strict"]) == 1


# ---------------------------------------------------------------------------------------------
# The defences on their own

GIVEN = trusted_bindings(["import torch\nfrom ondevice.labcheck import Checks\nS = 4\n",
                          "with Checks('x') as check:\n    pass"])


@pytest.mark.parametrize("source, runs, left_out, flag", [
    ("def f(x):\n    return x", "def f(x):\n    return x", None, None),
    ("import torch\nLEVELS = [1, 2]", "import torch\nLEVELS = [1, 2]", None, None),
    ("print('hi')\ndef f():\n    return 1", "\ndef f():\n    return 1", "not a definition", None),
    ("S = 5", "", "rebind S, which a given cell", None),
    ("def max(*a):\n    return 0", "\n", "rebind max, which Python", None),
    ("import numpy as torch", "", "rebind torch", None),
    ("get_ipython().set_custom_exc((Exception,), print)", "", "not a definition", "uses get_ipython"),
    ("import ondevice.labcheck\nondevice.labcheck.Checks.__exit__ = 1", "import ondevice.labcheck\n",
     "not a definition", "changes ondevice.labcheck.Checks.__exit__"),
    ("def f():\n    global check\n    check = None", None, None, "declares check global"),
    ("x = [exec(c) for c in []]", None, None, "uses exec"),
    ("%time f()\nimport os", "\nimport os", "a magic", "imports os"),
    ("await thing()", "", "not a definition", None),
    ("def f(:\n    pass", "raise SyntaxError", "does not parse", None),
])
def test_definitions_keep_what_defines_and_flag_what_reaches_for_the_grader(source, runs, left_out, flag):
    scanned = definitions(source, GIVEN)
    if runs is not None:
        assert scanned.source.startswith(runs) if runs.startswith("raise") else scanned.source.strip() == runs.strip()
    assert (left_out is None) == (not scanned.ignored) and (left_out is None or left_out in scanned.ignored[-1])
    assert (flag is None) == (not scanned.flags) and (flag is None or any(flag in f for f in scanned.flags))


def test_the_guard_refuses_protected_paths_notebooks_processes_and_native_code(tmp_path):
    box, course = tmp_path / "sandbox", tmp_path / "course"
    box.mkdir()
    guard = Guard([course, tmp_path], str(box), str(box / "guard.log"))
    assert guard.why("open", (str(box / "data.txt"), "r", 0)) is None  # its own sandbox
    assert guard.why("open", (str(box / "guard.log"), "r", 0)) is None
    assert "the grader's log" in guard.why("open", (str(box / "guard.log"), "w", 0))
    assert "protected folder" in guard.why("os.rename", (str(course / "source" / "a.py"), "/tmp/b", -1, -1))
    assert "a notebook" in guard.why("open", ("/elsewhere/solutions.ipynb", "r", 0))
    assert guard.why("open", ("/usr/lib/python3/os.py", "r", 0)) is None
    assert "starting processes" in guard.why("subprocess.Popen", ("ls", ["ls"], None, None))
    assert "ctypes" in guard.why("ctypes.dlopen", ("libc.so.6",))
    assert "the network" in guard.why("socket.connect", (None, ("example.org", 80)))
    assert guard.why("socket.connect", (None, ("127.0.0.1", 80))) is None
    assert guard.why("os.kill", (guard.pid, 2)) is None and guard.why("os.kill", (1, 9))


def test_with_a_gpu_the_guard_lets_only_tritons_toolchain_start(tmp_path):
    box = tmp_path / "sandbox"
    box.mkdir()
    programs = toolchain()
    assert any(p.endswith("triton") for p in programs)
    guard = Guard([tmp_path], str(box), str(box / "guard.log"), programs)
    compiler = next((p for p in programs if os.path.basename(p).startswith(("gcc", "cc", "x86_64"))), None)
    if compiler is not None:
        assert guard.why("subprocess.Popen", (None, [compiler, "-O3"], None, None)) is None
    assert "starting processes" in guard.why("subprocess.Popen", (None, ["sh", "-c", "ls"], None, None))
    assert "starting processes" in guard.why("os.system", (b"ls",))
