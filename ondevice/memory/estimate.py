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

The ``total`` (``pytorch`` and ``masked`` profiles) is the peak of a whole training step:
:func:`peak_model` walks the step in the order it runs (:mod:`.step_model`: forward, loss,
backward, the optimizer's update), with the backend's workspaces (:mod:`.workspace`), and takes
the largest moment; chapter 5 ("Theory meets the allocator") measures it against the allocator.
The result types are in :mod:`.report`; the same model as a function of the batch, and moment by
moment, in :mod:`.curve`.
"""

from __future__ import annotations

import operator
import weakref
from dataclasses import dataclass

import torch
from torch import nn

from ..blocks import InvertedResidual
from ..models.resnet import ResidualBlock
from . import paper
from . import step_model
from .parameter_bytes import OPTIMIZERS, optimizer_temporaries, parameter_bytes, parameters_of, step_base
from .report import Layer, MemoryReport
from .rules import MODES, Context, Stored, rule_for
from .step_model import StepPlan
from .workspace import workspace
from .trace import Call, trace

PROFILES = ("pytorch", "paper", "masked")
FROZEN_BITS = (32, 16, 8, 4)


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


def check(model, input_shape, profile, frozen_param_bits, optimizer, backward):
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


def prepare(model, shape, dtype, input_requires_grad, frozen_bits, optimizer, profile, backward):
    """The batch-1 trace, the distinct parameters, and (params, gradients, optimizer state) bytes."""
    modules = list(model.modules())
    parameters, weights = parameters_of(modules)
    kernelized = (backward, frozen_bits) if profile == "masked" else None
    root = _cached_trace(model, modules, parameters, shape[1:], dtype, input_requires_grad, kernelized)
    return root, parameters, parameter_bytes(parameters, weights, frozen_bits, optimizer, profile)


def paper_replay(root: Call):
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
    shape = check(model, input_shape, profile, frozen_param_bits, optimizer, backward)
    batch = shape[0]
    root, parameters, (params, grads, opt) = prepare(model, shape, dtype, input_requires_grad,
                                                     frozen_param_bits, optimizer, profile, backward)
    if profile == "paper":
        layers, kept, peak = paper_replay(root)
        table = [Layer(l.call.name, type(l.call.module).__name__, _batched(l.call.input, batch),
                       _batched(l.call.output, batch), int(l.kept * batch),
                       (f"temporary buffer {l.temporary * batch:,.0f} B",)) for l in layers]
        return MemoryReport(profile, shape, params, grads, opt, int(kept * batch), int(peak * batch),
                            int(peak * batch + params), table, paper_at_peak(params, kept, peak, batch),
                            "TinyTL's forward replay")
    step = peak_model(model, root, parameters, (params, opt), shape, dtype, profile, optimizer, device)
    saved, table = step.compiled.at(batch)
    total, at_peak, where = step.peak(batch)
    return MemoryReport(profile, shape, params, grads, opt, saved,
                        at_peak["saved activations"] + at_peak["temporaries"], total, table, at_peak, where)


def paper_at_peak(params: int, kept: float, peak: float, batch: int) -> dict:
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


@dataclass(frozen=True)
class PeakModel:
    """The peak of a training step as a function of the batch size (:func:`peak_model`): the
    compiled rules and step plan, what is alive throughout the step (``fixed`` bytes and bytes
    ``per_sample``, by category) and the optimizer's scratch."""

    compiled: _Compiled
    fixed: dict
    per_sample: dict
    optimizer_temporaries: int

    @property
    def moments(self):
        return self.compiled.step.moments

    def saved(self, batch: int) -> int:
        """Bytes kept for backward at ``batch``."""
        return self.compiled.at(batch, table=False)[0]

    def alive_throughout(self, batch: int) -> dict:
        base = dict(self.fixed)
        for k, v in self.per_sample.items():
            base[k] = base.get(k, 0) + v * batch
        return base

    def columns(self, batch: int):
        """Bytes alive by category (rows: moments, columns: categories)."""
        return self.compiled.step.columns(batch, self.alive_throughout(batch), self.optimizer_temporaries)

    def peak(self, batch: int) -> tuple[int, dict, str]:
        """(total, bytes by category at the peak, the moment where it falls) at ``batch``."""
        total, index, at_peak = self.compiled.step.peak(batch, self.alive_throughout(batch),
                                                        self.optimizer_temporaries)
        return total, at_peak, self.moments[index].layer


def peak_model(model: nn.Module, root: Call, parameters: list[nn.Parameter], fixed_bytes: tuple[int, int],
               shape, dtype: torch.dtype, profile: str, optimizer: str, device: str | None) -> PeakModel:
    """The step's peak model for a traced ``model`` (``pytorch`` or ``masked`` profile). The
    compiled rules are cached on the trace, per profile and device (:func:`_compiled`); the
    rest is a few sums. ``fixed_bytes``: (parameter bytes, optimizer state bytes)."""
    if device is None:
        device = parameters[0].device.type if parameters else "cpu"
    params, opt = fixed_bytes
    fixed, per_sample = step_base(model, params, opt, shape, dtype)
    return PeakModel(_compiled(root, Context(profile, device)), fixed, per_sample,
                     optimizer_temporaries(parameters, optimizer))


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
