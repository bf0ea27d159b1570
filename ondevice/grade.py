"""Grade lab notebooks: run every submission in a fresh kernel and report each exercise's check.

Usage::

    python -m ondevice.grade SUBMISSION.ipynb [MORE.ipynb | FOLDER ...] [--timeout 600]
        [--jobs N] [--csv results.csv] [--reference labs/solutions | --no-reference]
        [--kernel NAME] [--strict]

A folder stands for every ``*.ipynb`` below it (``.ipynb_checkpoints`` left out).

**Exercises.** A lab's check cell starts with the line ``# CHECK exercise <id>: <title>`` (the
labs also tag it ``check`` and ``exercise-<id>``). An exercise passes when its check cell runs
without an error. Every cell runs, in order, whatever the earlier ones did (errors are
allowed), so a crash in one exercise does not hide the others. The status of an exercise:

=========  ===============================================================================
pass       its check cell ran without an error
FAIL       its check raised AssertionError: the answer is wrong (the check printed why)
todo       NotImplementedError: the stub is not filled in yet
error      any other exception (in the check, or in the student's code it calls); the
           detail names the first error in the exercise's own cells when there is one
timeout    the notebook's time limit (``--timeout``) ran out in this check cell
crashed    the kernel died in this check cell (e.g. out of memory)
not run    the check cell was never reached (the time limit ran out or the kernel died
           earlier); no result, neither right nor wrong
missing    the check cell is not in the submission (deleted, or its first line edited)
=========  ===============================================================================

**Reference.** A submission's lab is its notebook metadata ``lab.id`` (the labs carry it),
else its file name. When the solved notebook of that lab is found (``--reference``, by default
``labs/solutions/`` of this repository), it fixes the list of exercises (a deleted check is
reported as ``missing``), and every cell it tags ``locked`` or ``check`` is run as the
reference has it, matched by cell id (check cells also by exercise id): editing a check, the
setup or a check helper changes nothing. ``--no-reference`` grades submissions as they are.

**Output.** One table per lab, a row per submission and a column per exercise, then one line
per exercise that did not pass, with the error's first line. ``--csv FILE`` writes one row per
(submission, exercise): ``submission, lab, exercise, title, status, detail, path``.

**Exit status.** 0 when every submission was graded, whatever its results (failures are
results); with ``--strict``, 1 when any exercise did not pass; 2 for bad arguments (a missing
file, a file that is not a notebook, a folder without notebooks); 3 when a kernel could not
be started (nothing to do with the submission).

Kernels run this Python by default (``--kernel`` picks an installed kernel spec), in the
submission's folder, with this repository on ``PYTHONPATH`` and, unless set,
``OMP_NUM_THREADS`` = CPUs / jobs, so parallel kernels do not oversubscribe the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REFERENCE = ROOT / "labs" / "solutions"
CHECK = re.compile(r"^# CHECK exercise (?P<id>\S+): (?P<title>.+?)\s*$")
THIS_PYTHON = "this-python"  # the kernel name that means "a kernel running this interpreter"

PASS, FAIL, TODO, ERROR = "pass", "FAIL", "todo", "error"
TIMEOUT, CRASHED, NOT_RUN, MISSING = "timeout", "crashed", "not run", "missing"
STATUSES = (PASS, FAIL, TODO, ERROR, TIMEOUT, CRASHED, NOT_RUN, MISSING)


class UsageError(Exception):
    """A bad argument: a missing file, a file that is not a notebook, an empty folder."""


class KernelStartError(Exception):
    """The kernel for a submission could not be started (nothing the submission did)."""


@dataclass(frozen=True)
class Exercise:
    id: str
    title: str


@dataclass(frozen=True)
class Result:
    exercise: str
    title: str
    status: str
    detail: str = ""


@dataclass
class Submission:
    path: Path
    name: str  # the path relative to the common folder of all submissions, without .ipynb
    lab: str
    results: list[Result] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    kernel_failed: bool = False
    errors: list[tuple[int, str, str]] = field(default_factory=list)  # (cell index, ename, evalue)

    @property
    def passed(self) -> int:
        return sum(r.status == PASS for r in self.results)


def check_marker(cell) -> Exercise | None:
    """The exercise a code cell checks, from its first line (None: not a check cell)."""
    if cell.cell_type != "code":
        return None
    match = CHECK.match(cell.source.split("\n", 1)[0])
    return Exercise(match["id"], match["title"]) if match else None


def exercises(nb) -> list[Exercise]:
    """The exercises of a notebook, in order (each check cell once)."""
    found: dict[str, Exercise] = {}
    for cell in nb.cells:
        exercise = check_marker(cell)
        if exercise is not None:
            found.setdefault(exercise.id, exercise)
    return list(found.values())


def lab_id(nb, path: Path) -> str:
    return str(nb.metadata.get("lab", {}).get("id") or path.stem)


# ---------------------------------------------------------------------------------------------
# Inputs


def find_notebooks(paths) -> list[Path]:
    """The notebooks named by ``paths`` (files, or folders searched recursively), each once.

    Raises :class:`UsageError` for a missing path, a file that is not a ``.ipynb`` notebook, a
    notebook that cannot be read, or a folder with no notebook.
    """
    if not paths:
        raise UsageError("no notebook given")
    found: list[Path] = []
    for given in map(Path, paths):
        if not given.exists():
            raise UsageError(f"no such file or folder: {given}")
        if given.is_dir():
            inside = sorted(p for p in given.rglob("*.ipynb")
                            if ".ipynb_checkpoints" not in p.parts and p.is_file())
            if not inside:
                raise UsageError(f"no notebooks (*.ipynb) in folder {given}")
            found += inside
        elif given.suffix != ".ipynb":
            raise UsageError(f"{given} is not a notebook (expected a .ipynb file)")
        else:
            found.append(given)
    unique = list(dict.fromkeys(p.resolve() for p in found))
    for path in unique:
        read_notebook(path)
    return unique


def read_notebook(path: Path):
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as error:  # JSON errors, wrong structure, unreadable file
        raise UsageError(f"{path} is not a valid notebook: {type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''}") from None
    if not isinstance(nb.get("cells"), list):
        raise UsageError(f"{path} is not a valid notebook: it has no cells")
    return nb


def submission_names(paths: list[Path]) -> dict[Path, str]:
    """Short, unique names: each path relative to the folder common to all, without .ipynb."""
    if not paths:
        return {}
    root = Path(os.path.commonpath([p.parent for p in paths]))
    return {p: p.relative_to(root).with_suffix("").as_posix() for p in paths}


# ---------------------------------------------------------------------------------------------
# Reference: the solved notebook fixes the exercises and the locked cells


def restore_locked(nb, reference) -> list[str]:
    """Put the reference's ``locked`` and ``check`` cells back into ``nb`` (matched by cell id,
    check cells also by exercise id); return a note per restored cell."""
    by_id, by_exercise = {}, {}
    for cell in reference.cells:
        tags = cell.metadata.get("tags", [])
        exercise = check_marker(cell)
        if exercise is not None:
            by_exercise[exercise.id] = cell
        if "locked" in tags or exercise is not None:
            if cell.get("id"):
                by_id[cell["id"]] = cell
    notes = []
    for cell in nb.cells:
        original = by_id.get(cell.get("id"))
        if original is None:
            exercise = check_marker(cell)
            original = by_exercise.get(exercise.id) if exercise else None
        if original is not None and (cell.cell_type != original.cell_type or cell.source != original.source):
            what = check_marker(original)
            name = f"check of exercise {what.id}" if what else f"locked cell {cell.get('id')}"
            notes.append(f"restored the edited {name}")
            cell.cell_type, cell.source = original.cell_type, original.source
            if cell.cell_type == "code":
                cell.setdefault("outputs", [])
                cell.setdefault("execution_count", None)
    return notes


# ---------------------------------------------------------------------------------------------
# Execution


@dataclass
class CellRun:
    status: str  # "ok", "error", TIMEOUT, CRASHED
    ename: str = ""
    evalue: str = ""


def _kernel_manager(kernel: str):
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    if kernel != THIS_PYTHON:
        return AsyncKernelManager(kernel_name=kernel)

    class ThisPython(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            if kernel_name == THIS_PYTHON:
                import ipykernel.kernelspec

                return self.kernel_spec_class(resource_dir=ipykernel.kernelspec.RESOURCES,
                                              **ipykernel.kernelspec.get_kernel_dict())
            return super().get_kernel_spec(kernel_name)

    return AsyncKernelManager(kernel_name=THIS_PYTHON, kernel_spec_manager=ThisPython())


def _first_error(cell) -> tuple[str, str] | None:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return out.get("ename", ""), out.get("evalue", "")
    return None


async def execute(nb, cwd: Path, timeout: float, kernel: str, env: dict[str, str]) -> dict[int, CellRun]:
    """Run the code cells of ``nb`` in order in a fresh kernel, errors allowed, until the end or
    until ``timeout`` seconds have passed; return what happened to each cell that ran."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    client = NotebookClient(nb, km=_kernel_manager(kernel), allow_errors=True, record_timing=False,
                            shutdown_kernel="immediate", startup_timeout=120,
                            resources={"metadata": {"path": str(cwd)}})
    runs: dict[int, CellRun] = {}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}  # the kernel's own logs
    session = client.async_setup_kernel(cleanup_kc=True, env=env, **quiet)
    try:
        await session.__aenter__()
    except Exception as error:
        raise KernelStartError(f"{type(error).__name__}: {error}") from error
    try:
        deadline = time.monotonic() + timeout  # the limit counts the cells, not the kernel's start
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            left = deadline - time.monotonic()
            if left < 1:
                runs[index] = CellRun(TIMEOUT)
                break
            client.timeout = int(left)
            try:
                await client.async_execute_cell(cell, index)
            except CellTimeoutError:
                runs[index] = CellRun(TIMEOUT)
                break
            except DeadKernelError:
                runs[index] = CellRun(CRASHED)
                break
            error = _first_error(cell)
            runs[index] = CellRun("error", *error) if error else CellRun("ok")
    except BaseException as error:
        if not await session.__aexit__(type(error), error, error.__traceback__):
            raise
    else:
        await session.__aexit__(None, None, None)
    return runs


