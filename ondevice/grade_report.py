"""From autograded notebooks to the teacher's table and CSV (:mod:`ondevice.grade`).

Each graded cell of a lab is one exercise (its line ``# CHECK exercise <id>: <title>`` names
it). Its status comes from what the grading run (:mod:`ondevice.grade_run`) recorded for the
cell, through two tables rather than a ladder of cases:

=========  ===============================================================================
pass       the check ran without an error and nbgrader gave it full points
FAIL       the check raised AssertionError: the answer is wrong (the check printed why)
todo       NotImplementedError: the stub is not filled in yet
error      any other exception (in the check, or in the student's code it calls); the
           detail names the first error in the exercise's own cells when there is one; also
           a check that wrote to stderr (nbgrader gives it no points)
timeout    the notebook's time limit ran out in this check
crashed    the kernel died in this check (e.g. out of memory)
not run    the check was never reached (time limit or crash earlier)
=========  ===============================================================================

A check cell the student deleted is put back by nbgrader before grading (so it is graded, and
a note says so). The points are nbgrader's, read from its gradebook.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from nbgrader.utils import determine_grade

from .grade_run import CRASHED, META, NOT_RUN, OK, RAISED, TIMEOUT
from .labs_nbgrader import check_marker

PASS, FAIL, TODO, ERROR = "pass", "FAIL", "todo", "error"
STATUSES = (PASS, FAIL, TODO, ERROR, TIMEOUT, CRASHED, NOT_RUN)
STATUS_OF_RUN = {TIMEOUT: TIMEOUT, CRASHED: CRASHED, NOT_RUN: NOT_RUN}  # a run without a result
STATUS_OF_ERROR = {"AssertionError": FAIL, "NotImplementedError": TODO}  # else ERROR
DETAIL = {
    TODO: "not done yet: the stub still raises NotImplementedError",
    TIMEOUT: "the notebook's time limit ran out in this check",
    CRASHED: "the kernel died in this check (out of memory, or a crash in native code)",
    NOT_RUN: "the grading run stopped before this check (a time limit or a crash earlier)",
}
MISSING_NOTE = "was missing from the submission"  # nbgrader's words for a cell it put back


@dataclass(frozen=True)
class Result:
    exercise: str
    title: str
    status: str
    points: float | None = None
    max_points: float = 0.0
    detail: str = ""


@dataclass
class Submission:
    path: Path
    name: str  # the path below the folder common to all submissions, without .ipynb
    lab: str
    problem: str = ""  # why it was not graded ("" when it was)
    results: list[Result] = field(default_factory=list)
    manual: int = 0  # written answers left for the teacher (nbgrader's manual grading)
    seconds: float = 0.0
    flags: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    machinery_failed: bool = False  # the kernel or nbgrader failed (nothing the submission did)

    @property
    def passed(self) -> int:
        return sum(r.status == PASS for r in self.results)

    @property
    def points(self) -> float:
        return sum(r.points or 0.0 for r in self.results)

    @property
    def max_points(self) -> float:
        return sum(r.max_points for r in self.results)


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _run(cell) -> dict:
    return cell.metadata.get(META, {})


def _own_error(cells, start: int, end: int) -> str:
    """The first error of the student's cells between two checks (a SyntaxError, say)."""
    for cell in cells[start:end]:
        run = _run(cell)
        if run.get("run") == RAISED and not run.get("given") and run.get("ename") != "NotImplementedError":
            return f"your code raised {run['ename']}: {run['evalue']}"
    return ""


def status_of(cell, own_error: str = "") -> tuple[str, str]:
    """(status, detail) of one graded code cell of an autograded notebook."""
    run = _run(cell)
    kind = run.get("run", NOT_RUN)
    if kind in STATUS_OF_RUN:
        return STATUS_OF_RUN[kind], DETAIL[STATUS_OF_RUN[kind]]
    if kind == RAISED:
        status = STATUS_OF_ERROR.get(run.get("ename"), ERROR)
        detail = DETAIL.get(status, f"{run.get('ename')}: {run.get('evalue')}")
        if status == ERROR and own_error:
            detail = f"{own_error} (then the check: {detail})"
        return status, _one_line(detail)
    score, top = determine_grade(cell)
    if kind == OK and score == top:
        return PASS, ""
    stderr = "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("name") == "stderr")
    return ERROR, _one_line(f"the check wrote to stderr, so nbgrader gives no points: {stderr}")


