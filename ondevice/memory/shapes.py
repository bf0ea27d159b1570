"""Shape-only tensors: what the memory estimate's trace runs a network on (chapter 1, section 2).

A :class:`ShapeTensor` has a shape, a dtype, whether it needs a gradient and the storage it lives
on (views share their base's storage, as in PyTorch), and no data. It answers PyTorch's functions
and tensor methods through the ``__torch_function__`` protocol with the shape rules of
:mod:`.shape_rules`. Nothing is computed, so a pass over a mobile network takes milliseconds.

Notation: the trace runs at batch 1. A dimension that holds the batch carries its size as a
:class:`BatchSize` (an ``int``), so the bytes of a tensor are known to scale with the batch
(activations) or not (a standardized weight, a norm's statistics). Sizes a forward pass reads
from its input (``x.shape[0]``) carry the mark into what it builds from them (a drop-path mask).

A function without a shape rule is run on real tensors instead (:mod:`.fallback`); code that
needs values (``if x.sum() > 0``) raises :class:`Unsupported`, and the trace then measures the
module it sits in. A size that cannot work (a kernel larger than its input, a wrong channel
count) raises :class:`ShapeError`, a ``ValueError`` the trace completes with the layer's name.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field

import torch

_storage_ids = itertools.count(1)


class BatchSize(int):
    """The size of a dimension that holds the batch, at the trace's batch of 1 (plain ``int``
    arithmetic on it gives plain ints)."""

    __slots__ = ()


def is_batched(shape) -> bool:
    """Whether a shape has a dimension that holds the batch."""
    for d in shape:
        if type(d) is BatchSize:
            return True
    return False


class Unsupported(Exception):
    """The trace cannot follow this code on shapes alone (it needs values, or a function the
    fallback could not run); the trace measures the enclosing module instead."""


class ShapeError(ValueError):
    """A size that no input of this shape can satisfy (a kernel larger than its input, a wrong
    channel count); the trace adds the layer's name. ``dim``: the input dimension too small, if
    that is the problem; ``need``: the size that dimension must reach at this layer."""

    def __init__(self, message: str, dim: int | None = None, need: int | None = None):
        super().__init__(message)
        self.dim, self.need = dim, need


class NoRule(Exception):
    """Raised by a shape rule for a call it does not cover: the call is measured instead."""


@dataclass(slots=True)
class TensorInfo:
    """A tensor seen during the trace: shape (batch 1), dtype, whether it needs a gradient, and
    its storage: an identity shared by views, its bytes, whether those scale with the batch, and
    whether it is a parameter or buffer (``held``: not an activation, never counted)."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    requires_grad: bool
    storage: int  # identity of the storage: views share it with their base
    storage_nbytes: int | None = None  # bytes of the whole storage (None: this tensor's bytes)
    storage_batched: bool = True
    held: bool = False

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    @property
    def kept_nbytes(self) -> int:
        """Bytes that keeping this tensor holds: its whole storage (a view keeps its base)."""
        return self.nbytes if self.storage_nbytes is None else self.storage_nbytes

    @property
    def batched(self) -> bool:
        return is_batched(self.shape)


def contiguous_strides(shape) -> tuple[int, ...]:
    strides, step = [], 1
    for d in reversed(shape):
        strides.append(step)
        step *= max(int(d), 1)
    return tuple(reversed(strides))