# ---------------------------------------------------------------------------------------------
# From cell runs to exercise results


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


def results_of(nb, runs: dict[int, CellRun], expected: list[Exercise], timeout: float) -> list[Result]:
    """Each expected exercise's status from the runs of its check cell and of its own cells
    (the code cells after the previous check cell)."""
    checks: dict[str, int] = {}
    for index, cell in enumerate(nb.cells):
        exercise = check_marker(cell)
        if exercise is not None and exercise.id not in checks:
            checks[exercise.id] = index
    stopped = next((i for i, r in runs.items() if r.status in (TIMEOUT, CRASHED)), None)
    out = []
    for exercise in expected:
        index = checks.get(exercise.id)
        if index is None:
            out.append(Result(exercise.id, exercise.title, MISSING,
                              "no check cell starts with '# CHECK exercise "
                              f"{exercise.id}: ...' in this notebook"))
            continue
        run = runs.get(index)
        if run is None:
            why = ("the time limit ran out" if stopped is not None and runs[stopped].status == TIMEOUT
                   else "the kernel died" if stopped is not None else "the notebook stopped")
            out.append(Result(exercise.id, exercise.title, NOT_RUN, f"{why} before this check"))
            continue
        if run.status == TIMEOUT:
            out.append(Result(exercise.id, exercise.title, TIMEOUT,
                              f"the notebook's time limit ({timeout:g} s) ran out in this check"))
            continue
        if run.status == CRASHED:
            out.append(Result(exercise.id, exercise.title, CRASHED,
                              "the kernel died in this check (out of memory, or a crash in native code)"))
            continue
        if run.status == "ok":
            out.append(Result(exercise.id, exercise.title, PASS))
            continue
        status = {"AssertionError": FAIL, "NotImplementedError": TODO}.get(run.ename, ERROR)
        detail = f"{run.ename}: {run.evalue}"
        if status == TODO:
            detail = "not done yet: the stub still raises NotImplementedError"
        if status == ERROR:  # did the exercise's own cells fail first (e.g. a SyntaxError)?
            previous = max((i for i in checks.values() if i < index), default=-1)
            own = [runs[i] for i in range(previous + 1, index)
                   if i in runs and runs[i].status == "error" and runs[i].ename != "NotImplementedError"]
            if own:
                detail = f"your code raised {own[0].ename}: {own[0].evalue} (then the check: {detail})"
        out.append(Result(exercise.id, exercise.title, status, _one_line(detail)))
    return out


