"""The counting CPU allocator behind :func:`ondevice.memory.measure_step` (chapter 5, "Theory meets
the allocator").

``counting_allocator.cpp`` (60 lines of C++) is a c10 CPU allocator: it allocates with c10's own
``alloc_cpu`` (what PyTorch's default CPU allocator uses), and while it records it logs every
allocation and free, in order, with its address and size. Replaying the log gives the exact bytes
alive at every moment of a training step, deterministic to the byte for a given sequence of
allocations. Under a budget it refuses an allocation that would go past it, raising
``torch.OutOfMemoryError`` inside the operator that asked, as a device whose memory is full would.

It is compiled once per source and torch version with the system's C++ compiler (``g++`` or
``$CXX``, under a second; only c10's headers), cached in ``$ONDEVICE_CACHE`` (default
``~/.cache/ondevice``), loaded with ctypes, and installed with c10's ``SetCPUAllocator``.
Memory allocated before installing it, or after uninstalling it, is simply not counted; memory
it handed out is freed correctly whichever allocator is installed by then.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import torch

SOURCE = Path(__file__).with_name("counting_allocator.cpp")
_LIB = None


def _cache_dir() -> Path:
    return Path(os.environ.get("ONDEVICE_CACHE", Path.home() / ".cache" / "ondevice"))


def build() -> Path:
    """The compiled library (compiled now if the cache has none for this source and torch)."""
    torch_dir = Path(torch.__file__).resolve().parent
    key = hashlib.sha256(SOURCE.read_bytes() + torch.__version__.encode()).hexdigest()[:16]
    target = _cache_dir() / f"counting_allocator-{key}.so"
    if target.exists():
        return target
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        raise RuntimeError("measuring a CPU training step needs a C++ compiler to build the counting allocator "
                           "(install g++, or set CXX)")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.tmp")
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    command = [compiler, "-O2", "-std=c++17", "-fPIC", "-shared", f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
               f"-I{torch_dir / 'include'}", str(SOURCE), f"-L{torch_dir / 'lib'}", "-lc10",
               f"-Wl,-rpath,{torch_dir / 'lib'}", "-o", str(partial)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"building the counting allocator failed:\n{' '.join(command)}\n{result.stderr}")
    partial.replace(target)  # atomic: a concurrent build never sees half a file
    return target


def library() -> ctypes.CDLL:
    global _LIB
    if _LIB is None:
        lib = ctypes.CDLL(str(build()))
        lib.ondevice_start.argtypes = [ctypes.c_int64]
        lib.ondevice_event_count.restype = ctypes.c_int64
        lib.ondevice_counted.restype = ctypes.c_int64
        lib.ondevice_installed.restype = ctypes.c_int
        lib.ondevice_events.argtypes = [ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_int64)]
        _LIB = lib
    return _LIB


class Recording:
    """``with Recording(budget=None) as log:`` installs the counting allocator, logs every CPU
    allocation and free inside the block, and leaves c10's previous allocator installed after it.
    ``log.index()`` is the number of events so far (a position in the log); after the block
    ``log.addresses`` and ``log.bytes`` hold the log (+bytes an allocation, -bytes a free).
    ``budget``: bytes that allocations made inside the block may hold at once (None: no limit)."""

    def __init__(self, budget: int | None = None):
        self.budget = -1 if budget is None else int(budget)
        self.addresses = self.bytes = None

    def __enter__(self) -> "Recording":
        self._lib = library()
        self._lib.ondevice_install()
        self._lib.ondevice_start(self.budget)
        return self

    def index(self) -> int:
        return self._lib.ondevice_event_count()

    def __exit__(self, *exc) -> None:
        lib = self._lib
        lib.ondevice_stop()
        n = lib.ondevice_event_count()
        self.addresses, self.bytes = np.zeros(n, np.int64), np.zeros(n, np.int64)
        pointer = ctypes.POINTER(ctypes.c_int64)
        lib.ondevice_events(self.addresses.ctypes.data_as(pointer), self.bytes.ctypes.data_as(pointer))
        lib.ondevice_uninstall()


__all__ = ["Recording", "build", "library"]
