"""The first cell of every chapter and lab (README.md: every notebook starts
with ``cfg = setup()``).

``cfg = setup()`` seeds Python, NumPy and torch; switches Triton to its CPU interpreter when
CUDA is absent (before anything imports triton); sets plotly's book renderer; and returns the
sizes to use: ``cfg.fast`` is true when the ``CI`` variable is set or no GPU is present, and
``BOOK_FAST=0`` / ``BOOK_FAST=1`` overrides it.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class NotebookConfig:
    seed: int
    device: str  # "cuda" or "cpu"
    fast: bool  # use small sizes (CI, or no GPU)
    triton_interpreter: bool  # Triton kernels run on CPU tensors in the interpreter

    def size(self, full, fast):
        """``fast`` when :attr:`fast` is set, else ``full``."""
        return fast if self.fast else full


def _flag(name: str) -> bool | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be 1/true/yes/on or 0/false/no/off, got {value!r}")


def setup(seed: int = 0) -> NotebookConfig:
    """Prepare a notebook: seeds, Triton interpreter switch, plotly renderer, sizes."""
    import kernels  # throws the interpreter switch before anything imports triton

    import numpy as np
    import torch

    from .plotting import use_book_renderer

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    use_book_renderer()
    cuda = torch.cuda.is_available()
    fast = _flag("BOOK_FAST")
    if fast is None:
        fast = bool(os.environ.get("CI")) or not cuda
    return NotebookConfig(
        seed=seed,
        device="cuda" if cuda else "cpu",
        fast=fast,
        triton_interpreter=kernels.runtime.interpreter_enabled(),
    )


def show_source(obj, *, start: str | None = None, end: str | None = None, language: str | None = None):
    """Library source as highlighted code (IPython's ``Code``: Pygments, inline styles, renders
    offline in the static book). ``obj``: a function, class or Triton kernel (its ``.fn``), or a
    path to a source file. ``start`` / ``end``: show from the first line containing ``start``
    through the first later line containing ``end`` (both optional)."""
    import inspect
    import textwrap
    from pathlib import Path

    from IPython.display import Code

    if isinstance(obj, (str, Path)):
        path = Path(obj)
        if not path.is_file():
            raise ValueError(f"obj must be a function, a class, a Triton kernel or an existing file, got {obj!r}")
        text = path.read_text()
        language = language or {".cpp": "cpp", ".py": "python", ".js": "javascript"}.get(path.suffix)
    else:
        target = getattr(obj, "fn", obj)  # a Triton JITFunction wraps the Python function
        if not (inspect.isfunction(target) or inspect.isclass(target) or inspect.ismethod(target)):
            raise TypeError(f"obj must be a function, a class, a Triton kernel or a path, got {type(obj).__name__}")
        text = textwrap.dedent(inspect.getsource(target))
        language = language or "python"
    lines = text.splitlines()
    first = 0
    if start is not None:
        found = [i for i, line in enumerate(lines) if start in line]
        if not found:
            raise ValueError(f"start {start!r} is not in the source")
        first = found[0]
    last = len(lines) - 1
    if end is not None:
        found = [i for i, line in enumerate(lines) if end in line and i > first]
        if not found:
            raise ValueError(f"end {end!r} is not in the source after {start!r}")
        last = found[0]
    return Code("\n".join(lines[first:last + 1]), language=language)


def load_benchmark(name: str):
    """``benchmarks/<name>.py`` as a module (``<name>_benchmark``), as ``python benchmarks/<name>.py``
    sees it: its folder is on ``sys.path`` while it loads (the scripts import their ``common``
    module), and it is registered in ``sys.modules`` (dataclasses look their module up there).
    For the pages and tests that call a benchmark's functions or its CPU check mode."""
    import importlib.util
    import sys
    from pathlib import Path

    folder = Path(__file__).resolve().parent.parent / "benchmarks"
    script = folder / f"{name}.py"
    if not script.is_file():
        raise ValueError(f"name must be a script of {folder} (without .py), got {name!r}")
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    sys.path.insert(0, str(folder))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
    return module