class ShapeTensor:
    """A tensor without data: enough of ``torch.Tensor`` to run a CNN's forward for its shapes.

    ``strides`` is ``None`` for a contiguous tensor; a view made by :mod:`.shape_rules` records
    its strides and offset so that ``contiguous()`` and ``reshape`` copy exactly when PyTorch does.
    """

    __slots__ = ("shape", "dtype", "requires_grad", "storage", "storage_nbytes", "storage_batched",
                 "held", "strides", "offset", "_info", "__weakref__")

    def __init__(self, shape, dtype=torch.float32, requires_grad=False, storage=None, *,
                 held=False, base: "ShapeTensor | None" = None, strides=None, offset=0):
        self.shape = shape = shape if type(shape) is torch.Size else torch.Size(shape)
        self.dtype = dtype
        self.requires_grad = requires_grad
        self.strides, self.offset, self._info = strides, offset, None
        if base is not None:  # a view: the base's storage
            self.storage, self.storage_nbytes = base.storage, base.storage_nbytes
            self.storage_batched, self.held = base.storage_batched, base.held
        else:
            self.storage = next(_storage_ids) if storage is None else storage
            self.storage_nbytes = math.prod(shape) * dtype.itemsize
            self.storage_batched = is_batched(shape)
            self.held = held

    @property
    def info(self) -> TensorInfo:
        info = self._info  # kept while nothing changed (an in-place call may set requires_grad)
        if info is None or info.requires_grad != self.requires_grad:
            info = self._info = TensorInfo(tuple(self.shape), self.dtype, self.requires_grad, self.storage,
                                           self.storage_nbytes, self.storage_batched, self.held)
        return info

    # --- what code reads without computing ---------------------------------------------------
    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def dim(self) -> int:
        return len(self.shape)

    ndim = property(dim)

    def numel(self) -> int:
        return math.prod(self.shape)

    nelement = numel

    def element_size(self) -> int:
        return self.dtype.itemsize

    def stride(self, dim=None):
        strides = self.strides or contiguous_strides(self.shape)
        return strides if dim is None else strides[dim]

    def storage_offset(self) -> int:
        return self.offset

    def is_contiguous(self, memory_format=torch.contiguous_format) -> bool:
        return self.strides is None or self.strides == contiguous_strides(self.shape)

    def is_floating_point(self) -> bool:
        return self.dtype.is_floating_point

    @property
    def device(self) -> torch.device:
        return STATE.device

    @property
    def is_cuda(self) -> bool:
        return STATE.device.type == "cuda"

    @property
    def is_meta(self) -> bool:
        return STATE.device.type == "meta"

    is_sparse = is_quantized = is_nested = False
    layout = torch.strided
    grad = grad_fn = None

    @property
    def is_leaf(self) -> bool:
        return not self.requires_grad or self.held

    def __len__(self) -> int:
        return self.shape[0]

    def __iter__(self):
        return iter(dispatch(torch.Tensor.unbind, (self,), {}))

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        return f"ShapeTensor({tuple(int(d) for d in self.shape)}, {self.dtype}, requires_grad={self.requires_grad})"

    # --- values do not exist ------------------------------------------------------------------
    def _needs_values(self, *args, **kwargs):
        raise Unsupported("the forward pass reads a tensor's values (a data-dependent branch or .item()); "
                          "shapes alone cannot follow it")

    __bool__ = __int__ = __float__ = __index__ = __complex__ = item = tolist = numpy = _needs_values
    __array__ = data_ptr = _needs_values

    # --- everything else is a torch function ---------------------------------------------------
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return dispatch(func, args, kwargs or {})

    def __getattr__(self, name: str):
        method = getattr(torch.Tensor, name, None)
        if callable(method):
            return functools.partial(_method, method, self)
        raise Unsupported(f"the shape trace has no tensor attribute {name!r}")


def _method(method, self, *args, **kwargs):
    return dispatch(method, (self, *args), kwargs)


def _operator(method):
    def call(self, *args):
        return dispatch(method, (self, *args), {})

    call.__name__ = method.__name__
    return call


for _name in ("__add__", "__radd__", "__iadd__", "__sub__", "__rsub__", "__isub__", "__mul__", "__rmul__",
              "__imul__", "__truediv__", "__rtruediv__", "__itruediv__", "__floordiv__", "__mod__", "__pow__",
              "__rpow__", "__matmul__", "__rmatmul__", "__neg__", "__pos__", "__abs__", "__invert__",
              "__and__", "__or__", "__xor__", "__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__",
              "__getitem__", "__setitem__"):
    setattr(ShapeTensor, _name, _operator(getattr(torch.Tensor, _name)))
ShapeTensor.__hash__ = lambda self: id(self)  # __eq__ above returns a tensor, as torch's does


@dataclass
class Op:
    """One function call a module's own forward made (recorded for modules without a rule, whose
    memory is the sum of their calls'). ``args`` / ``kwargs`` hold :class:`TensorInfo` in place
    of tensors, as they were before the call; ``saved``: what the fallback measured (``None``:
    the function has a rule in :mod:`.op_rules`)."""

    func: object
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    output: object = None
    saved: list | None = None

    @property
    def name(self) -> str:
        return function_name(self.func)


