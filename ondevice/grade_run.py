"""The grading run: nbgrader's autograder with the submission's definitions in a sandbox
(labs/README.md, "What the grader trusts").

:class:`IsolatedExecute` replaces nbgrader's ``Execute`` step of ``nbgrader autograde``
(:func:`ondevice.labs_nbgrader.configure` sets it up). nbgrader has already restored the locked
and graded cells of the submission from its gradebook (hidden tests included) when it runs.
It then

1. **plans** the run: every cell that the gradebook knows as locked or graded runs with the
   gradebook's source; every other code cell of the student (the exercise cells, and any cell
   added) runs only its definitions (:func:`ondevice.grade_scan.definitions`), and is scanned
   for flags;
2. makes a **sandbox**: a fresh temporary folder with the assignment's other files and its own
   copy of the library (``ondevice``, ``kernels``), taken before the first submission ran;
3. starts a **fresh kernel** there (this Python, the copy first on ``PYTHONPATH``), installs the
   guard (:mod:`ondevice.grade_guard`) before any cell, and runs the plan in order, errors
   allowed, within ``timeout`` seconds for the whole notebook;
4. writes the outputs back into the submission's cells (its source is kept), one status per
   cell in ``cell.metadata["ondevice_grade"]``, and the notebook's summary (seconds, flags,
   denied operations, left-out statements) in ``nb.metadata["ondevice_grade"]`` and in a note
   at the top of the notebook.

nbgrader's ``SaveAutoGrades`` then scores the graded cells from their outputs, as always: an
error (or anything on stderr) is no points. The kernel in which the submission's definitions ran
only produces outputs; the score is computed here, from cells that no student cell could edit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from nbformat import NotebookNode
from traitlets import Float, List, Unicode

from nbgrader.api import Gradebook, MissingEntry
from nbgrader.preprocessors import NbGraderPreprocessor

from .grade_scan import definitions, trusted_bindings

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ondevice", "kernels")
OK, RAISED, TIMEOUT, CRASHED, NOT_RUN = "ok", "raised", "timeout", "crashed", "not run"
META = "ondevice_grade"  # the metadata key of the run's results (cells and notebook)


@dataclass
class Step:
    """One code cell of the grading run."""

    index: int  # the cell's index in the submission
    source: str  # what runs
    given: bool  # True: the gradebook's cell; False: the student's definitions
    ignored: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)


@dataclass
class CellRun:
    status: str  # OK, RAISED, TIMEOUT, CRASHED
    ename: str = ""
    evalue: str = ""


# ---------------------------------------------------------------------------------------------
# The library the kernels import: one snapshot, taken before any submission runs


def snapshot_library(dest: Path) -> Path:
    """Copy the installed ``ondevice`` and ``kernels`` packages into ``dest``; return ``dest``."""
    import kernels
    import ondevice

    for package in (ondevice, kernels):
        source = Path(package.__file__).resolve().parent
        shutil.copytree(source, dest / source.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


_DEFAULT_LIBRARY: Path | None = None


def default_library() -> Path:
    """This process's snapshot, taken at its first use (nbgrader grades one notebook after another
    in one process, so that is before any submission ran)."""
    global _DEFAULT_LIBRARY
    if _DEFAULT_LIBRARY is None:
        _DEFAULT_LIBRARY = snapshot_library(Path(tempfile.mkdtemp(prefix="ondevice-library-")))
    return _DEFAULT_LIBRARY


# ---------------------------------------------------------------------------------------------
# The plan


def given_cells(db_url: str, notebook: str, assignment: str) -> dict[str, str]:
    """grade_id -> source of every locked or graded code cell the gradebook has for the notebook."""
    with Gradebook(db_url) as gb:
        nb = gb.find_notebook(notebook, assignment)
        graded = {c.name for c in nb.grade_cells}
        return {c.name: c.source for c in nb.source_cells
                if c.cell_type == "code" and (c.locked or c.name in graded)}


def plan(nb, given: dict[str, str]) -> list[Step]:
    """The grading run of ``nb`` (see the module docstring, step 1)."""
    bindings = trusted_bindings(given.values())
    steps = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in given:
            steps.append(Step(index, given[grade_id], True))
        else:
            scanned = definitions(cell.source, bindings)
            steps.append(Step(index, scanned.source, False, scanned.ignored, scanned.flags))
    return steps


# ---------------------------------------------------------------------------------------------
# The kernel


def _kernel_manager():
    """A kernel manager that starts this Python's ipykernel, whatever kernels are installed."""
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    class ThisPython(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            import ipykernel.kernelspec

            return self.kernel_spec_class(resource_dir=ipykernel.kernelspec.RESOURCES,
                                          **ipykernel.kernelspec.get_kernel_dict())

    return AsyncKernelManager(kernel_name="this-python", kernel_spec_manager=ThisPython())


def _first_error(cell) -> tuple[str, str] | None:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return out.get("ename", ""), out.get("evalue", "")
    return None


async def execute(cells: list[NotebookNode], prelude: str, *, cwd: Path, env: dict[str, str],
                  timeout: float) -> dict[int, CellRun]:
    """Run ``prelude`` (it must succeed), then ``cells`` in order in a fresh kernel, errors
    allowed, until the end or until ``timeout`` seconds have passed; return what happened to each
    cell that ran, by position. Raises RuntimeError when the kernel cannot start or the prelude
    fails."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from nbformat.v4 import new_code_cell, new_notebook

    guard = new_code_cell(prelude)
    nb = new_notebook(cells=[guard, *cells])
    client = NotebookClient(nb, km=_kernel_manager(), allow_errors=True, record_timing=False,
                            shutdown_kernel="immediate", startup_timeout=120,
                            resources={"metadata": {"path": str(cwd)}})
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}  # the kernel's own logs
    session = client.async_setup_kernel(cleanup_kc=True, env=env, **quiet)
    try:
        await session.__aenter__()
    except Exception as error:
        raise RuntimeError(f"the kernel could not be started: {type(error).__name__}: {error}") from error
    runs: dict[int, CellRun] = {}
    try:
        client.timeout = 120
        await client.async_execute_cell(guard, 0)
        if _first_error(guard) is not None:
            raise RuntimeError(f"the grader's guard could not be installed: {_first_error(guard)}")
        deadline = time.monotonic() + timeout  # the limit counts the cells, not the kernel's start
        for index, cell in enumerate(cells):
            left = deadline - time.monotonic()
            if left < 1:
                runs[index] = CellRun(TIMEOUT)
                break
            client.timeout = int(left)
            try:
                await client.async_execute_cell(cell, index + 1)
            except CellTimeoutError:
                runs[index] = CellRun(TIMEOUT)
                break
            except DeadKernelError:
                runs[index] = CellRun(CRASHED)
                break
            error = _first_error(cell)
            runs[index] = CellRun(RAISED, *error) if error else CellRun(OK)
    except BaseException as error:
        if not await session.__aexit__(type(error), error, error.__traceback__):
            raise
    else:
        await session.__aexit__(None, None, None)
    return runs


# ---------------------------------------------------------------------------------------------
# The nbgrader preprocessor

WHY_NO_RESULT = {
    TIMEOUT: ("CellTimeoutError", "the notebook's time limit ({timeout:g} s) ran out in this cell"),
    CRASHED: ("DeadKernelError", "the kernel died in this cell (out of memory, or a crash in native code)"),
    NOT_RUN: ("NotRun", "the grading run stopped before this cell (time limit, or the kernel died)"),
}


def _error_output(ename: str, evalue: str) -> NotebookNode:
    return NotebookNode(output_type="error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


def _note(step: Step) -> list[NotebookNode]:
    if not step.ignored:
        return []
    text = ("[ondevice.grade] the grader ran the definitions of this cell and left out:\n"
            + "".join(f"  {line}\n" for line in step.ignored))
    return [NotebookNode(output_type="stream", name="stdout", text=text)]


def summary_cell(summary: dict) -> NotebookNode:
    """The note the grading run puts at the top of the autograded notebook."""
    from nbformat.v4 import new_markdown_cell

    lines = [f"**Grader's note** (`ondevice.grade`): the checks ran in a fresh kernel with "
             f"the definitions of your cells ({summary['seconds']:.0f} s)."]
    for title, key in (("Flags for the teacher", "flags"), ("Operations the grader refused", "denied")):
        if summary[key]:
            lines += ["", f"{title}:", ""] + [f"- {item}" for item in summary[key]]
    if summary["error"]:
        lines += ["", f"The run failed: {summary['error']}"]
    cell = new_markdown_cell("\n".join(lines))
    cell.metadata[META] = {"summary": True}
    return cell


class IsolatedExecute(NbGraderPreprocessor):
    """nbgrader's Execute step, isolated (see the module docstring)."""

    timeout = Float(600, help="Seconds for all the cells of one notebook (the kernel's start "
                              "not counted).").tag(config=True)
    library = Unicode("", help="Folder with the ondevice and kernels packages the kernels import "
                               "(default: a snapshot of the installed ones).").tag(config=True)
    protected_paths = List(Unicode(), help="More folders the kernels may not touch (the course "
                                           "root, this repository's labs/ and library, and the "
                                           "grader's own files always are).").tag(config=True)
    sandbox_root = Unicode("", help="Folder in which the sandboxes are made, protected from the "
                                    "other submissions (default: the system's temporary folder, "
                                    "unprotected).").tag(config=True)
    threads = Unicode("", help="OMP_NUM_THREADS of the kernels (default: as set, else 1).").tag(config=True)

    def _course_root(self) -> str | None:
        converter = getattr(getattr(self, "parent", None), "parent", None)
        coursedir = getattr(converter, "coursedir", None)
        return getattr(coursedir, "root", None)

    def _protected(self, library: Path) -> list[str]:
        folders = [*self.protected_paths, ROOT / "labs", library]
        if self.sandbox_root:
            folders.append(self.sandbox_root)
        folders += [Path(__import__(p).__file__).resolve().parent for p in PACKAGES]
        root = self._course_root()
        if root:
            folders.append(root)
        return [str(Path(f).resolve()) for f in folders]

    def _environment(self, library: Path) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(library)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env["OMP_NUM_THREADS"] = self.threads or env.get("OMP_NUM_THREADS", "1")
        return env

    def preprocess(self, nb, resources):
        from jupyter_core.utils import run_sync
        from nbformat.v4 import new_code_cell

        info = resources["nbgrader"]
        try:
            given = given_cells(info["db_url"], info["notebook"], info["assignment"])
        except MissingEntry:
            given = {}
        steps = plan(nb, given)
        source_library = Path(self.library) if self.library else default_library()
        summary = {"seconds": 0.0, "flags": [], "denied": [], "error": ""}
        with tempfile.TemporaryDirectory(prefix="sandbox-", dir=self.sandbox_root or None) as box:
            box = Path(box)
            work, library, log = box / "work", box / "library", box / "guard.log"
            shutil.copytree(source_library, library)
            folder = Path(resources.get("metadata", {}).get("path") or ".")
            shutil.copytree(folder, work, ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints"),
                            dirs_exist_ok=True)
            protected = self._protected(source_library)
            prelude = (f"import ondevice.grade_guard as _guard\n_guard.install({protected!r}, "
                       f"{str(box)!r}, {str(log)!r})\ndel _guard")
            cells = [new_code_cell(step.source) for step in steps]
            start = time.monotonic()
            try:
                runs = run_sync(execute)(cells, prelude, cwd=work, env=self._environment(library),
                                         timeout=self.timeout)
            except RuntimeError as error:
                runs, summary["error"] = {}, str(error)
            summary["seconds"] = time.monotonic() - start
            if log.exists():
                summary["denied"] = sorted(set(log.read_text(encoding="utf-8", errors="replace").splitlines()))
        for position, step in enumerate(steps):
            cell = nb.cells[step.index]
            run = runs.get(position, CellRun(NOT_RUN))
            cell.outputs = _note(step) + (cells[position].outputs if position in runs else [])
            if run.status in WHY_NO_RESULT:
                ename, evalue = WHY_NO_RESULT[run.status]
                cell.outputs.append(_error_output(ename, evalue.format(timeout=self.timeout)))
            cell.metadata[META] = {"run": run.status, "ename": run.ename, "evalue": run.evalue,
                                   "given": step.given, "ignored": step.ignored, "flags": step.flags}
            summary["flags"] += [f"cell {step.index}, {flag}" for flag in step.flags]
        nb.metadata[META] = summary
        nb.cells.insert(0, summary_cell(summary))
        if summary["error"]:
            self.log.error("ondevice.grade: %s", summary["error"])
        for flag in summary["flags"] + summary["denied"]:
            self.log.warning("ondevice.grade: flagged: %s", flag)
        return nb, resources


__all__ = ["CellRun", "IsolatedExecute", "Step", "execute", "given_cells", "plan", "snapshot_library"]
