"""Grade lab notebooks without a JupyterHub: a thin layer over nbgrader's autograder.

Usage::

    python -m ondevice.grade SUBMISSION.ipynb [MORE.ipynb | FOLDER ...] [--reference labs/solutions]
        [--timeout 600] [--jobs N] [--csv results.csv] [--feedback FOLDER] [--strict]

A folder stands for every ``*.ipynb`` below it (``.ipynb_checkpoints`` left out); one folder per
student works well (``submissions/alice/lab1_memory_equations.ipynb``). The grader

1. **reads everything first**: every submission and, for each lab they belong to (notebook
   metadata ``lab.id``, else the file name), its solved notebook from ``--reference``; a
   submission that is not a valid notebook, or whose lab has no solved notebook, is listed as
   not graded and the others go on;
2. makes a temporary nbgrader course per job, runs ``generate_assignment`` on the references
   there (:mod:`ondevice.labs_nbgrader`) and puts each submission in ``submitted/``;
3. runs ``nbgrader autograde`` in each course, in parallel; its Execute step is
   :class:`ondevice.grade_run.IsolatedExecute` (a sandbox per submission that cannot reach the
   course, the references or the other submissions; a fresh kernel that runs the gradebook's
   checks, hidden tests included, on the submission's definitions only);
4. reports nbgrader's points and one status per exercise (:mod:`ondevice.grade_report`), the
   flags (suspicious code, refused operations), and checks that no file it read has changed;
   ``--feedback`` keeps the autograded notebooks (what each check printed) for the students.

Exit status: 0 when grading ran (wrong answers and invalid notebooks are results); with
``--strict``, 1 when any exercise did not pass, a notebook was not graded or anything was
flagged; 2 for bad arguments (a missing path, a file that is not a ``.ipynb``, a folder without
notebooks); 3 when the grading machinery failed for some submission (a kernel that could not
start) or a file changed during grading.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from .grade_report import CSV_FIELDS, STATUSES, Result, Submission, results_of, table, write_csv
from .labs_nbgrader import tools_on_path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REFERENCE = ROOT / "labs" / "solutions"


class UsageError(ValueError):
    """A bad argument: a missing path, a file that is not a notebook, an empty folder."""


# ---------------------------------------------------------------------------------------------
# 1. Read everything first


def find_notebooks(paths) -> list[Path]:
    """The notebooks named by ``paths`` (files, or folders searched recursively), each once."""
    if not paths:
        raise UsageError("no notebook given")
    found: list[Path] = []
    for given in map(Path, paths):
        if not given.exists():
            raise UsageError(f"no such file or folder: {given}")
        if given.is_dir():
            inside = sorted(p for p in given.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts and p.is_file())
            if not inside:
                raise UsageError(f"no notebooks (*.ipynb) in folder {given}")
            found += inside
        elif given.suffix != ".ipynb":
            raise UsageError(f"{given} is not a notebook (expected a .ipynb file)")
        else:
            found.append(given)
    return list(dict.fromkeys(p.resolve() for p in found))


def parse(text: str):
    """The notebook in ``text``, or raise ValueError saying why it is not a valid one."""
    try:
        nb = nbformat.reads(text, as_version=4)
        nbformat.validate(nb)
    except Exception as error:
        first = str(error).splitlines()[0] if str(error) else ""
        raise ValueError(f"not a valid notebook: {type(error).__name__}: {first}") from None
    return nb


def lab_id(nb, path: Path) -> str:
    lab = nb.metadata.get("lab", {})
    return str((lab.get("id") if isinstance(lab, dict) else None) or path.stem)


def submission_names(paths: list[Path]) -> dict[Path, str]:
    """Short, unique names: each path relative to the folder common to all, without .ipynb."""
    if not paths:
        return {}
    root = Path(os.path.commonpath([p.parent for p in paths]))
    return {p: p.relative_to(root).with_suffix("").as_posix() for p in paths}


def digest(path: Path) -> str:
    h = hashlib.sha256()
    for file in sorted(p for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()):
        if "__pycache__" not in file.parts:
            h.update(str(file).encode() + b"\0" + file.read_bytes())
    return h.hexdigest()


def load(paths, reference: Path) -> tuple[list[Submission], dict[Path, str], dict[str, str]]:
    """The submissions (invalid ones marked), their texts, and the reference text of each lab."""
    notebooks = find_notebooks(paths)
    names = submission_names(notebooks)
    subs, texts, references = [], {}, {}
    for path in notebooks:
        text = path.read_text(encoding="utf-8", errors="replace")
        try:
            lab = lab_id(parse(text), path)
        except ValueError as error:
            subs.append(Submission(path, names[path], path.stem, problem=str(error)))
            continue
        sub = Submission(path, names[path], lab)
        if lab not in references:
            solved = Path(reference) / f"{lab}.ipynb"
            references[lab] = solved.read_text(encoding="utf-8") if solved.is_file() else ""
        if not references[lab]:
            sub.problem = f"no solved notebook {lab}.ipynb in {reference}"
        texts[path] = text
        subs.append(sub)
    return subs, texts, {lab: text for lab, text in references.items() if text}


# ---------------------------------------------------------------------------------------------
# 2 and 3. Courses and nbgrader's autograder

CONFIG = """# written by ondevice.grade for one grading job
from ondevice.labs_nbgrader import configure
configure(get_config(), **{options!r})
"""


def make_courses(workspace: Path, references: dict[str, str], jobs: int, options: dict) -> list[Path]:
    """One course folder per job, each with every lab generated from its reference."""
    from .labs_nbgrader import generate

    first = workspace / "course-0"
    generate(first, references, **options)
    courses = [first]
    for job in range(1, jobs):
        courses.append(workspace / f"course-{job}")
        shutil.copytree(first, courses[-1])
    for course in courses:
        (course / "nbgrader_config.py").write_text(CONFIG.format(options=options), encoding="utf-8")
    return courses


def autograde(courses: list[Path]) -> list[str]:
    """Run ``nbgrader autograde`` in every course at once; return each one's log."""
    runs = []
    for course in courses:
        log = open(course / "autograde.log", "w", encoding="utf-8")
        command = [sys.executable, "-m", "nbgrader", "autograde", "*", "--force"]
        runs.append((subprocess.Popen(command, cwd=course, env=tools_on_path(dict(os.environ)), stdout=log,
                                      stderr=subprocess.STDOUT), log))
    for process, log in runs:
        process.wait()
        log.close()
    return [(course / "autograde.log").read_text(encoding="utf-8", errors="replace") for course in courses]


