"""Shapes for the memory estimate: one forward pass on shape-only tensors (chapter 1, section 2).

:func:`trace` runs a model on a :class:`~.shapes.ShapeTensor` of the input's shape (batch 1) and
records every module call, in call order and nested, with its inputs and output: all the
per-layer rules of :mod:`.rules` need. Parameters and buffers become shape-only tensors for the
pass, so nothing is computed and nothing of the model changes; modules keep their own training
mode (a dropout in training mode makes a new tensor, in eval mode it returns its input).

How each call is accounted for:

- a module type with a registered rule (``rules.RULES``: Conv2d, BatchNorm2d, ...) is *derived*
  by its rule;
- any other module is *traced through*: the functions its own forward calls are recorded
  (:class:`~.shapes.Op`) and their rules (:mod:`.op_rules`) say what autograd keeps, so a custom
  block, an ``nn.Sequential`` subclass or a subclass of ``nn.ReLU`` needs no registration;
- a function without a rule is run on real tensors (:mod:`.fallback`), and a module whose forward
  the shapes cannot follow (it reads values, or calls something the fallback cannot run) is run
  whole on real tensors: both are *measured*, named ``measured, no rule`` in the report.

Why not the meta device for everything? Many meta kernels run Python decompositions (0.5-2 ms per
op), which makes one pass of ProxylessNAS-Mobile take about 200 ms; this pass takes a few
milliseconds, so an estimate at a new resolution stays interactive. Nothing here looks at what
autograd saves: :func:`ondevice.memory.measure` observes that, and agreement is the point.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .layer_shapes import _conv, _linear, _pool2d
from .shape_rules import _new, register_shape_rule
from .shapes import STATE, BatchSize, Op, ShapeError, ShapeTensor, TensorInfo, Unsupported, dispatch, leaves, real_info
from .view_rules import FACTORIES, factory

_conv2d = _conv(2)  # the names the twins' rules use (lean_rules.py)
_NO_INPUT = TensorInfo((0,), torch.float32, False, 0)
_TENSORS = (ShapeTensor, torch.Tensor)

__all__ = ["Call", "Op", "ShapeTensor", "TensorInfo", "register_shape_rule", "trace", "_conv2d", "_linear",
           "_new", "_pool2d"]


@dataclass
class Call:
    """One module call of the traced forward pass, in call order; ``children`` are nested calls.

    ``ops``: for a module without a registered rule, the functions its own forward called (their
    rules say what it keeps); ``measured``: what the fallback measured, for a module run on real
    tensors (it then has no children)."""

    name: str
    module: nn.Module
    training: bool  # the module's mode
    inputs: tuple[TensorInfo, ...]
    output: TensorInfo | None = None
    children: list["Call"] = field(default_factory=list)
    index: int = 0  # position in call order (pre-order)
    outputs: tuple[TensorInfo, ...] = ()
    ops: list[Op] | None = None
    measured: list | None = None

    @property
    def input(self) -> TensorInfo:
        """The first tensor argument (an empty placeholder for a call without one)."""
        return self.inputs[0] if self.inputs else _NO_INPUT

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


class _Mode(TorchFunctionMode):
    """Routes torch functions to the shape rules while the trace runs; ``torch.empty(size)`` with
    a size read from the input becomes shape-only too (a drop-path mask)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not STATE.measuring:
            if ShapeTensor in types:
                return dispatch(func, args, kwargs)
            if func in FACTORIES:
                return factory(func, args, kwargs)
        return func(*args, **kwargs)


class _Retry(Exception):
    def __init__(self, module_type: type, error: Exception):
        super().__init__(str(error))
        self.module_type, self.error = module_type, error