def function_name(func) -> str:
    """``mul`` for ``Tensor.__mul__``, ``max_pool2d`` for ``F._max_pool2d``: the name a reader knows."""
    name = getattr(func, "__name__", None) or repr(func)
    return name.strip("_")


class _State:
    """The running trace: the innermost module call, the model's device, and whether real
    tensors are running (the fallback), when the trace steps aside."""

    __slots__ = ("call", "device", "measuring", "depth", "real_ids", "held_real")

    def __init__(self):
        self.call = None
        self.device = torch.device("cpu")
        self.measuring = False
        self.depth = 0
        self.real_ids: dict[int, tuple] = {}  # storage of a real tensor seen in the trace -> (id, storage)
        self.held_real: set[int] = set()  # storages of real parameters and buffers


STATE = _State()
SHAPE_RULES: dict = {}  # function -> rule(*args, **kwargs) returning the output's ShapeTensor(s)
SAVED_RULES: dict = {}  # function -> rule(op, ctx) returning what autograd keeps (op_rules)


def snapshot(value):
    """``value`` with every tensor replaced by its :class:`TensorInfo` (nested in lists too)."""
    if isinstance(value, ShapeTensor):
        return value.info
    if isinstance(value, torch.Tensor):
        return real_info(value)
    if isinstance(value, (list, tuple)):
        return type(value)(snapshot(v) for v in value) if type(value) in (list, tuple) else \
            tuple(snapshot(v) for v in value)
    if isinstance(value, dict):
        return {k: snapshot(v) for k, v in value.items()}
    return value


def real_info(t: torch.Tensor) -> TensorInfo:
    """The :class:`TensorInfo` of a real tensor met in the trace (a constant the forward pass
    made, or a buffer): not batched, ``held`` if it is the model's."""
    storage = t.untyped_storage()
    key = storage._cdata
    if key not in STATE.real_ids:  # the storage is held for the trace, so no other takes its key
        STATE.real_ids[key] = (next(_storage_ids), storage)
    return TensorInfo(tuple(t.shape), t.dtype, t.requires_grad, STATE.real_ids[key][0], storage.nbytes(),
                      False, key in STATE.held_real)


def dispatch(func, args, kwargs):
    """A torch function called with shape-only tensors: its shape rule, or the fallback."""
    if not torch.is_grad_enabled():  # under no_grad: nothing is kept, nothing needs a gradient
        return _without_grad(func, args, kwargs)
    call = STATE.call
    rule = SHAPE_RULES.get(func)
    if call is None or call.ops is None or STATE.depth:  # not recorded: a module with a rule
        if rule is not None:
            try:
                return rule(*args, **kwargs)
            except NoRule:
                pass
    elif rule is not None and func in SAVED_RULES:
        op = Op(func, snapshot(args), snapshot(kwargs))
        STATE.depth += 1
        try:
            out = rule(*args, **kwargs)
            covered = True
        except NoRule:
            covered = False
        finally:
            STATE.depth -= 1
        if covered:
            op.output = snapshot(out)
            call.ops.append(op)
            return out
    record = call is not None and call.ops is not None and not STATE.depth
    from .fallback import measure_function  # noqa: PLC0415  (the fallback imports this module)

    out, saved = measure_function(func, args, kwargs)
    if record:
        call.ops.append(Op(func, saved=saved))
    return out


def _without_grad(func, args, kwargs):
    rule = SHAPE_RULES.get(func)
    out = None
    if rule is not None:
        try:
            out = rule(*args, **kwargs)
            rule = True
        except NoRule:
            rule = None
    if rule is None:
        from .fallback import measure_function  # noqa: PLC0415

        out = measure_function(func, args, kwargs)[0]
    inputs = {id(v) for v in leaves((args, kwargs), ShapeTensor)}
    for t in leaves(out, ShapeTensor):
        if id(t) not in inputs:
            t.requires_grad = False
    return out


def leaves(value, kind, into: list | None = None) -> list:
    """The ``kind`` values in a nested structure of lists, tuples and dicts, in order."""
    into = [] if into is None else into
    if isinstance(value, kind):
        into.append(value)
    elif isinstance(value, (list, tuple)):
        for v in value:
            leaves(v, kind, into)
    elif isinstance(value, dict):
        for v in value.values():
            leaves(v, kind, into)
    return into
