"""Immediate checks for the classroom labs (``labs/``; their shape: ``labs/index.md``).

A lab's check cell runs the student's code on several cases and compares every result with a
value that a second source computes: a measurement (:func:`ondevice.memory.measure`), a library
twin (:mod:`kernels`, :mod:`ondevice.blocks`), the memory engine. :class:`Checks` prints one line
per case, expected against actual, and when the cell ends raises :class:`AssertionError` if any
case was wrong. So a student sees every mismatch at once, and the grader (:mod:`ondevice.grade`)
sees a failed check rather than a crash. A :class:`NotImplementedError` from an unfilled stub
passes through unchanged: the grader reports that exercise as not done yet.

::

    with Checks("Exercise 1: Linear") as check:
        for case in cases:
            check.equal(case.name, expected=measured(case), actual=linear_bytes(*case.args))

:func:`compare_prediction` prints a student's prediction beside the measured value ("predict,
then see"; never graded). :func:`run_kernel` launches a Triton kernel written in a lab and turns an unfilled kernel stub
into a :class:`NotImplementedError`, which Triton would otherwise wrap in its own errors.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

OK, WRONG = "ok   ", "WRONG"


def show(value: Any) -> str:
    """A short, exact description of ``value`` for a check line (ints with thousands
    separators, tensors by shape and dtype)."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.6g}"
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {tuple(value.shape)}, {str(value.dtype).replace('torch.', '')}"
    if isinstance(value, tuple):
        return "(" + ", ".join(show(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _tensor_problem(expected: torch.Tensor, actual: Any) -> str | None:
    """Why ``actual`` cannot be compared with the tensor ``expected`` (None: it can)."""
    if not isinstance(actual, torch.Tensor):
        return f"expected a torch.Tensor, got {type(actual).__name__}"
    if tuple(actual.shape) != tuple(expected.shape):
        return f"expected shape {tuple(expected.shape)}, got {tuple(actual.shape)}"
    if actual.dtype != expected.dtype:
        return f"expected dtype {expected.dtype}, got {actual.dtype}"
    return None


def _tensor_line(expected: torch.Tensor, actual: Any, right: bool) -> str:
    """What a check line says about a tensor compared for equality."""
    problem = _tensor_problem(expected, actual)
    if problem is not None:
        return problem
    what = f"shape {tuple(expected.shape)}, {str(expected.dtype).replace('torch.', '')}"
    if expected.numel() <= 8:  # small enough to show
        values = f"expected {expected.flatten().tolist()}, got {actual.flatten().tolist()}"
        return f"{values} ({what})"
    if right:
        return f"all {expected.numel():,} elements equal ({what})"
    differ = (expected != actual).flatten()
    first = int(differ.nonzero()[0])
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(first), expected.shape))
    return (f"{int(differ.sum()):,} of {expected.numel():,} elements differ ({what}); first at "
            f"{index}: expected {expected.flatten()[first].item()!r}, got {actual.flatten()[first].item()!r}")


def _same(expected: Any, actual: Any) -> bool:
    if isinstance(expected, torch.Tensor):
        return _tensor_problem(expected, actual) is None and torch.equal(expected, actual)
    if isinstance(expected, tuple):
        return (isinstance(actual, (tuple, list)) and len(actual) == len(expected)
                and all(_same(e, a) for e, a in zip(expected, actual)))
    if isinstance(actual, torch.Tensor):
        return False  # a tensor where a number (or None) was expected: say so, never broadcast
    try:
        return bool(expected == actual)
    except Exception:  # a comparison that itself fails is a mismatch, not a crash
        return False