# ---------------------------------------------------------------------------------------------
# Grading


def kernel_env(jobs: int) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, jobs))))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


async def _grade_one(path: Path, name: str, *, timeout: float, reference: Path | None,
                     kernel: str, env: dict[str, str]) -> Submission:
    nb = read_notebook(path)
    lab = lab_id(nb, path)
    sub = Submission(path, name, lab)
    expected = exercises(nb)
    ref_path = reference / f"{lab}.ipynb" if reference is not None else None
    if ref_path is not None and ref_path.is_file():
        ref = read_notebook(ref_path)
        expected = exercises(ref)
        if ref_path.resolve() != path.resolve():
            sub.notes += restore_locked(nb, ref)
    elif reference is not None:
        sub.notes.append(f"no solved notebook {lab}.ipynb in {reference}: checks run as submitted")
    if not expected:
        sub.notes.append("no check cells (lines '# CHECK exercise <id>: <title>') in this notebook")
    start = time.monotonic()
    try:
        runs = await execute(nb, path.parent, timeout, kernel, env)
    except Exception as error:  # not the submission's doing: the grading machinery failed
        sub.kernel_failed = True
        why = ("the kernel could not be started" if isinstance(error, KernelStartError)
               else "grading stopped on an internal error")
        sub.notes.append(f"{why}: {error if isinstance(error, KernelStartError) else repr(error)}")
        runs = {}
    sub.seconds = time.monotonic() - start
    sub.errors = [(i, r.ename, r.evalue) for i, r in sorted(runs.items()) if r.status == "error"]
    sub.results = results_of(nb, runs, expected, timeout)
    if sub.kernel_failed:
        sub.results = [Result(r.exercise, r.title, NOT_RUN, why) if r.status == NOT_RUN else r
                       for r in sub.results]
    return sub


