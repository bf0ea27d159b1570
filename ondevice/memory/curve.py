"""Training memory as a function of the batch size, and the modelled step moment by moment
(chapter 1 for the curve and its sliders; chapter 5, "Theory meets the allocator", for the
timeline). Both are built once from the trace and the rules of :mod:`.estimate`; afterwards a
batch size is arithmetic."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .estimate import check, paper_replay, paper_at_peak, peak_model, prepare
from .report import MemoryReport
from .step_model import CATEGORIES


@dataclass(frozen=True)
class MemoryCurve:
    """Training memory of one configuration as a function of the batch size.

    Built once by :func:`memory_curve` (a trace, the profile's rules and the step's moments);
    afterwards :meth:`report`, :meth:`total` and :meth:`largest_batch` are arithmetic, fast enough
    for a slider.
    """

    profile: str
    sample_shape: tuple[int, ...]
    params: int
    param_grads: int
    optimizer_state: int
    _step: object = field(repr=False)  # batch -> (saved activations, total, at_peak, where)

    def peak(self, batch: int) -> int:
        _, _, at_peak, _ = self._step(batch)
        return at_peak["saved activations"] + at_peak["temporaries"]

    def report(self, batch: int) -> MemoryReport:
        """``estimate(...)`` at this batch size, without the per-layer table."""
        saved, total, at_peak, where = self._step(batch)
        return MemoryReport(self.profile, (batch, *self.sample_shape), self.params, self.param_grads,
                            self.optimizer_state, saved, at_peak["saved activations"] + at_peak["temporaries"],
                            total, [], at_peak, where)

    def total(self, batch: int) -> int:
        """Equals ``estimate(...).total`` at this batch size."""
        return self._step(batch)[1]

    def largest_batch(self, budget: float, max_batch: int = 1024) -> int:
        """The largest batch size <= ``max_batch`` whose total fits ``budget`` bytes (0: none)."""
        if self.total(1) > budget:
            return 0
        lo, hi = 1, max_batch  # total grows with the batch: bisect for the last fit
        if self.total(hi) <= budget:
            return hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if self.total(mid) <= budget else (lo, mid)
        return lo


def memory_curve(model: nn.Module, sample_shape, *, profile: str = "pytorch", backward: str = "exact",
                 frozen_param_bits: int = 32, optimizer: str = "sgd",
                 dtype: torch.dtype = torch.float32, device: str | None = None) -> MemoryCurve:
    """Memory of ``model`` on inputs of ``sample_shape`` (C, H, W) as a function of the batch
    (arguments as :func:`estimate`)."""
    if isinstance(sample_shape, (str, bytes)) or not isinstance(sample_shape, (tuple, list, torch.Size)):
        raise TypeError(f"sample_shape must be a tuple (channels, height, width), got {sample_shape!r}")
    shape = check(model, (1, *tuple(sample_shape)), profile, frozen_param_bits, optimizer, backward)
    root, parameters, (params, grads, opt) = prepare(model, shape, dtype, False, frozen_param_bits, optimizer,
                                                     profile, backward)
    if profile == "paper":
        _, kept, peak = paper_replay(root)

        def paper_step(batch: int):
            at_peak = paper_at_peak(params, kept, peak, batch)
            return int(kept * batch), int(peak * batch) + params, at_peak, "TinyTL's forward replay"

        return MemoryCurve(profile, shape[1:], params, grads, opt, paper_step)  # rounded as estimate() rounds
    model_of_step = peak_model(model, root, parameters, (params, opt), shape, dtype, profile, optimizer, device)

    def step(batch: int):
        total, at_peak, where = model_of_step.peak(batch)
        return model_of_step.saved(batch), total, at_peak, where

    return MemoryCurve(profile, shape[1:], params, grads, opt, step)


def step_timeline(model: nn.Module, input_shape, *, profile: str = "pytorch", backward: str = "exact",
                  frozen_param_bits: int = 32, optimizer: str = "sgd", dtype: torch.dtype = torch.float32,
                  device: str | None = None) -> list[tuple[str, str, dict]]:
    """The modelled step moment by moment: (phase, layer, bytes alive by category) in the order a
    step runs them (forward, loss, backward, optimizer), arguments as :func:`estimate`; the
    largest moment is ``estimate(...).total`` (``pytorch`` and ``masked`` profiles)."""
    if profile == "paper":
        raise ValueError("profile must be 'pytorch' or 'masked': the paper profile models no step")
    shape = check(model, input_shape, profile, frozen_param_bits, optimizer, backward)
    root, parameters, (params, grads, opt) = prepare(model, shape, dtype, False, frozen_param_bits, optimizer,
                                                     profile, backward)
    model_of_step = peak_model(model, root, parameters, (params, opt), shape, dtype, profile, optimizer, device)
    columns = model_of_step.columns(shape[0])
    return [(m.phase, m.layer, {c: int(columns[i, k]) for k, c in enumerate(CATEGORIES)})
            for i, m in enumerate(model_of_step.moments)]
