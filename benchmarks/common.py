"""What every benchmark script records: timings, the machine, the command (benchmarks/*.py).

Scripts run as ``python benchmarks/<name>.py`` from the repository root, so this folder is on
``sys.path`` and they ``import common``.
"""

from __future__ import annotations

import gc
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time

import torch


def timed(fn) -> float:
    """Milliseconds of one call of ``fn``, with the garbage collector off (as ``timeit`` does)."""
    gc.disable()
    try:
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1000
    finally:
        gc.enable()


def stats(samples) -> dict:
    """Median, 95th percentile, maximum and count of ``samples``."""
    ordered = sorted(samples)
    return {"median": statistics.median(ordered), "p95": ordered[int(0.95 * (len(ordered) - 1))],
            "max": ordered[-1], "n": len(ordered)}


def machine() -> dict:
    """The CPU machine and versions a result was measured with."""
    return {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads()}


def command(argv=None) -> str:
    """The command line that ran this script (``argv``: the arguments given to ``main``)."""
    args = sys.argv[1:] if argv is None else list(argv)
    return "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *args])


def driver_version() -> str:
    """The NVIDIA driver's version as ``nvidia-smi`` reports it, or "unknown" (no tool, no GPU)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    lines = out.stdout.strip().splitlines()
    return lines[0] if out.returncode == 0 and lines else "unknown"


def host() -> str:
    return platform.node() or "host"


def today() -> str:
    return time.strftime("%Y-%m-%d")
