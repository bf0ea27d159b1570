"""The real peak memory of a training step, measured (chapter 5, "Theory meets the allocator").

:func:`ondevice.memory.measure` counts what autograd keeps. What a device must hold is the
allocator's peak over a whole step: ``zero_grad``, forward, backward and the optimizer's update,
with the parameters, the optimizer state, the gradients, the kept activations and every
temporary (activation gradients, workspaces of the backend, the optimizer's scratch).
:func:`measure_step` runs the step and reports that peak:

- on CPU through the counting allocator (:mod:`.allocator`): every allocation and free of the
  measured step, in order, deterministic to the byte; the bytes alive before the step
  (parameters and buffers, optimizer state, the input batch) are added from Python;
- on CUDA through ``torch.cuda.max_memory_allocated`` and the allocator's recorded history
  (``torch.cuda.memory._record_memory_history``) for the timeline.

Each allocation of the measured step is given a category: ``gradients`` (alive at the end as a
parameter's ``.grad``), ``saved activations`` (a storage autograd saved for backward, seen
through saved-tensor hooks that change nothing), ``optimizer state`` (alive at the end as a
state tensor of the optimizer) or ``temporaries`` (everything else); what was alive before the
step is ``parameters`` (parameters and buffers), ``optimizer state`` or ``other`` (the input batch).
``measure_step(..., budget=bytes)`` runs the steps with every allocation counted against a hard
budget (CPU): an allocation that does not fit raises :class:`StepOutOfMemory`, naming the layer
that asked and the bytes, as an out-of-memory device fails.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .allocator import Recording
from .step_model import CATEGORIES

PHASES = ("forward", "backward", "optimizer")


class StepOutOfMemory(MemoryError):
    """A training step needed more memory than the budget: ``layer`` is where (``"forward:
    blocks.3.expand.conv"``, ``"backward: ..."``, ``"optimizer step"``), ``requested`` the bytes
    of the allocation that failed, ``in_use`` the bytes held at that moment."""

    def __init__(self, layer: str, requested: int, in_use: int, budget: int):
        self.layer, self.requested, self.in_use, self.budget = layer, requested, in_use, budget
        super().__init__(f"out of memory at {layer}: an allocation of {requested:,} B with {in_use:,} B in use "
                         f"does not fit the budget of {budget:,} B")


@dataclass(frozen=True)
class StepMeasurement:
    """The measured step. ``peak``: bytes alive at the step's peak; ``at_peak``: those bytes by
    category; ``phase`` and ``layer``: where the peak fell; ``timeline``: (event index, bytes
    alive by category) sampled over the step; ``phases``: the event index where each phase starts."""

    device: str
    peak: int
    at_peak: dict
    phase: str
    layer: str
    baseline: dict = field(repr=False)
    timeline: tuple = field(repr=False, default=())
    phases: dict = field(repr=False, default_factory=dict)
    events: int = 0
    largest: tuple = field(repr=False, default=())  # (bytes, category, where it was allocated) alive at the peak

    def mb(self) -> float:
        return self.peak / 1e6


def _storages(tensors) -> dict[int, int]:
    """{storage address: bytes} of the distinct storages of ``tensors``."""
    out = {}
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.numel():
            storage = t.untyped_storage()
            out[storage.data_ptr()] = storage.nbytes()
    return out


def _optimizer_tensors(optimizer) -> list[torch.Tensor]:
    return [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]


class _Labels:
    """Which layer is running, as positions in the allocation log: forward pre-hooks name each
    module; a pre-hook on each module output's autograd node names its backward."""

    def __init__(self, model: nn.Module, position):
        self.names = {m: n or "(model)" for n, m in model.named_modules()}
        self.position, self.marks = position, []

    def mark(self, label: str) -> None:
        self.marks.append((self.position(), label))

    def __enter__(self):
        def pre(module, args):
            if module in self.names:
                self.mark(f"forward: {self.names[module]}")

        named = set()  # autograd nodes already named: by the innermost module (a container's output is its last child's)

        def post(module, args, output):
            if module in self.names and isinstance(output, torch.Tensor) and output.grad_fn is not None:
                if id(output.grad_fn) in named:
                    return
                named.add(id(output.grad_fn))
                name = self.names[module]
                output.grad_fn.register_prehook(lambda grads: self.mark(f"backward: {name}"))

        self.handles = [nn.modules.module.register_module_forward_pre_hook(pre),
                        nn.modules.module.register_module_forward_hook(post)]
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()

    def at(self, index: int) -> str:
        label = "before the forward pass"
        for position, name in self.marks:
            if position > index:
                break
            label = name
        return label


def _check(model, x, target, optimizer, steps, budget):
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for name, value in (("x", x), ("target", target)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an int >= 2 (warm-up steps, then the measured one), got {steps!r}")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0):
        raise ValueError(f"budget must be a number of bytes > 0 or None, got {budget!r}")
    if budget is not None and x.is_cuda:
        raise ValueError("budget= runs on the CPU's counting allocator; on CUDA limit the device with "
                         "torch.cuda.set_per_process_memory_fraction")


def _baseline(model, x, target, optimizer) -> dict[str, dict[int, int]]:
    """Storages alive before the step, by category (each storage once)."""
    params = _storages([*model.parameters(), *model.buffers()])
    state = {k: v for k, v in _storages(_optimizer_tensors(optimizer)).items() if k not in params}
    other = {k: v for k, v in _storages([x, target]).items() if k not in params and k not in state}
    return {"parameters": params, "optimizer state": state, "other": other}


def measure_step(model: nn.Module, x: torch.Tensor, target: torch.Tensor, optimizer: torch.optim.Optimizer, *,
                 loss_fn=F.cross_entropy, steps: int = 3, budget: int | None = None) -> StepMeasurement:
    """Run ``steps`` training steps (``zero_grad(set_to_none=True)``, forward, ``loss_fn``,
    backward, ``optimizer.step()``) and measure the last, a steady-state step: the optimizer
    state exists, the caches are warm (module docstring). ``budget`` (CPU): bytes every step
    must fit in, parameters included; :class:`StepOutOfMemory` when one does not."""
    _check(model, x, target, optimizer, steps, budget)
    if x.is_cuda:
        return _measure_cuda(model, x, target, optimizer, loss_fn, steps)
    for i in range(steps):
        optimizer.zero_grad(set_to_none=True)
        gc.collect()
        result = _record_step(model, x, target, optimizer, loss_fn, budget)
    return result


def _record_step(model, x, target, optimizer, loss_fn, budget) -> StepMeasurement:
    base = _baseline(model, x, target, optimizer)
    base_bytes = sum(sum(v.values()) for v in base.values())
    if budget is not None and base_bytes > budget:
        raise StepOutOfMemory("before the step (parameters, optimizer state and input)", 0, base_bytes, int(budget))
    known = set().union(*base.values())
    saved: list[tuple[int, int]] = []  # (log position, storage address) of each saved storage
    phases = {}
    with Recording(None if budget is None else int(budget) - base_bytes) as log:
        def pack(t):
            address = t.untyped_storage().data_ptr()
            if address not in known:
                saved.append((log.index(), address))
            return t.detach()

        labels = _Labels(model, log.index)
        try:
            with labels:
                phases["forward"] = log.index()
                with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                    loss = loss_fn(model(x), target)
                phases["backward"] = log.index()
                loss.backward()
                del loss
                phases["optimizer"] = log.index()
                labels.mark("optimizer step")
                optimizer.step()
        except torch.OutOfMemoryError as error:
            raise _out_of_memory(error, labels.at(log.index()), base_bytes, int(budget)) from None
    end = {"gradients": _storages([p.grad for p in model.parameters() if p.grad is not None]),
           "optimizer state": _storages(_optimizer_tensors(optimizer))}
    return _replay("cpu", log.addresses, log.bytes, base, end, saved, phases, labels)


def _out_of_memory(error, layer: str, base_bytes: int, budget: int) -> StepOutOfMemory:
    import re

    numbers = re.search(r"allocate (\d+) bytes with (\d+) of", str(error))
    requested, used = (int(numbers.group(1)), int(numbers.group(2))) if numbers else (0, 0)
    return StepOutOfMemory(layer, requested, base_bytes + used, budget)


def _replay(device, addresses, sizes, base, end, saved, phases, labels) -> StepMeasurement:
    """Bytes alive by category at every event of the log, the peak, and what was alive at it."""
    n = len(sizes)
    category = np.full(n, CATEGORIES.index("temporaries"), np.int8)
    opened: dict[int, int] = {}  # address -> index of its allocation, while alive
    allocations = []  # (allocation index, free index or n)
    for i in range(n):
        if sizes[i] > 0:
            opened[int(addresses[i])] = i
        else:
            start = opened.pop(int(addresses[i]), None)
            if start is not None:
                allocations.append((start, i))
    allocations += [(start, n) for start in opened.values()]
    by_address: dict[int, list[tuple[int, int]]] = {}
    for start, stop in allocations:
        by_address.setdefault(int(addresses[start]), []).append((start, stop))
    for position, address in saved:
        for start, stop in by_address.get(address, ()):
            if start < position <= stop:
                category[start] = CATEGORIES.index("saved activations")
    for name in ("gradients", "optimizer state"):
        for address in end[name]:
            for start, stop in by_address.get(address, ()):
                if stop == n:
                    category[start] = CATEGORIES.index(name)
    # each event's bytes go to the category of its allocation
    event_category = category.copy()
    owner = {}
    for start, stop in allocations:
        if stop < n:
            owner[stop] = start
    for stop, start in owner.items():
        event_category[stop] = category[start]
    columns = np.zeros((len(CATEGORIES), n + 1), np.int64)
    for c in range(len(CATEGORIES)):
        columns[c, 1:] = np.cumsum(np.where(event_category == c, sizes, 0))
    for name, storages in base.items():
        columns[CATEGORIES.index(name)] += sum(storages.values())
    totals = columns.sum(axis=0)
    peak_index = int(np.argmax(totals))  # position in the log: events before it have happened
    at_peak = {c: int(columns[k, peak_index]) for k, c in enumerate(CATEGORIES)}
    phase = next((p for p in reversed(PHASES) if peak_index > phases.get(p, n + 1)), "forward")
    alive = sorted(((int(sizes[start]), CATEGORIES[category[start]], labels.at(start))
                    for start, stop in allocations if start < peak_index <= stop), reverse=True)
    return StepMeasurement(device, int(totals[peak_index]), at_peak, phase, labels.at(max(peak_index - 1, 0)),
                           {k: sum(v.values()) for k, v in base.items()}, _sample(columns, peak_index),
                           dict(phases), n, tuple(alive[:12]))


def _sample(columns: np.ndarray, peak_index: int, points: int = 1500) -> tuple:
    """(event indices, {category: bytes}) at up to ``points`` positions, the peak among them."""
    n = columns.shape[1]
    keep = np.unique(np.concatenate([np.linspace(0, n - 1, min(points, n)).astype(np.int64), [peak_index]]))
    return (keep.tolist(), {c: columns[k, keep].tolist() for k, c in enumerate(CATEGORIES)})


def _measure_cuda(model, x, target, optimizer, loss_fn, steps) -> StepMeasurement:
    """CUDA: the allocator's own peak and history; categories as on CPU."""
    for _ in range(steps - 1):
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), target).backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    gc.collect()
    torch.cuda.synchronize(x.device)
    base = _baseline(model, x, target, optimizer)
    known = set().union(*base.values())
    torch.cuda.reset_peak_memory_stats(x.device)
    start = torch.cuda.memory_allocated(x.device)
    torch.cuda.memory._record_memory_history(max_entries=1_000_000)
    saved: set[int] = set()
    phases = {}
    labels = _Labels(model, lambda: 0)  # positions in the CUDA history are not known per layer
    try:
        def pack(t):
            if t.untyped_storage().data_ptr() not in known:
                saved.add(t.untyped_storage().data_ptr())
            return t.detach()

        phases["forward"] = 0
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = loss_fn(model(x), target)
        torch.cuda.synchronize(x.device)
        phases["backward"] = len(_cuda_trace(x.device))
        loss.backward()
        del loss
        torch.cuda.synchronize(x.device)
        phases["optimizer"] = len(_cuda_trace(x.device))
        optimizer.step()
        torch.cuda.synchronize(x.device)
        events = _cuda_trace(x.device)
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)
    saved = [(phases["backward"], address) for address in saved]  # alive at the end of the forward pass
    addresses = np.array([e["addr"] for e in events], np.int64)
    sizes = np.array([e["size"] if e["action"] == "alloc" else -e["size"] for e in events], np.int64)
    end = {"gradients": _storages([p.grad for p in model.parameters() if p.grad is not None]),
           "optimizer state": _storages(_optimizer_tensors(optimizer))}
    base["other"] = {**base["other"], -1: start - sum(sum(v.values()) for v in base.values())}  # the rest allocated
    result = _replay("cuda", addresses, sizes, base, end, saved, phases, labels)
    peak = torch.cuda.max_memory_allocated(x.device)
    return StepMeasurement("cuda", peak, result.at_peak, result.phase, "(not recorded on CUDA)", result.baseline,
                           result.timeline, result.phases, result.events)


def _cuda_trace(device) -> list:
    """The allocations and frees (``alloc`` / ``free_completed``) of the recorded history."""
    snapshot = torch.cuda.memory._snapshot(device)
    trace = snapshot["device_traces"][torch.device(device).index or 0]
    return [e for e in trace if e["action"] in ("alloc", "free_completed")]


__all__ = ["CATEGORIES", "PHASES", "StepMeasurement", "StepOutOfMemory", "measure_step"]
