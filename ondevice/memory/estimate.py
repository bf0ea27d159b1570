"""The memory estimate: training memory of a model, derived layer by layer (chapter 1).

``estimate(model, input_shape)`` traces the model's shapes (:mod:`.trace`, batch 1), applies a
profile's per-layer rules, and adds parameters, gradients and optimizer state:

- ``profile="pytorch"``: what stock PyTorch autograd keeps (:mod:`.rules`); its
  ``saved_activations`` equals :func:`ondevice.memory.measure` to the byte.
- ``profile="paper"``: TinyTL's profiler rules (:mod:`.paper`), to reproduce the paper's tables.
- ``profile="masked"``: what the model keeps once :func:`ondevice.kernelize` has replaced its
  layers by their lean twins (1-bit activation masks, frozen layers that keep nothing; chapter 4),
  in its two modes (``backward="exact"`` or ``"detached"``): the ``pytorch`` rules applied to the
  kernelized model, which the estimate builds on the meta device (no data, no copy of the
  weights). It equals :func:`ondevice.memory.measure` of ``kernelize(model, backward=...)``.

Which parameters train is read from ``requires_grad`` and which layers are in training mode
from ``module.training``, so any transfer method is covered.

Parameters: trainable ones at their dtype; frozen conv and linear weights at
``frozen_param_bits``, below 16 bits with one float32 scale per output channel (as
``kernelize(frozen_bits=8)`` stores them); other frozen parameters (biases, norm scales and
shifts) at their dtype. The ``paper`` profile charges every frozen parameter at
``frozen_param_bits``, as TinyTL's profiler does.

Peak (``pytorch`` profile) is a model of the activation memory over one step, in call order:
during the forward pass, before each leaf layer, what is kept so far + the leaf's input and
output + the inputs that residual blocks hold for their add; during the backward pass, at each
leaf in reverse, what is still kept + the gradients of its output and input. Allocator rounding
and workspaces are not modelled (chapter 5 compares with CUDA measurements).
"""

from __future__ import annotations

import operator
import math
import weakref
from dataclasses import dataclass, field

import torch
from torch import nn

from ..blocks import InvertedResidual
from ..models.resnet import ResidualBlock
from . import paper
from . import step_model
from .rules import MEASURED, MODES, Context, Stored, rule_for
from .step_model import StepPlan
from .workspace import workspace
from .trace import Call, trace

PROFILES = ("pytorch", "paper", "masked")
OPTIMIZERS = {"sgd": 0, "momentum": 1, "adam": 2}  # state tensors per trainable parameter
FROZEN_BITS = (32, 16, 8, 4)


@dataclass(frozen=True)
class Layer:
    """One row of the per-layer table (``pytorch`` profile)."""

    name: str
    type: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...] | None
    saved: int  # bytes this layer adds to the kept tensors (a shared tensor counts once)
    stored: tuple[str, ...]  # what it keeps and why

    @property
    def how(self) -> str:
        """``"measured, no rule"`` when the fallback measured (part of) what this layer keeps
        (:mod:`.fallback`), else ``"derived"`` (its rule, or the rules of its own calls)."""
        return MEASURED if any(s.startswith(MEASURED) for s in self.stored) else "derived"


@dataclass(frozen=True)
class MemoryReport:
    """Training memory in bytes.

    ``pytorch`` and ``masked`` profiles: ``total`` is the modelled peak of a whole training step
    (:mod:`.step_model`), ``at_peak`` what is alive at it by category (the categories of
    :func:`ondevice.memory.measure_step`; ``total == sum(at_peak.values())``), ``peak_at`` where
    it falls, ``peak`` the activation bytes at it (saved activations + temporaries).
    ``params``, ``param_grads``, ``optimizer_state`` and ``saved_activations`` are the full
    amounts (not all gradients need be alive at the peak). ``paper``: as TinyTL reports it,
    ``total = params + peak``.
    """

    profile: str
    input_shape: tuple[int, ...]
    params: int
    param_grads: int
    optimizer_state: int
    saved_activations: int
    peak: int
    total: int
    layers: list[Layer] = field(repr=False, default_factory=list)
    at_peak: dict = field(default_factory=dict)
    peak_at: str = ""

    def mb(self, name: str = "total") -> float:
        """A field in MB (10^6 bytes, as the papers report)."""
        return getattr(self, name) / 1e6

    def summary(self) -> str:
        parts = ["params", "param_grads", "optimizer_state", "saved_activations", "peak", "total"]
        return f"{self.profile} profile, input {self.input_shape}: " + ", ".join(
            f"{p} {self.mb(p):.2f} MB" for p in parts)

    def table(self, top: int | None = None) -> str:
        """The per-layer table as text (the ``top`` layers that keep the most, if given)."""
        rows = sorted(self.layers, key=lambda l: -l.saved)[:top] if top else self.layers
        lines = [f"{'layer':40s} {'type':18s} {'input':>20s} {'kept':>11s}  what and why"]
        for l in rows:
            lines.append(f"{l.name[:40]:40s} {l.type[:18]:18s} {str(l.input_shape):>20s} "
                         f"{l.saved:>11,d}  {'; '.join(l.stored)}")
        return "\n".join(lines)


