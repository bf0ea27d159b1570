"""Measure what autograd keeps for backward (the primer, "How memory is measured",
``book/00_primer/measuring_memory``).

The bytes a training step must keep between forward and backward are the tensors that
autograd *saves*. :class:`SavedTensorLog` sees each of them through
``torch.autograd.graph.saved_tensors_hooks`` and counts every storage once: when ReLU saves
its output and the next Linear saves that same tensor as its input, the memory is held once.
Storages of the model's parameters and buffers are not activations (they are in memory
anyway) and are left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch


@dataclass(frozen=True)
class SavedTensor:
    """One storage that autograd saved for backward (the first tensor seen on it)."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    nbytes: int  # bytes of the whole storage, which is what stays allocated


def _storage_key(t: torch.Tensor) -> tuple[str, int]:
    return (str(t.device), t.untyped_storage().data_ptr())


class SavedTensorLog:
    """Context manager that records every storage saved for backward inside it, once.

    ``exclude``: tensors whose storages are not counted (parameters, buffers).

    >>> with SavedTensorLog() as log:
    ...     y = torch.relu(torch.ones(4, requires_grad=True))
    >>> log.nbytes  # ReLU saved its 4-element float32 output
    16
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()):
        self._excluded = {_storage_key(t) for t in exclude}
        self._seen: set[tuple[str, int]] = set()
        self.saved: list[SavedTensor] = []
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        key = _storage_key(t)
        if key not in self._excluded and key not in self._seen:
            self._seen.add(key)
            self.saved.append(SavedTensor(tuple(t.shape), t.dtype, t.untyped_storage().nbytes()))
        # A detached alias (same storage, no autograd history): returning ``t`` itself would make
        # the graph hold a Python reference to a tensor whose grad_fn holds the graph, a reference
        # cycle that only the garbage collector can free (hundreds of MB per call at 224 px).
        return t.detach()

    @staticmethod
    def _unpack(t: torch.Tensor) -> torch.Tensor:
        return t

    def __enter__(self) -> "SavedTensorLog":
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)

    @property
    def nbytes(self) -> int:
        """Total bytes of the distinct storages saved for backward."""
        return sum(s.nbytes for s in self.saved)


@dataclass(frozen=True)
class Measurement:
    """Result of :func:`measure`: bytes autograd saved, and on CUDA the allocator's peak."""

    saved_activations: int
    saved: list[SavedTensor] = field(repr=False)
    cuda_peak: int | None = None  # peak bytes allocated during one forward + backward


def measure(model: torch.nn.Module, inputs: torch.Tensor) -> Measurement:
    """Run ``model(inputs)`` and count the bytes autograd saves for backward.

    Parameters and buffers of ``model`` are excluded (they are not activations). On CUDA the
    step is completed with a backward pass of ``output.sum()`` and the allocator's peak above
    the starting point is reported as ``cuda_peak``; parameter gradients are freed afterwards.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}")
    held = list(model.parameters()) + list(model.buffers())
    cuda = inputs.is_cuda
    if cuda:
        torch.cuda.synchronize(inputs.device)
        torch.cuda.reset_peak_memory_stats(inputs.device)
        start = torch.cuda.memory_allocated(inputs.device)
    with SavedTensorLog(exclude=held) as log:
        out = model(inputs)
    peak = None
    if cuda:
        if out.requires_grad:
            out.sum().backward()
        torch.cuda.synchronize(inputs.device)
        peak = torch.cuda.max_memory_allocated(inputs.device) - start
        model.zero_grad(set_to_none=True)
    return Measurement(saved_activations=log.nbytes, saved=log.saved, cuda_peak=peak)