def grade(paths, *, timeout: float = 600, jobs: int = 1, reference: Path | None = DEFAULT_REFERENCE,
          kernel: str = THIS_PYTHON) -> list[Submission]:
    """Grade the notebooks named by ``paths`` (files or folders); see the module docstring.

    ``timeout``: seconds per notebook, all cells together. ``jobs``: notebooks run at once.
    ``reference``: folder of solved notebooks, or None. Raises :class:`UsageError` for bad
    paths before anything runs.
    """
    notebooks = find_notebooks(paths)
    if not timeout > 0:
        raise UsageError(f"the time limit must be positive, got {timeout!r}")
    if jobs < 1:
        raise UsageError(f"jobs must be at least 1, got {jobs!r}")
    if reference is not None and not Path(reference).is_dir():
        raise UsageError(f"reference folder not found: {reference}")
    names = submission_names(notebooks)
    env = kernel_env(jobs)

    async def run_all() -> list[Submission]:
        slots = asyncio.Semaphore(jobs)

        async def one(path: Path) -> Submission:
            async with slots:
                return await _grade_one(path, names[path], timeout=timeout,
                                        reference=None if reference is None else Path(reference),
                                        kernel=kernel, env=env)

        return list(await asyncio.gather(*(one(p) for p in notebooks)))

    return asyncio.run(run_all())


# ---------------------------------------------------------------------------------------------
# Reports