class Checks:
    """The cases of one check cell: each is printed as it is checked, and leaving the ``with``
    block raises AssertionError naming the wrong ones (the first in full).

    Exceptions raised inside the block (a stub's NotImplementedError, a crash in the student's
    code) propagate unchanged, after the cases checked so far have been printed.
    """

    def __init__(self, title: str):
        self.title = title
        self.passed: list[str] = []
        self.failed: list[tuple[str, str]] = []  # (case, what was wrong)

    def __enter__(self) -> "Checks":
        print(self.title)
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        if kind is not None:
            return False
        total = len(self.passed) + len(self.failed)
        if total == 0:
            raise AssertionError(f"{self.title}: no case was checked (the check itself is broken)")
        if self.failed:
            case, why = self.failed[0]
            print(f"{len(self.failed)} of {total} cases wrong.")
            raise AssertionError(f"{self.title}: {len(self.failed)} of {total} cases wrong; "
                                 f"first: {case}: {why}")
        print(f"All {total} cases right.")
        return False

    def _record(self, case: str, right: bool, line: str, why: str) -> bool:
        print(f"  {OK if right else WRONG}  {case}: {line}")
        if right:
            self.passed.append(case)
        else:
            self.failed.append((case, why))
        return right

    def equal(self, case: str, expected: Any, actual: Any) -> bool:
        """``actual`` must equal ``expected`` (tensors: same shape, dtype and values)."""
        right = _same(expected, actual)
        if isinstance(expected, torch.Tensor):
            line = _tensor_line(expected, actual, right)
        else:
            line = f"expected {show(expected)}, got {show(actual)}"
        return self._record(case, right, line, line)

    def close(self, case: str, expected: torch.Tensor, actual: Any, *, rtol: float = 1e-5,
              atol: float = 1e-6) -> bool:
        """``actual`` must be a tensor of ``expected``'s shape and dtype, equal within
        ``atol + rtol * |expected|`` element by element (NaN where ``expected`` is NaN)."""
        problem = _tensor_problem(expected, actual)
        if problem is not None:
            return self._record(case, False, problem, problem)
        if expected.numel() == 0:
            return self._record(case, True, "both empty", "")
        e, a = expected.double(), actual.double()
        right = bool(torch.allclose(a, e, rtol=rtol, atol=atol, equal_nan=True))
        diff = (a - e).abs().nan_to_num(nan=math.inf)
        diff[e.isnan() & a.isnan()] = 0
        line = (f"max |expected - actual| = {diff.max().item():.3g} "
                f"(tolerance {atol:g} + {rtol:g} x |expected|), shape {tuple(expected.shape)}")
        if not right:
            worst = int(diff.flatten().argmax())
            index = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), expected.shape))
            line += (f"; largest at {index}: expected {expected.flatten()[worst].item():.6g}, "
                     f"got {actual.flatten()[worst].item():.6g}")
        return self._record(case, right, line, line)

    def that(self, case: str, condition: bool, detail: str = "") -> bool:
        """A yes/no property (``detail`` says what was seen)."""
        right = bool(condition)
        return self._record(case, right, detail or ("yes" if right else "no"), detail or "not true")


def compare_prediction(what: str, predicted: Any, measured: float, unit: str = "") -> str:
    """Print (and return) a student's prediction beside the measured value and how far it was.

    "Predict, then see": a lab opens an exercise with a prediction cell (``prediction_1 = None``
    for the student to replace) and its check cell calls this before checking the code. It never
    fails: a missing or non-numeric prediction is said as such; a prediction is not graded.
    """
    unit = f" {unit}" if unit else ""
    seen = f"measured: {show(measured)}{unit}"
    if predicted is None:
        line = f"Prediction for {what}: none typed (replace None in the prediction cell); {seen}."
    elif isinstance(predicted, bool) or not isinstance(predicted, numbers.Real):
        line = f"Prediction for {what}: {show(predicted)} is not a number; {seen}."
    else:
        off = predicted - measured
        if off == 0:
            how = "exactly right"
        elif measured == 0:
            how = f"off by {show(off)}{unit}"
        else:
            how = f"off by {show(off)}{unit}, {off / abs(measured):+.0%} of the measured value"
        line = f"Prediction for {what}: {show(predicted)}{unit}; {seen}; {how}."
    print(line)
    return line


def run_kernel(kernel, grid, *args, **kwargs) -> None:
    """``kernel[grid](*args, **kwargs)``; a stub kernel's ``raise NotImplementedError(...)``
    comes out as that NotImplementedError.

    Triton's interpreter wraps any exception raised in a kernel in an ``InterpreterError``, and
    the compiler (on a GPU) rejects a ``raise`` statement with a ``CompilationError``; both
    would hide the hint of an unfilled exercise.
    """
    try:
        kernel[grid](*args, **kwargs)
    except Exception as error:
        cause = error.__cause__
        if isinstance(cause, NotImplementedError):
            raise cause from None
        if "NotImplementedError" in str(error) and type(error).__name__ == "CompilationError":
            raise NotImplementedError(
                f"the kernel {getattr(kernel, '__name__', kernel)} is still a stub: write its "
                f"body (Triton cannot compile the stub's raise statement)") from None
        raise


__all__ = ["Checks", "compare_prediction", "run_kernel", "show"]
