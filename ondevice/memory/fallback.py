"""Measured, no rule: what the trace does where shapes alone cannot say (chapter 1, section 7).

A function without a shape or memory rule, or a module whose forward the shape trace cannot
follow (it reads values, calls an LSTM, a custom autograd function, ...), is run on real tensors
standing in for its inputs, with ``torch.autograd.graph.saved_tensors_hooks`` counting what
autograd keeps (each storage once, parameters and buffers left out, as
:func:`ondevice.memory.measure` counts). It runs twice, with the batch at 2 and at 3: what grows
between the two is per sample, the rest is fixed, and the output dimensions that grow hold the
batch. (Batch 1 is avoided because BatchNorm in training mode refuses a single value per
channel.) A saved tensor that is one of the inputs or outputs keeps their identity, so it is
counted once with the other layers that keep it.

Inputs are random (normal for floats, zeros for integers): code whose saved bytes depend on the
values (a data-dependent shape) is measured for those values. The modules' parameters are the
real ones; buffers are copies, so running statistics do not change; a model on the meta device
gets random stand-ins. Every result is labelled ``measured, no rule`` in the report.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .rules import MEASURED, Stored, keep
from .shapes import STATE, BatchSize, ShapeTensor, Unsupported, function_name, is_batched, leaves


class _Real:
    """Real tensors standing in for the shape-only ones, with the batch multiplied by ``scale``."""

    def __init__(self, scale: int, device: torch.device):
        self.scale, self.device = scale, device
        self.made: dict[int, torch.Tensor] = {}  # id(ShapeTensor) -> its stand-in
        self.sources: dict[int, ShapeTensor] = {}  # storage of a stand-in -> the ShapeTensor
        self.held: set[int] = set(STATE.held_real)  # storages not counted (parameters, buffers)

    def tensor(self, t: ShapeTensor) -> torch.Tensor:
        real = self.made.get(id(t))
        if real is None:
            shape = [int(d) * self.scale if type(d) is BatchSize else int(d) for d in t.shape]
            layout = _permuted_layout(t)
            numel = math.prod(shape)
            if t.dtype.is_floating_point:
                real = torch.randn(numel if layout else shape, dtype=t.dtype, device=self.device)
                if t.requires_grad:
                    real = real.requires_grad_().clone()  # not a leaf: in-place calls stay legal
            else:
                real = torch.zeros(numel if layout else shape, dtype=t.dtype, device=self.device)
            if layout:  # a transposed or permuted view: the same layout, so the same kernels run
                real = real.as_strided(shape, _dense_strides(shape, t.strides))
            self.made[id(t)] = real
            key = real.untyped_storage()._cdata
            self.sources[key] = t
            if t.held:
                self.held.add(key)
        return real

    def convert(self, value):
        if isinstance(value, ShapeTensor):
            return self.tensor(value)
        if type(value) is BatchSize:
            return int(value) * self.scale
        if isinstance(value, (list, tuple)):
            out = [self.convert(v) for v in value]
            return out if type(value) is list else tuple(out) if type(value) is tuple or not hasattr(value, "_fields") \
                else type(value)(*out)
        if isinstance(value, dict):
            return {k: self.convert(v) for k, v in value.items()}
        return value


def _permuted_layout(t: ShapeTensor) -> bool:
    """Whether ``t`` is a dense tensor in a permuted layout (a transpose or permute of a
    contiguous one), which a stand-in can reproduce at any batch."""
    if t.strides is None or t.is_contiguous():
        return False
    order = sorted(range(t.dim()), key=lambda i: -t.strides[i])
    step = 1
    for i in reversed(order):
        if t.shape[i] != 1 and t.strides[i] != step:
            return False
        step *= int(t.shape[i])
    return True


class _Log:
    """The storages autograd saves, once each: (storage key, bytes)."""

    def __init__(self):
        self.saved: dict[int, int] = {}
        self._alive: list = []  # each storage held until counted, so no key is reused

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in self.saved:
            self.saved[storage._cdata] = storage.nbytes()
            self._alive.append(storage)
        return t.detach()  # an alias, not the tensor: no reference cycle through the graph

    @staticmethod
    def unpack(t: torch.Tensor) -> torch.Tensor:
        return t


def _device() -> torch.device:
    return torch.device("cpu") if STATE.device.type == "meta" else STATE.device


def _run(run, args, kwargs, scale: int):
    real = _Real(scale, _device())
    r_args, r_kwargs = real.convert(args), real.convert(kwargs)
    log = _Log()
    measuring, STATE.measuring = STATE.measuring, True
    try:
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(log.pack, log.unpack):
            out = run(real, r_args, r_kwargs)
    finally:
        STATE.measuring = measuring
    return real, out, log


def _dense_strides(shape, strides) -> tuple[int, ...]:
    """Strides at batch 1 laid out in the order of the measured ``strides`` (a permuted layout)."""
    order = sorted(range(len(shape)), key=lambda i: -strides[i])
    out, step = [0] * len(shape), 1
    for i in reversed(order):
        out[i] = step
        step *= max(int(shape[i]), 1)
    return tuple(out)


def _back(value, other, real: _Real):
    """Real outputs (at batch 2; ``other`` at batch 3) as shape-only tensors at batch 1."""
    if isinstance(value, torch.Tensor):
        source = real.sources.get(value.untyped_storage()._cdata)
        if source is not None and real.made.get(id(source)) is value:  # returned its input (in place)
            source.requires_grad = source.requires_grad or value.requires_grad
            return source
        shape = []
        for i, n in enumerate(value.shape):
            m = other.shape[i] if isinstance(other, torch.Tensor) and other.dim() == value.dim() else n
            shape.append(BatchSize(m - n) if m != n and 2 * (m - n) == n else n)
        strides = None if value.is_contiguous() else _dense_strides(shape, value.stride())
        if source is not None:  # a view of an input
            return ShapeTensor(shape, value.dtype, value.requires_grad, base=source, strides=strides)
        return ShapeTensor(shape, value.dtype, value.requires_grad, strides=strides)
    if isinstance(value, (list, tuple)):
        others = other if isinstance(other, (list, tuple)) and len(other) == len(value) else [None] * len(value)
        out = [_back(v, o, real) for v, o in zip(value, others)]
        if type(value) is list:
            return out
        return type(value)(*out) if hasattr(value, "_fields") else tuple(out) if type(value) is tuple else \
            type(value)(out)
    if isinstance(value, dict):
        return {k: _back(v, other.get(k) if isinstance(other, dict) else None, real) for k, v in value.items()}
    return value


def _measure(run, args, kwargs, label: str):
    """Run twice (batch 2 and 3, or once if nothing is batched); (outputs at batch 1, kept)."""
    batched = any(is_batched(t.shape) for t in leaves((args, kwargs), ShapeTensor))
    runs = [_run(run, args, kwargs, s) for s in ((2, 3) if batched else (1,))]
    real, out, log = runs[0]
    result = _back(out, runs[1][1] if batched else None, real)
    outputs = {r.untyped_storage()._cdata: o for r, o in
               zip(leaves(out, torch.Tensor), leaves(result, ShapeTensor))}
    kept, anonymous = [], []
    for run_real, run_out, run_log in runs:
        own = {t.untyped_storage()._cdata for t in leaves(run_out, torch.Tensor)}
        total = 0
        for key, nbytes in run_log.saved.items():
            if key in run_real.held:
                continue
            if key in run_real.sources:
                if run_real is real:
                    kept.append(keep(run_real.sources[key].info, f"{MEASURED}: an input", f"{label} saved it"))
            elif key in own:
                if run_real is real:
                    kept.append(keep(outputs[key].info, f"{MEASURED}: its output", f"{label} saved it"))
            else:
                total += nbytes
        anonymous.append(total)
    if batched:
        per_sample, fixed = anonymous[1] - anonymous[0], 3 * anonymous[0] - 2 * anonymous[1]
        why = f"{label}: {anonymous[0]:,} B at batch 2, {anonymous[1]:,} B at batch 3"
        if per_sample < 0 or fixed < 0:  # not linear in the batch: charge it all per sample
            per_sample, fixed, why = -(-anonymous[0] // 2), 0, why + " (not linear in the batch: all per sample)"
    else:
        per_sample, fixed, why = 0, anonymous[0], f"{label}: {anonymous[0]:,} B (nothing scales with the batch)"
    if per_sample or fixed or not kept:
        kept.append(Stored(f"{MEASURED}: tensors made inside", why, per_sample=per_sample, fixed=fixed))
    return result, kept


def measure_function(func, args, kwargs):
    """A function call the shape rules do not cover, measured: (outputs, what it keeps)."""
    name = function_name(func)
    try:
        return _measure(lambda real, a, k: func(*a, **k), args, kwargs, f"{name} (run on real tensors)")
    except Exception as error:  # noqa: BLE001  (any failure: the enclosing module is measured instead)
        raise Unsupported(f"{name} has no shape rule, and running it on real tensors failed: {error}") from error


def measure_module(module: nn.Module, args, kwargs, originals: dict[int, torch.Tensor], name: str):
    """A whole module run on real tensors (its forward reads values, or calls what the fallback
    cannot run): (outputs, what it keeps). Errors are the network's own (GenuineError)."""
    from .trace import GenuineError, refresh_rnn_weights  # noqa: PLC0415

    params: dict[int, torch.Tensor] = {}  # stand-in -> real parameter, for both runs

    def real_parameter(st: ShapeTensor) -> torch.Tensor:
        if id(st) not in params:
            p = originals[id(st)]
            if p.is_meta:
                p = nn.Parameter(torch.randn(p.shape, dtype=p.dtype, device=_device()), p.requires_grad) \
                    if p.is_floating_point() else torch.zeros(p.shape, dtype=p.dtype, device=_device())
            params[id(st)] = p
        return params[id(st)]

    def real_buffer(st: ShapeTensor) -> torch.Tensor:
        b = originals[id(st)]
        if b.is_meta:
            return torch.ones(b.shape, dtype=b.dtype, device=_device())
        return b.clone()

    def run(real: _Real, a, k):
        swapped = []
        for m in module.modules():
            for table, make in ((m._parameters, real_parameter), (m._buffers, real_buffer)):
                for n, v in table.items():
                    if isinstance(v, ShapeTensor) and id(v) in originals:
                        table[n] = make(v)
                        real.held.add(table[n].untyped_storage()._cdata)
                        swapped.append((table, n, v))
        refresh_rnn_weights(module.modules())
        try:
            return module(*a, **k)
        finally:
            for table, n, v in swapped:
                table[n] = v
            refresh_rnn_weights(module.modules())

    try:
        return _measure(run, args, kwargs, f"{type(module).__name__} (run on real tensors)")
    except GenuineError:
        raise
    except Exception as error:  # noqa: BLE001
        error.add_note(f"raised by layer {name!r} ({type(module).__name__}) run on real tensors of the traced "
                       f"input shapes: the shape trace could not follow it")
        raise GenuineError(error) from error