def results_of(nb, scores: dict[str, float | None]) -> tuple[list[Result], int, list[str]]:
    """The exercises of an autograded notebook, the number of written answers left to grade by
    hand, and notes; ``scores``: grade_id -> nbgrader's points."""
    results, notes, manual, previous = [], [], 0, 0
    for index, cell in enumerate(nb.cells):
        meta = cell.metadata.get("nbgrader", {})
        if not meta.get("grade"):
            continue
        if meta.get("solution"):  # a written answer: nbgrader leaves it to the teacher
            manual += scores.get(meta["grade_id"]) is None
            continue
        marker = check_marker(cell.source) or (meta["grade_id"], meta["grade_id"])
        if MISSING_NOTE in cell.source:
            notes.append(f"the check of exercise {marker[0]} was missing; nbgrader put it back")
        status, detail = status_of(cell, _own_error(nb.cells, previous, index))
        results.append(Result(marker[0], marker[1], status, scores.get(meta["grade_id"]),
                              float(meta.get("points", 0)), detail))
        previous = index + 1
    return results, manual, notes


# ---------------------------------------------------------------------------------------------
# Reports


def _points(value: float) -> str:
    return f"{value:g}"


def table(submissions: list[Submission]) -> str:
    """One table per lab (a row per graded submission, a column per exercise), the submissions
    that were not graded, then the details."""
    lines: list[str] = []
    labs: dict[str, list[Submission]] = {}
    for sub in submissions:
        if not sub.problem:
            labs.setdefault(sub.lab, []).append(sub)
    for lab, subs in labs.items():
        columns: dict[str, Result] = {}
        for sub in subs:
            for r in sub.results:
                columns.setdefault(r.exercise, r)
        width = max([len("submission")] + [len(s.name) for s in subs])
        cells = {ex: max([len(ex)] + [len(r.status) for s in subs for r in s.results if r.exercise == ex])
                 for ex in columns}
        total = sum(r.max_points for r in columns.values())
        if lines:
            lines.append("")
        lines.append(f"{lab}: {len(subs)} submission{'s' if len(subs) != 1 else ''}, {len(columns)} "
                     f"exercises, {_points(total)} points")
        for ex, r in columns.items():
            lines.append(f"  exercise {ex}: {r.title} ({_points(r.max_points)} "
                         f"point{'s' if r.max_points != 1 else ''})")
        lines.append("  " + "  ".join([f"{'submission':{width}s}"] + [f"{ex:{cells[ex]}s}" for ex in columns]
                                      + ["points  ", "flags", "  time"]))
        for sub in subs:
            status = {r.exercise: r.status for r in sub.results}
            points = f"{_points(sub.points)}/{_points(sub.max_points)}"
            lines.append("  " + "  ".join(
                [f"{sub.name:{width}s}"] + [f"{status.get(ex, ''):{cells[ex]}s}" for ex in columns]
                + [f"{points:8s}", f"{len(sub.flags) or '-':>5}", f"{sub.seconds:4.0f} s"]))
    broken = [s for s in submissions if s.problem]
    if broken:
        lines += ["", "Not graded:"] + [f"  {s.name}: {s.problem}" for s in broken]
    details = []
    for sub in submissions:
        details += [f"{sub.name}: FLAG: {flag}" for flag in sub.flags]
        details += [f"{sub.name}: note: {note}" for note in sub.notes]
        todo = [r.exercise for r in sub.results if r.status == TODO]
        if todo:
            details.append(f"{sub.name}, exercise{'s' if len(todo) > 1 else ''} {', '.join(todo)}: "
                           f"{TODO} (the stub still raises NotImplementedError)")
        for r in sub.results:
            if r.status not in (PASS, TODO):
                details.append(f"{sub.name}, exercise {r.exercise} ({r.title}): {r.status}"
                               + (f": {r.detail}" if r.detail else ""))
        if sub.manual:
            details.append(f"{sub.name}: {sub.manual} written answer{'s' if sub.manual > 1 else ''} "
                           f"to grade by hand")
    if details:
        lines += ["", "Details:"] + ["  " + d for d in details]
    return "\n".join(lines)


CSV_FIELDS = ("submission", "lab", "exercise", "title", "status", "points", "max_points", "detail",
              "flags", "path")


def write_csv(submissions: list[Submission], path: Path) -> None:
    """One row per (submission, exercise), and one per submission that was not graded
    (exercise empty, status ``not graded``); see :data:`CSV_FIELDS`."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_FIELDS)
        for sub in submissions:
            flags = len(sub.flags)
            if sub.problem:
                writer.writerow([sub.name, sub.lab, "", "", "not graded", "", "", sub.problem, flags, str(sub.path)])
            for r in sub.results:
                writer.writerow([sub.name, sub.lab, r.exercise, r.title, r.status,
                                 "" if r.points is None else _points(r.points), _points(r.max_points),
                                 r.detail, flags, str(sub.path)])


__all__ = ["CSV_FIELDS", "ERROR", "FAIL", "PASS", "Result", "STATUSES", "Submission", "TODO", "results_of",
           "status_of", "table", "write_csv"]