class GenuineError(Exception):
    """The network itself fails on real tensors (carries the original exception)."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


def _info(t) -> TensorInfo:
    return t.info if isinstance(t, ShapeTensor) else real_info(t)


class _Tracer:
    """One attempt at tracing ``model``; ``measured``: module types run on real tensors."""

    def __init__(self, model: nn.Module, measured: set[type]):
        from .rules import RULES  # noqa: PLC0415  (rules import this module)

        self.model, self.measured, self.ruled = model, measured, RULES
        self.names = {m: n for n, m in model.named_modules()}
        self.originals: dict[int, torch.Tensor] = {}  # id(shape-only stand-in) -> the real tensor
        self.stack: list[Call] = []
        self.args: list[tuple] = []  # the arguments of the calls on the stack
        self.root: list[Call] = []

    def run(self, input_shape, dtype, input_requires_grad) -> Call:
        swapped, overridden, saved_state = [], [], (STATE.call, STATE.device, STATE.measuring, STATE.depth,
                                                      STATE.real_ids, STATE.held_real)
        stand_ins: dict[int, ShapeTensor] = {}
        held_real = set()
        device = None
        for m in self.names:
            for table in (m._parameters, m._buffers):
                for n, t in table.items():
                    if t is None:
                        continue
                    device = device or t.device
                    held_real.add(t.untyped_storage()._cdata)
                    st = stand_ins.get(id(t))
                    if st is None:
                        st = stand_ins[id(t)] = ShapeTensor(t.shape, t.dtype, t.requires_grad, held=True)
                        self.originals[id(st)] = t
                    swapped.append((table, n, t))
                    table[n] = st
        for m in self.names:
            if type(m) in self.measured:
                overridden.append((m, m.__dict__.get("forward")))
                m.forward = functools.partial(_measured_forward, self, m)
        STATE.call, STATE.measuring, STATE.depth = None, False, 0
        STATE.device = device or torch.device("cpu")
        STATE.real_ids, STATE.held_real = {}, held_real
        order = itertools.count()
        h1 = nn.modules.module.register_module_forward_pre_hook(functools.partial(self._pre, order))
        h2 = nn.modules.module.register_module_forward_hook(self._post)
        refresh_rnn_weights(self.names)
        x = ShapeTensor((BatchSize(input_shape[0]), *input_shape[1:]), dtype, input_requires_grad)
        apply = torch.autograd.Function.__dict__["apply"]
        torch.autograd.Function.apply = classmethod(functools.partial(_custom_function, apply))
        try:
            with _Mode(), torch.enable_grad():
                self.model(x)
        except GenuineError:
            raise
        except Exception as error:
            inner = self.stack[-1] if self.stack else None
            if isinstance(error, ShapeError) and inner is not None:
                error.layer, error.layer_type = inner.name, type(inner.module).__name__
                error.first = bool(inner.inputs) and inner.inputs[0].storage == x.storage
                if self._fails_for_real(inner):  # the network is wrong, not a rule: say so
                    raise
            if inner is None or type(inner.module) in self.measured:
                raise
            raise _Retry(type(inner.module), error) from error
        finally:
            torch.autograd.Function.apply = apply
            h1.remove()
            h2.remove()
            for table, n, t in swapped:
                table[n] = t
            refresh_rnn_weights(self.names)
            for m, forward in overridden:
                del m.forward
                if forward is not None:
                    m.forward = forward
            (STATE.call, STATE.device, STATE.measuring, STATE.depth, STATE.real_ids,
             STATE.held_real) = saved_state
        (top,) = self.root
        return top

    def _fails_for_real(self, call: Call) -> bool:
        """Whether ``call``'s module also fails on real tensors of its input shapes."""
        from .fallback import measure_module  # noqa: PLC0415

        try:
            measure_module(call.module, self.args[-1], {}, self.originals, call.name)
        except GenuineError:
            return True
        return False

    def _pre(self, order, module, args):
        if STATE.measuring or module not in self.names:
            return
        self.args.append(args)
        call = Call(self.names[module] or "(model)", module, module.training,
                    tuple(_info(t) for t in leaves(args, _TENSORS)), index=next(order))
        if type(module) not in self.ruled and type(module) not in self.measured:
            call.ops = []
        (self.stack[-1].children if self.stack else self.root).append(call)
        self.stack.append(call)
        STATE.call = call

    def _post(self, module, args, output):
        if STATE.measuring or module not in self.names:
            return
        call = self.stack.pop()
        self.args.pop()
        call.outputs = tuple(_info(t) for t in leaves(output, _TENSORS))
        call.output = call.outputs[0] if call.outputs else None
        STATE.call = self.stack[-1] if self.stack else None