def table(submissions: list[Submission]) -> str:
    """One table per lab: a row per submission, a column per exercise; then the details."""
    lines: list[str] = []
    labs: dict[str, list[Submission]] = {}
    for sub in submissions:
        labs.setdefault(sub.lab, []).append(sub)
    for lab, subs in labs.items():
        columns: dict[str, str] = {}
        for sub in subs:
            for r in sub.results:
                columns.setdefault(r.exercise, r.title)
        width = max([len("submission")] + [len(s.name) for s in subs])
        cells = {ex: max(len(ex), *(len(r.status) for s in subs for r in s.results if r.exercise == ex))
                 for ex in columns}
        if lines:
            lines.append("")
        lines.append(f"{lab}: {len(subs)} submission{'s' if len(subs) != 1 else ''}, "
                     f"{len(columns)} exercises")
        for ex, title in columns.items():
            lines.append(f"  exercise {ex}: {title}")
        lines.append("  " + "  ".join([f"{'submission':{width}s}"] + [f"{ex:{cells[ex]}s}" for ex in columns]
                                      + ["passed", "  time"]))
        for sub in subs:
            status = {r.exercise: r.status for r in sub.results}
            lines.append("  " + "  ".join(
                [f"{sub.name:{width}s}"] + [f"{status.get(ex, ''):{cells[ex]}s}" for ex in columns]
                + [f"{sub.passed:>3d}/{len(sub.results):<2d}", f"{sub.seconds:5.0f} s"]))
    details = []
    for sub in submissions:
        for note in sub.notes:
            details.append(f"{sub.name}: note: {note}")
        todo = [r.exercise for r in sub.results if r.status == TODO]
        if todo:
            details.append(f"{sub.name}, exercise{'s' if len(todo) > 1 else ''} {', '.join(todo)}: "
                           f"{TODO} (the stub still raises NotImplementedError)")
        for r in sub.results:
            if r.status not in (PASS, TODO):
                details.append(f"{sub.name}, exercise {r.exercise} ({r.title}): {r.status}"
                               + (f": {r.detail}" if r.detail else ""))
    if details:
        lines += ["", "Details:"] + ["  " + d for d in details]
    return "\n".join(lines)


CSV_FIELDS = ("submission", "lab", "exercise", "title", "status", "detail", "path")


def write_csv(submissions: list[Submission], path: Path) -> None:
    """One row per (submission, exercise); see :data:`CSV_FIELDS`."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_FIELDS)
        for sub in submissions:
            for r in sub.results:
                writer.writerow([sub.name, sub.lab, r.exercise, r.title, r.status, r.detail, str(sub.path)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ondevice.grade",
        description="Run lab notebooks in fresh kernels and report each exercise's check "
                    "(pass, FAIL, todo, error, timeout, crashed, not run, missing).",
        epilog="Exit status: 0 all graded (failures are results), 1 an exercise did not pass "
               "(--strict only), 2 bad arguments, 3 a kernel could not start.")
    parser.add_argument("paths", nargs="+", metavar="NOTEBOOK_OR_FOLDER",
                        help="submissions: .ipynb files, or folders searched for them")
    parser.add_argument("--timeout", type=float, default=600, metavar="SECONDS",
                        help="time limit per notebook, all cells together (default 600)")
    parser.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) // 2), metavar="N",
                        help="notebooks run at once (default: half the CPUs)")
    parser.add_argument("--csv", type=Path, metavar="FILE", help="also write the results as CSV")
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE, metavar="FOLDER",
                        help="solved notebooks that fix the exercises and the locked cells "
                             f"(default: {DEFAULT_REFERENCE})")
    parser.add_argument("--no-reference", action="store_true",
                        help="grade the notebooks as submitted (their own check cells)")
    parser.add_argument("--kernel", default=THIS_PYTHON, metavar="NAME",
                        help="kernel spec to run (default: this Python)")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when any exercise did not pass")
    args = parser.parse_args(argv)
    reference = None if args.no_reference else args.reference
    if reference is not None and reference == DEFAULT_REFERENCE and not reference.is_dir():
        reference = None  # installed without the repository's labs: nothing to compare with
    try:
        submissions = grade(args.paths, timeout=args.timeout, jobs=args.jobs, reference=reference,
                            kernel=args.kernel)
    except UsageError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    print(table(submissions))
    if args.csv is not None:
        write_csv(submissions, args.csv)
        print(f"\nwrote {args.csv}")
    if any(s.kernel_failed for s in submissions):
        return 3
    if args.strict and any(r.status != PASS for s in submissions for r in s.results):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
