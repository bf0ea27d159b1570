"""Shapes for the memory estimate: a forward pass on shape-only tensors (no data, no compute).

:class:`ShapeTensor` stands in for the input. It carries a shape, a dtype, whether it needs a
gradient and which storage it lives on, and answers PyTorch's functions through the
``__torch_function__`` protocol with shape rules (conv, pooling, norms, activations, linear,
broadcasting arithmetic, views). Module hooks record every module call with its inputs and
output, which is all the per-layer rules of :mod:`ondevice.memory.rules` need.

Why not the meta device? Many meta kernels run Python decompositions (0.5-2 ms per op), which
makes one pass of ProxylessNAS-Mobile take about 200 ms; this pass takes a few milliseconds, so
an estimate at a new resolution stays interactive. Nothing here looks at what autograd saves:
that is what :func:`ondevice.memory.measure` observes, and agreement between the two is the point.

``requires_grad`` follows autograd's rule: a result needs a gradient when any tensor argument
(input or parameter) does. Parameters are swapped for shape-only tensors during the pass. The trace runs with every module in eval mode, so that BatchNorm does
not update its statistics; each call records the module's own ``training`` flag from before.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

_storage_ids = itertools.count(1)


@dataclass(frozen=True)
class TensorInfo:
    """A tensor seen during the trace: shape, dtype, whether it needs a gradient, its storage."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    requires_grad: bool
    storage: int  # identity of the storage: views share it with their base

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


