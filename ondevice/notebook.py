"""The first cell of every chapter and lab (design.md §6, "Notebook conventions").

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
