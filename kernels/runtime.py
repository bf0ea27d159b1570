"""Where a kernel runs: Triton on CUDA, Triton's interpreter on CPU, or the plain-torch twin.

Triton reads ``TRITON_INTERPRET`` once, when it is first imported, so the switch must be
thrown before any ``import triton``. Importing :mod:`kernels` calls :func:`configure` first;
notebooks reach it through :func:`ondevice.notebook.setup` (chapter 4, "Triton in an afternoon",
``book/04_kernels/01_triton_primer``: what the interpreter checks and does not check).

Every launcher of the package starts its kernels through :func:`launch`. Inside
:func:`recording_launches` nothing runs: each launch is recorded instead (the kernel, its
arguments and its compile-time constants), which is how :mod:`kernels.compile_check` learns every
variant the launchers pick, from the launchers themselves, without a GPU.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass

import torch

BACKENDS = ("triton", "torch")


def configure() -> bool:
    """Turn on Triton's CPU interpreter when no CUDA device exists; return whether it is on.

    Does nothing when the caller already chose (``TRITON_INTERPRET`` is set) or when Triton
    was already imported (then the choice is fixed and :func:`interpreter_enabled` reports it).
    """
    if "TRITON_INTERPRET" not in os.environ and "triton" not in sys.modules:
        if not torch.cuda.is_available():
            os.environ["TRITON_INTERPRET"] = "1"
    return interpreter_enabled()


def interpreter_enabled() -> bool:
    """True when Triton runs kernels in its Python interpreter (on CPU tensors)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def choose_backend(x: torch.Tensor, backend: str | None) -> str:
    """Pick ``"triton"`` or ``"torch"`` for tensor ``x``.

    Default: Triton for CUDA tensors, Triton's interpreter for CPU tensors when it is on,
    the plain-torch twin otherwise. ``backend`` forces one and must be one of :data:`BACKENDS`.
    """
    if backend is None:
        if x.is_cuda or (x.device.type == "cpu" and interpreter_enabled()):
            return "triton"
        return "torch"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
    if backend == "triton" and not x.is_cuda and not _RECORDS:
        if x.device.type != "cpu" or not interpreter_enabled():
            raise RuntimeError(
                "backend='triton' needs a CUDA tensor, or a CPU tensor with TRITON_INTERPRET=1 "
                "set before triton was first imported (import kernels first, or call "
                "ondevice.notebook.setup())"
            )
    return backend


@dataclass(frozen=True)
class Launch:
    """One kernel launch as a launcher asked for it (:func:`launch`)."""

    kernel: object  # the @triton.jit function
    grid: tuple
    args: tuple  # the runtime arguments, in the kernel's order
    constexprs: dict  # the compile-time constants (tl.constexpr arguments)
    num_warps: int


_RECORDS: list[list[Launch]] = []


def launch(kernel, grid, *args, num_warps: int, **constexprs) -> None:
    """``kernel[grid](*args, **constexprs, num_warps=num_warps)``, or, inside
    :func:`recording_launches`, only a record of it."""
    if _RECORDS:
        _RECORDS[-1].append(Launch(kernel, tuple(grid), args, constexprs, num_warps))
        return
    kernel[grid](*args, **constexprs, num_warps=num_warps)


@contextmanager
def recording_launches():
    """Within the block, :func:`launch` records instead of running (the outputs stay
    uninitialised) and ``backend="triton"`` is accepted for CPU tensors without the interpreter.
    Yields the list of :class:`Launch` records."""
    records: list[Launch] = []
    _RECORDS.append(records)
    try:
        yield records
    finally:
        _RECORDS.pop()


def device_for_tests() -> torch.device:
    """The device the kernel tests put their tensors on: ``KERNELS_TEST_DEVICE`` (default
    ``cpu``, where Triton runs in its interpreter); ``benchmarks/gpu_suite.py`` sets ``cuda``."""
    return torch.device(os.environ.get("KERNELS_TEST_DEVICE", "cpu"))