class ShapeTensor:
    """A tensor without data: enough of ``torch.Tensor`` to run a CNN's forward for its shapes."""

    def __init__(self, shape, dtype=torch.float32, requires_grad=False, storage=None):
        self.shape = torch.Size(shape)
        self.dtype = dtype
        self.requires_grad = requires_grad
        self.storage = next(_storage_ids) if storage is None else storage

    @property
    def info(self) -> TensorInfo:
        return TensorInfo(tuple(self.shape), self.dtype, self.requires_grad, self.storage)

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def dim(self) -> int:
        return len(self.shape)

    ndim = property(dim)

    def numel(self) -> int:
        return math.prod(self.shape)

    def _view(self, shape) -> "ShapeTensor":
        return ShapeTensor(shape, self.dtype, self.requires_grad, storage=self.storage)

    def flatten(self, start_dim=0, end_dim=-1):
        s = list(self.shape)
        end = end_dim % len(s)
        return self._view(s[:start_dim] + [math.prod(s[start_dim:end + 1])] + s[end + 1:])

    def view(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        if -1 in shape:
            known = math.prod(d for d in shape if d != -1)
            shape = tuple(self.numel() // known if d == -1 else d for d in shape)
        return self._view(shape)

    reshape = view

    def __add__(self, other):
        return _elementwise(self, other)

    __radd__ = __mul__ = __rmul__ = __sub__ = __rsub__ = __truediv__ = __add__

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        rule = _RULES.get(func)
        if rule is None:
            name = getattr(func, "__name__", repr(func))
            raise NotImplementedError(
                f"the shape trace has no rule for {name}; register one with "
                f"ondevice.memory.trace.register_shape_rule({name}, rule)")
        return rule(*args, **kwargs)


def _needs_grad(*values) -> bool:
    flat = []
    for v in values:
        flat.extend(v if isinstance(v, (list, tuple)) else [v])
    return any(getattr(v, "requires_grad", False) for v in flat)


def _new(x: ShapeTensor, shape, *others) -> ShapeTensor:
    return ShapeTensor(shape, x.dtype, _needs_grad(x, *others))


def _elementwise(a, b) -> ShapeTensor:
    first = a if isinstance(a, ShapeTensor) else b
    shape = torch.broadcast_shapes(tuple(getattr(a, "shape", ())), tuple(getattr(b, "shape", ())))
    return _new(first, shape, a, b)


def _pair(v, n=2):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def _window(size, kernel, stride, padding, dilation=1, ceil_mode=False):
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    k, s, d = _pair(weight.shape[2:]), _pair(stride), _pair(dilation)
    if padding == "same":
        p = tuple(d[i] * (k[i] - 1) // 2 for i in range(2))
    else:
        p = (0, 0) if padding == "valid" else _pair(padding)
    spatial = [_window(x.shape[2 + i], k[i], s[i], p[i], d[i]) for i in range(2)]
    return _new(x, (x.shape[0], weight.shape[0], *spatial), weight, bias)


def _pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, *a, **kw):
    if isinstance(dilation, bool):  # avg_pool2d's 5th positional argument is ceil_mode
        dilation, ceil_mode = 1, dilation
    k, s = _pair(kernel_size), _pair(stride or kernel_size)
    p, d = _pair(padding), _pair(dilation)
    return _new(x, (*x.shape[:2], *[_window(x.shape[2 + i], k[i], s[i], p[i], d[i], ceil_mode)
                                    for i in range(2)]))


def _adaptive(x, output_size):
    out = _pair(output_size)
    return _new(x, (*x.shape[:2], *[x.shape[2 + i] if o is None else o for i, o in enumerate(out)]))


def _interpolate(x, size=None, scale_factor=None, *a, **kw):
    if size is None:
        size = [int(math.floor(n * f)) for n, f in zip(x.shape[2:], _pair(scale_factor))]
    return _new(x, (*x.shape[:2], *_pair(size)))


def _same_shape(x, *args, **kwargs):
    if kwargs.get("inplace") or (len(args) >= 2 and args[-1] is True and isinstance(args[-1], bool)):
        x.requires_grad = _needs_grad(x, *args)  # in place: the result is the input's storage
        return x
    return _new(x, x.shape, *args, *kwargs.values())


def _dropout(x, p=0.5, training=True, inplace=False):
    return _new(x, x.shape) if training and p > 0 else x


def _linear(x, weight, bias=None):
    return _new(x, (*x.shape[:-1], weight.shape[0]), weight, bias)


def _flatten(x, start_dim=0, end_dim=-1):
    return x.flatten(start_dim, end_dim)


def _var_mean(x, dim=None, *args, keepdim=False, **kwargs):
    dims = range(x.dim()) if dim is None else [d % x.dim() for d in _pair(dim, 1)]
    shape = [1 if i in dims else n for i, n in enumerate(x.shape)] if keepdim else \
        [n for i, n in enumerate(x.shape) if i not in dims]
    return _new(x, shape), _new(x, shape)


_RULES = {
    F.conv2d: _conv2d,
    F.linear: _linear,
    F.avg_pool2d: _pool2d,
    F.max_pool2d: _pool2d,
    torch.max_pool2d: _pool2d,
    F.adaptive_avg_pool2d: _adaptive,
    F.interpolate: _interpolate,
    F.dropout: _dropout,
    torch.flatten: _flatten,
    torch.add: _elementwise,
    torch.mul: _elementwise,
    torch.var_mean: _var_mean,
    **{f: _same_shape for f in (
        F.batch_norm, F.group_norm, F.layer_norm, F.relu, torch.relu, F.relu6, F.hardtanh,
        F.hardswish, F.hardsigmoid, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.silu, F.gelu,
        F.leaky_relu, F.elu, torch.sqrt, torch.rsqrt, torch.neg)},
}
_RULES[F._max_pool2d] = _pool2d  # max_pool2d without indices


def register_shape_rule(func, rule=None) -> None:
    """Teach the shape trace a function that modules call (e.g. a custom fused op, chapter 4).

    ``rule(x, *args, **kwargs)`` returns the output's :class:`ShapeTensor`; by default the output
    is shaped like the first argument and needs a gradient when any tensor argument does.
    """
    _RULES[func] = rule if rule is not None else (lambda x, *args, **kwargs: _new(x, x.shape, *args, *kwargs.values()))


@dataclass
class Call:
    """One module call of the traced forward pass, in call order; ``children`` are nested calls."""

    name: str
    module: nn.Module
    training: bool  # the module's mode in the model (the trace itself runs in eval mode)
    inputs: tuple[TensorInfo, ...]
    output: TensorInfo | None = None
    children: list["Call"] = field(default_factory=list)
    index: int = 0  # position in call order (pre-order)

    @property
    def input(self) -> TensorInfo:
        return self.inputs[0]

    def child(self, attr: str) -> "Call":
        """The call of sub-module ``attr`` made inside this call (e.g. ``"gate"``)."""
        target = getattr(self.module, attr)
        for c in self.children:
            if c.module is target:
                return c
        raise LookupError(f"{self.name}.{attr} was not called during {self.name}'s forward")

    def walk(self):
        yield self
        for c in self.children:
            yield from c.walk()


def trace(model: nn.Module, input_shape, dtype: torch.dtype = torch.float32,
          input_requires_grad: bool = False) -> Call:
    """Run ``model`` on a :class:`ShapeTensor` of ``input_shape``; return the root :class:`Call`."""
    names = {m: n for n, m in model.named_modules()}
    modes = {m: m.training for m in names}
    stack: list[Call] = []
    order = itertools.count()
    root: list[Call] = []

    def pre(module, args):
        if module not in names:  # a module that is not part of this model
            return
        inputs = tuple(a.info for a in args if isinstance(a, ShapeTensor))
        call = Call(names[module] or "(model)", module, modes[module], inputs, index=next(order))
        (stack[-1].children if stack else root).append(call)
        stack.append(call)

    def post(module, args, output):
        if module not in names:
            return
        out = output[0] if isinstance(output, (tuple, list)) else output
        stack.pop().output = out.info if isinstance(out, ShapeTensor) else None

    # Parameters become shape-only too, so that parameter-side arithmetic (weight
    # standardization) costs nothing; a result needs a gradient when its parameter does.
    params = [(m, n, p) for m in names for n, p in m._parameters.items() if p is not None]
    h1 = nn.modules.module.register_module_forward_pre_hook(pre)
    h2 = nn.modules.module.register_module_forward_hook(post)
    try:
        for m, n, p in params:
            m._parameters[n] = ShapeTensor(p.shape, p.dtype, p.requires_grad)
        model.eval()
        model(ShapeTensor(input_shape, dtype, input_requires_grad))
    finally:
        h1.remove()
        h2.remove()
        for m, n, p in params:
            m._parameters[n] = p
        for m, mode in modes.items():
            m.training = mode
    (top,) = root
    return top