def _parameters(modules: list[nn.Module]) -> tuple[list[nn.Parameter], set[int]]:
    """The distinct parameters of ``modules``, and the ids of those that are conv / linear weights
    (one walk of the module tree serves everything)."""
    seen: dict[int, nn.Parameter] = {}
    weights: set[int] = set()
    for m in modules:
        for name, p in m._parameters.items():
            if p is not None:
                seen.setdefault(id(p), p)
                if name == "weight" and isinstance(m, (nn.Conv2d, nn.Linear)):
                    weights.add(id(p))
    return list(seen.values()), weights


def _frozen_bytes(p: nn.Parameter, is_weight: bool, bits: int, profile: str) -> int:
    """Bytes of a frozen parameter stored at ``bits`` (module docstring)."""
    if profile == "paper":  # TinyTL's profiler: every frozen value at `bits`
        return p.numel() * bits // 8
    if not (is_weight and p.is_floating_point() and bits < 8 * p.element_size()):
        return p.numel() * p.element_size()  # biases, norm parameters, weights already stored small
    scales = 4 * p.shape[0] if bits < 16 else 0  # one float32 scale per output channel
    return -(-p.numel() * bits // 8) + scales


def _param_bytes(params: list[nn.Parameter], weights: set[int], frozen_bits: int, optimizer: str,
                 profile: str) -> tuple[int, int, int]:
    trainable = frozen = tensors = 0
    for p in params:
        if p.requires_grad:
            trainable += p.numel() * p.element_size()
            tensors += 1
        else:
            frozen += _frozen_bytes(p, id(p) in weights, frozen_bits, profile)
    counters = STEP_COUNTER * tensors if optimizer == "adam" and profile != "paper" else 0
    return trainable + frozen, trainable, trainable * OPTIMIZERS[optimizer] + counters


STEP_COUNTER = 4  # bytes: torch's Adam keeps a float32 step count per parameter tensor


def _step_base(model: nn.Module, params: int, opt: int, shape, dtype: torch.dtype) -> tuple[dict, dict]:
    """What is alive throughout a step, by category: (fixed bytes, bytes per sample)."""
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    sample = math.prod(shape[1:]) * dtype.itemsize + 8  # an image and its int64 label
    return {"parameters": params + buffers, "optimizer state": opt}, {"other": sample}


def _optimizer_temporaries(parameters: list[nn.Parameter], optimizer: str) -> int:
    """The update's scratch: torch's Adam (single-tensor, on CPU) makes two temporaries the size of
    the parameter it updates; SGD and momentum update in place."""
    if optimizer != "adam":
        return 0
    return 2 * max((p.numel() * p.element_size() for p in parameters if p.requires_grad), default=0)


_TRACES: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def _cached_trace(model: nn.Module, modules: list[nn.Module], params: list[nn.Parameter],
                  shape: tuple[int, ...], dtype: torch.dtype, input_requires_grad: bool,
                  kernelized: tuple | None) -> Call:
    """The batch-1 trace (of ``kernelize(model, backward=..., frozen_bits=...)`` when ``kernelized``
    gives (backward, frozen_bits));
    re-traced when the shape, the modules, the trainable set or a module's mode changes."""
    state = (kernelized, tuple(map(id, modules)), tuple(m.training for m in modules),
             tuple(p.requires_grad for p in params))
    key = (shape, dtype, input_requires_grad, state)
    cache = _TRACES.setdefault(model, {})
    if key not in cache:
        if len(cache) > 512:  # an explorer visits methods x resolutions: keep them all
            cache.clear()
        target = model
        if kernelized is not None:  # one kernelized copy serves every input shape
            copies = cache.setdefault("kernelized", {})
            if state not in copies:
                copies[state] = kernelized_on_meta(model, *kernelized)
            target = copies[state]
        cache[key] = trace(target, (1, *shape), dtype, input_requires_grad)
    return cache[key]


def kernelized_on_meta(model: nn.Module, backward: str, frozen_bits: int = 32) -> nn.Module:
    """``kernelize(copy of model, backward=backward, frozen_bits=...)`` with every parameter and
    buffer on the meta device: the structure, modes and trainable set of the kernelized model, no
    data. Storages that kernelize does not offer (16 and 4 bits) are modelled at 32 bits (only the
    parameter bytes change with them)."""
    from ..lean.kernelize import meta_copy, kernelize_modules

    copy = meta_copy(model)
    kernelize_modules(copy, backward, frozen_bits if frozen_bits == 8 else 32, "torch")
    return copy


_DIMS = ("batch", "channels", "height", "width")


def _input_shape(input_shape) -> tuple[int, ...]:
    """``input_shape`` as four positive ints (numpy and tensor integers accepted), or a
    TypeError / ValueError naming the argument and what it must be. Sizes that no layer can
    take (a kernel larger than its input, channels that do not match) are found by the trace,
    which names the layer."""
    example = "a shape (batch, channels, height, width) such as (8, 3, 224, 224)"
    if isinstance(input_shape, torch.Tensor) and input_shape.dim() > 0 and input_shape.is_floating_point():
        raise TypeError(f"input_shape must be {example}, got a tensor of values; pass x.shape")
    if input_shape is None or isinstance(input_shape, (str, bytes, dict)) or not hasattr(input_shape, "__iter__"):
        raise TypeError(f"input_shape must be {example}, got {input_shape!r}")
    dims = tuple(input_shape)
    if len(dims) != 4:
        hint = " (add the batch size first: (1, *shape))" if len(dims) == 3 else ""
        raise ValueError(f"input_shape must have 4 dims (batch, channels, height, width), got {len(dims)}: "
                         f"{tuple(dims)!r}{hint}")
    shape = []
    for i, (name, d) in enumerate(zip(_DIMS, dims)):
        if isinstance(d, bool) or type(d).__name__ in ("bool", "bool_"):  # numpy's bool too
            raise TypeError(f"input_shape[{i}] ({name}) must be an int, got the bool {d!r}")
        try:
            n = operator.index(d)
        except TypeError:
            raise TypeError(f"input_shape[{i}] ({name}) must be an int, got {type(d).__name__} {d!r}") from None
        if n < 1:
            raise ValueError(f"input_shape[{i}] ({name}) must be >= 1, got {n}")
        shape.append(n)
    return tuple(shape)


def _check(model, input_shape, profile, frozen_param_bits, optimizer, backward):
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    shape = _input_shape(input_shape)
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    if frozen_param_bits not in FROZEN_BITS:
        raise ValueError(f"frozen_param_bits must be one of {FROZEN_BITS}, got {frozen_param_bits!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {tuple(OPTIMIZERS)}, got {optimizer!r}")
    if backward not in MODES:
        raise ValueError(f"backward must be one of {MODES}, got {backward!r}")
    return shape


def _prepare(model, shape, dtype, input_requires_grad, frozen_bits, optimizer, profile, backward):
    """The batch-1 trace, the distinct parameters, and (params, gradients, optimizer state) bytes."""
    modules = list(model.modules())
    parameters, weights = _parameters(modules)
    kernelized = (backward, frozen_bits) if profile == "masked" else None
    root = _cached_trace(model, modules, parameters, shape[1:], dtype, input_requires_grad, kernelized)
    return root, parameters, _param_bytes(parameters, weights, frozen_bits, optimizer, profile)


def _paper(root: Call):
    """The paper's replay of a trace: its layers, and kept and peak bytes per sample."""
    layers = paper.replay(root)
    return layers, sum(l.kept for l in layers), max((l.running for l in layers), default=0.0)


def estimate(model: nn.Module, input_shape, *, profile: str = "pytorch", backward: str = "exact",
             frozen_param_bits: int = 32, optimizer: str = "sgd",
             dtype: torch.dtype = torch.float32, device: str | None = None,
             input_requires_grad: bool = False) -> MemoryReport:
    """Training memory of one step of ``model`` on inputs of ``input_shape`` (N, C, H, W).

    ``backward``: the mode of the ``masked`` profile, ``"exact"`` or ``"detached"`` (as in
    :func:`ondevice.kernelize`; ignored by the other profiles). ``frozen_param_bits``: storage of
    frozen weights (32, 16, 8 or 4 bits; module docstring); trainable ones keep their dtype. ``optimizer``: "sgd" (no state), "momentum" (1x) or "adam" (2x the
    trainable bytes). ``device`` ("cpu" or "cuda", default: where the model's parameters are)
    matters only where PyTorch's kernels differ (dropout keeps a 1-byte mask on CUDA).
    ``input_requires_grad``: whether the input itself needs a gradient (for a model that is a
    part of a larger network); images do not.
    """
    shape = _check(model, input_shape, profile, frozen_param_bits, optimizer, backward)
    batch = shape[0]
    root, parameters, (params, grads, opt) = _prepare(model, shape, dtype, input_requires_grad,
                                                      frozen_param_bits, optimizer, profile, backward)
    if profile == "paper":
        layers, kept, peak = _paper(root)
        table = [Layer(l.call.name, type(l.call.module).__name__, _batched(l.call.input, batch),
                       _batched(l.call.output, batch), int(l.kept * batch),
                       (f"temporary buffer {l.temporary * batch:,.0f} B",)) for l in layers]
        return MemoryReport(profile, shape, params, grads, opt, int(kept * batch), int(peak * batch),
                            int(peak * batch + params), table, _paper_at_peak(params, kept, peak, batch),
                            "TinyTL's forward replay")
    if device is None:
        device = parameters[0].device.type if parameters else "cpu"
    compiled = _compiled(root, Context(profile, device))
    saved, table = compiled.at(batch)
    fixed, per_sample = _step_base(model, params, opt, shape, dtype)
    total, at_peak, where = compiled.step_peak(batch, fixed, per_sample, _optimizer_temporaries(parameters, optimizer))
    return MemoryReport(profile, shape, params, grads, opt, saved,
                        at_peak["saved activations"] + at_peak["temporaries"], total, table, at_peak, where)


def _paper_at_peak(params: int, kept: float, peak: float, batch: int) -> dict:
    """The paper profile's total by category: parameters, what is kept, the temporary buffer."""
    return {"parameters": params, "saved activations": int(kept * batch),
            "temporaries": int(peak * batch) - int(kept * batch)}


def _batched(info, batch: int):
    """A traced (batch-1) shape with the real batch size."""
    return None if info is None else (batch, *info.shape[1:])


@dataclass
class _Compiled:
    """A trace under one profile's rules, ready to be evaluated at any batch size.

    ``kept``: the tensors kept for backward, each counted once, in call order. ``rows``: the
    per-layer table as (call, slice of ``kept`` it added, notes). ``step``: the moments of a
    whole training step (:mod:`.step_model`).
    """

    kept: list[Stored]
    rows: list[tuple[Call, int, int, tuple[str, ...]]]
    step: StepPlan

    def at(self, batch: int, table: bool = True) -> tuple[int, list[Layer]]:
        """(bytes kept for backward, the per-layer table) at ``batch``."""
        held = [0]
        for s in self.kept:
            held.append(held[-1] + s.nbytes(batch))
        rows = [Layer(call.name, type(call.module).__name__, _batched(call.input, batch),
                      _batched(call.output, batch), held[end] - held[start], notes)
                for call, start, end, notes in self.rows] if table else []
        return held[-1], rows

    def step_peak(self, batch: int, fixed: dict, per_sample: dict, optimizer_temporaries: int):
        """(total, bytes by category at the peak, where) of a step at ``batch``."""
        base = dict(fixed)
        for k, v in per_sample.items():
            base[k] = base.get(k, 0) + v * batch
        total, index, at_peak = self.step.peak(batch, base, optimizer_temporaries)
        return total, at_peak, self.step.moments[index].layer


def _compile(root: Call, ctx: Context) -> _Compiled:
    """Apply the rules to every call (children before their parent), and plan the step."""
    counted: dict[int, str] = {}  # storage -> layer that kept it first
    kept: list[Stored] = []
    keepers: list[Call] = []  # the call that keeps each of `kept`
    rows: list[tuple[Call, int, int, tuple[str, ...]]] = []

    def visit(call: Call) -> None:
        for c in call.children:
            visit(c)
        start, notes = len(kept), []
        for s in rule_for(call.module)(call, ctx):
            if s.storage is not None and s.storage in counted:
                notes.append(f"{s.what}: shared with {counted[s.storage]}")
                continue
            if s.storage is not None:
                counted[s.storage] = call.name
            kept.append(s)
            keepers.append(call)
            notes.append(f"{s.what} ({s.why})")
        if notes:
            rows.append((call, start, len(kept), tuple(notes)))

    visit(root)
    del visit  # a recursive closure is a reference cycle: drop it so no GC pause is needed
    step = step_model.plan(root, kept, keepers, _trainable_bytes(root), lambda c, b: workspace(c, b, ctx.device),
                           _residual, root.output.nbytes if root.output is not None else 0)
    return _Compiled(kept, rows, step)


def _residual(call: Call) -> bool:
    """Whether the call adds its input to its output at its end (a residual block)."""
    m = call.module
    return (isinstance(m, InvertedResidual) and m.use_residual) or isinstance(m, ResidualBlock)


def _trainable_bytes(root: Call) -> dict[int, int]:
    """id(call) -> bytes of the trainable parameters of the call's own module (each once)."""
    seen, out = set(), {}
    for call in root.walk():
        for p in call.module._parameters.values():
            if p is not None and p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out[id(call)] = out.get(id(call), 0) + p.numel() * p.element_size()
    return out


def _compiled(root: Call, ctx: Context) -> _Compiled:
    """The trace under the rules, compiled once per trace and device: afterwards any batch size
    is a few sums."""
    cache = root.__dict__.setdefault("compiled", {})
    key = (ctx.profile, ctx.device)
    if key not in cache:
        cache[key] = _compile(root, ctx)
    return cache[key]


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
    shape = _check(model, (1, *tuple(sample_shape)), profile, frozen_param_bits, optimizer, backward)
    root, parameters, (params, grads, opt) = _prepare(model, shape, dtype, False, frozen_param_bits, optimizer,
                                                      profile, backward)
    if profile == "paper":
        _, kept, peak = _paper(root)

        def paper_step(batch: int):
            at_peak = _paper_at_peak(params, kept, peak, batch)
            return int(kept * batch), int(peak * batch) + params, at_peak, "TinyTL's forward replay"

        return MemoryCurve(profile, shape[1:], params, grads, opt, paper_step)  # rounded as estimate() rounds
    if device is None:
        device = parameters[0].device.type if parameters else "cpu"
    compiled = _compiled(root, Context(profile, device))
    fixed, per_sample = _step_base(model, params, opt, shape, dtype)
    temporaries = _optimizer_temporaries(parameters, optimizer)

    def step(batch: int):
        total, at_peak, where = compiled.step_peak(batch, fixed, per_sample, temporaries)
        return compiled.at(batch, table=False)[0], total, at_peak, where

    return MemoryCurve(profile, shape[1:], params, grads, opt, step)


def step_timeline(model: nn.Module, input_shape, *, profile: str = "pytorch", backward: str = "exact",
                  frozen_param_bits: int = 32, optimizer: str = "sgd", dtype: torch.dtype = torch.float32,
                  device: str | None = None) -> list[tuple[str, str, dict]]:
    """The modelled step moment by moment: (phase, layer, bytes alive by category) in the order a
    step runs them (forward, loss, backward, optimizer), arguments as :func:`estimate`; the
    largest moment is ``estimate(...).total`` (``pytorch`` and ``masked`` profiles)."""
    if profile == "paper":
        raise ValueError("profile must be 'pytorch' or 'masked': the paper profile models no step")
    shape = _check(model, input_shape, profile, frozen_param_bits, optimizer, backward)
    root, parameters, (params, grads, opt) = _prepare(model, shape, dtype, False, frozen_param_bits, optimizer,
                                                      profile, backward)
    if device is None:
        device = parameters[0].device.type if parameters else "cpu"
    compiled = _compiled(root, Context(profile, device))
    fixed, per_sample = _step_base(model, params, opt, shape, dtype)
    base = dict(fixed)
    for k, v in per_sample.items():
        base[k] = base.get(k, 0) + v * shape[0]
    columns = compiled.step.columns(shape[0], base, _optimizer_temporaries(parameters, optimizer))
    return [(m.phase, m.layer, {c: int(columns[i, k]) for k, c in enumerate(step_model.CATEGORIES)})
            for i, m in enumerate(compiled.step.moments)]