def _scores(course: Path, lab: str, student: str) -> dict[str, float | None]:
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        try:
            notebook = gb.find_submission_notebook(lab, lab, student)
        except MissingEntry:
            return {}
        return {g.name: g.auto_score for g in notebook.grades}


def collect(sub: Submission, course: Path, student: str, log: str, feedback: Path | None) -> None:
    """Fill ``sub`` from its autograded notebook and the course's gradebook (and copy the
    notebook to ``feedback/<name>.ipynb``)."""
    graded = course / "autograded" / student / sub.lab / f"{sub.lab}.ipynb"
    if not graded.is_file():  # nbgrader rejected the notebook (its nbgrader metadata, say)
        errors = [line.strip() for line in log.splitlines() if "Error" in line and "Traceback" not in line]
        sub.problem = "nbgrader could not grade it: " + (" | ".join(errors[-2:]) or "see nbgrader's log")
        return
    if feedback is not None:
        (feedback / sub.name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(graded, feedback / f"{sub.name}.ipynb")
    nb = nbformat.read(graded, as_version=4)
    summary = nb.metadata.get("ondevice_grade", {})
    sub.results, sub.manual, sub.notes = results_of(nb, _scores(course, sub.lab, student))
    sub.seconds = summary.get("seconds", 0.0)
    sub.flags = list(summary.get("flags", [])) + list(summary.get("denied", []))
    if summary.get("error"):
        sub.notes.append(f"the grading run failed: {summary['error']}")
        sub.machinery_failed = True


def grade(paths, *, reference: Path = DEFAULT_REFERENCE, timeout: float = 600, jobs: int = 1,
          feedback: Path | None = None) -> tuple[list[Submission], list[str]]:
    """Grade the notebooks named by ``paths`` (see the module docstring); return the submissions
    and the files that changed during grading (none, unless a sandbox was escaped).
    ``feedback``: a folder that receives each autograded notebook (outputs of the grading run,
    nbgrader's metadata), as ``<submission name>.ipynb``.

    Raises :class:`UsageError` for bad paths before anything runs."""
    if not timeout > 0:
        raise UsageError(f"the time limit must be positive, got {timeout!r}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise UsageError(f"jobs must be an int of at least 1, got {jobs!r}")
    if not Path(reference).is_dir():
        raise UsageError(f"reference folder not found: {reference}")
    subs, texts, references = load(paths, Path(reference))
    watched = [s.path for s in subs] + [Path(reference)] + [Path(__import__(p).__file__).resolve().parent
                                                          for p in ("ondevice", "kernels")]
    before = {p: digest(p) for p in watched}
    graded = [s for s in subs if not s.problem]
    if graded:
        with tempfile.TemporaryDirectory(prefix="ondevice-grade-") as tmp:
            _grade_in(Path(tmp), graded, texts, references, timeout, jobs, Path(reference), feedback)
    changed = [str(p) for p in watched if digest(p) != before[p]]
    return subs, changed


def _grade_in(tmp: Path, graded: list[Submission], texts, references, timeout: float, jobs: int,
              reference: Path, feedback: Path | None) -> None:
    from .grade_run import snapshot_library

    jobs = min(jobs, len(graded))
    library = snapshot_library(tmp / "library")
    (tmp / "sandboxes").mkdir()
    protected = sorted({str(s.path.parent) for s in graded}) + [str(reference.resolve()), str(tmp)]
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // jobs))
    options = dict(timeout=timeout, library=str(library), protected=protected,
                   sandbox_root=str(tmp / "sandboxes"), threads=threads)
    courses = make_courses(tmp, {lab: references[lab] for lab in {s.lab for s in graded}}, jobs, options)
    where = {}
    for number, sub in enumerate(graded):
        course, student = courses[number % jobs], f"s{number:04d}"
        folder = course / "submitted" / student / sub.lab
        folder.mkdir(parents=True)
        (folder / f"{sub.lab}.ipynb").write_text(texts[sub.path], encoding="utf-8")
        where[id(sub)] = (course, student)
    logs = dict(zip(courses, autograde(courses)))
    for sub in graded:
        course, student = where[id(sub)]
        collect(sub, course, student, logs[course], feedback)


# ---------------------------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ondevice.grade",
        description="Grade lab notebooks with nbgrader's autograder, each in a sandbox, and report "
                    f"each exercise ({', '.join(STATUSES)}) and nbgrader's points.",
        epilog="Exit status: 0 graded (failures are results), 1 an exercise did not pass, a notebook "
               "was not graded or something was flagged (--strict only), 2 bad arguments, 3 the "
               "grading machinery failed or a file changed during grading.")
    parser.add_argument("paths", nargs="+", metavar="NOTEBOOK_OR_FOLDER",
                        help="submissions: .ipynb files, or folders searched for them")
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE, metavar="FOLDER",
                        help=f"the solved labs (default: {DEFAULT_REFERENCE})")
    parser.add_argument("--timeout", type=float, default=600, metavar="SECONDS",
                        help="time limit per notebook, all cells together (default 600)")
    parser.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) // 2), metavar="N",
                        help="notebooks graded at once (default: half the CPUs)")
    parser.add_argument("--csv", type=Path, metavar="FILE", help="also write the results as CSV")
    parser.add_argument("--feedback", type=Path, metavar="FOLDER",
                        help="also write each autograded notebook there (the students' feedback)")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when anything did not pass, was not graded or was flagged")
    args = parser.parse_args(argv)
    try:
        start = time.monotonic()
        subs, changed = grade(args.paths, reference=args.reference, timeout=args.timeout, jobs=args.jobs,
                              feedback=args.feedback)
    except UsageError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    print(table(subs))
    if changed:
        print("\nWARNING: files changed while the submissions ran (a sandbox was escaped?): "
              + ", ".join(changed))
    print(f"\ngraded {sum(not s.problem for s in subs)} of {len(subs)} notebooks in "
          f"{time.monotonic() - start:.0f} s")
    if args.csv is not None:
        write_csv(subs, args.csv)
        print(f"wrote {args.csv}")
    if changed or any(s.machinery_failed for s in subs):
        return 3
    bad = any(s.problem or s.flags or any(r.status != "pass" for r in s.results) for s in subs)
    return 1 if args.strict and bad else 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["CSV_FIELDS", "DEFAULT_REFERENCE", "Result", "STATUSES", "Submission", "UsageError", "grade",
           "main", "table", "write_csv"]