def refresh_rnn_weights(modules) -> None:
    """RNNs keep a list of their weights (``_flat_weights``): rebuild it after a swap."""
    for m in modules:
        if isinstance(m, nn.RNNBase):
            m._init_flat_weights()


def _custom_function(apply, cls, *args, **kwargs):
    """``torch.autograd.Function.apply`` during the trace: a custom function keeps what its
    ``save_for_backward`` says, which shapes cannot tell; the module calling it is measured."""
    if not STATE.measuring and any(True for _ in leaves((args, kwargs), ShapeTensor)):
        raise Unsupported(f"a custom autograd function ({cls.__name__}) keeps what its forward saves")
    return apply.__func__(cls, *args, **kwargs)


def _measured_forward(tracer: _Tracer, module: nn.Module, *args, **kwargs):
    """The forward of a module the shapes cannot follow: run on real tensors (the fallback)."""
    if STATE.measuring:  # inside an enclosing measurement: the real forward
        return type(module).forward(module, *args, **kwargs)
    from .fallback import measure_module  # noqa: PLC0415

    call = STATE.call
    out, saved = measure_module(module, args, kwargs, tracer.originals, call.name)
    call.measured = saved
    return out


def _attempt(model, input_shape, dtype, input_requires_grad, measured) -> Call:
    while True:
        try:
            return _Tracer(model, measured).run(input_shape, dtype, input_requires_grad)
        except _Retry as retry:
            measured.add(retry.module_type)


def trace(model: nn.Module, input_shape, dtype: torch.dtype = torch.float32,
          input_requires_grad: bool = False) -> Call:
    """Run ``model`` on a :class:`ShapeTensor` of ``input_shape``; return the root :class:`Call`.

    A size no layer can take raises a ``ValueError`` that names the layer and, for an input too
    small, the smallest height or width that works; a network that fails on real tensors too
    raises its own error, with a note naming the layer.
    """
    measured: set[type] = set()
    try:
        return _attempt(model, input_shape, dtype, input_requires_grad, measured)
    except GenuineError as failure:
        raise failure.error from None
    except ShapeError as error:
        raise _named(model, input_shape, dtype, input_requires_grad, measured, error) from None


def _named(model, input_shape, dtype, input_requires_grad, measured, error: ShapeError) -> ValueError:
    """The ShapeError as a ValueError that names the layer (and the smallest valid input size)."""
    where = f"layer {error.layer!r} ({error.layer_type})" if getattr(error, "layer", None) else "the model"
    message = f"{where}: {error}"
    if error.dim is not None and error.dim >= 2 and error.need is not None and len(input_shape) == 4:
        smallest = _smallest_size(model, input_shape, dtype, input_requires_grad, measured)
        if smallest is not None:
            h, w = smallest
            message += (f"; every kernel and pooling window fits from an input of {h} x {w} px "
                        f"(input_shape[2:] = ({h}, {w}))")
    elif error.dim == 1 and getattr(error, "first", False):
        message += f"; input_shape[1] must be {error.need}"
    return ValueError(message)


def _too_small(model, shape, dtype, input_requires_grad, measured) -> bool:
    try:
        _attempt(model, shape, dtype, input_requires_grad, measured)
    except ShapeError as error:
        return error.dim is not None and error.dim >= 2 and error.need is not None
    except Exception:  # noqa: BLE001  (past every window: another error is not about the size)
        return False
    return False


def _smallest_size(model, input_shape, dtype, input_requires_grad, measured, limit=8192):
    """The smallest ``n`` such that raising both spatial sizes to at least ``n`` makes every
    window fit, as the (height, width) it gives (bisection: sizes that fit stay fitting)."""
    def shape_with(n):
        return (*input_shape[:2], max(int(input_shape[2]), n), max(int(input_shape[3]), n))

    lo, hi = 1, None  # lo does not fit
    n = max(int(input_shape[2]), int(input_shape[3])) + 1
    while n <= limit:
        if not _too_small(model, shape_with(n), dtype, input_requires_grad, measured):
            hi = n
            break
        lo, n = n, 2 * n
    if hi is None:
        return None
    lo = max(lo, min(int(input_shape[2]), int(input_shape[3])))
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if not _too_small(model, shape_with(mid), dtype, input_requires_grad, measured) else (mid, hi)
    return shape_with(hi)[2:]
