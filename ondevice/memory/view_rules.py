"""Shape rules of views, copies and factories (chapter 1, section 2; the rest: :mod:`.shape_rules`).

View functions (``permute``, ``chunk``, indexing, ...) run on an empty meta tensor with the input's
strides, so they alias, copy and fail exactly as PyTorch does; a second run with the batch doubled
tells which output dimensions hold the batch. ``view``, ``reshape``, ``flatten``, ``unsqueeze``,
``permute`` and ``transpose`` of a contiguous tensor have direct rules (they are frequent). A
factory (``torch.empty(size)``) whose size was read from the input (a drop-path mask) makes a
shape-only tensor that holds the batch.
"""

from __future__ import annotations

import math

import torch

from .shape_rules import _alias, _register
from .shapes import SHAPE_RULES, BatchSize, NoRule, ShapeError, ShapeTensor, is_batched

T = torch.Tensor


def _size_args(args):
    return tuple(args[0]) if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)) else tuple(args)


def factory(func, args, kwargs):
    """``torch.empty(size, ...)`` and friends during the trace: a shape-only tensor when the size
    holds the batch (read from the input), a real tensor otherwise (a constant)."""
    size = _size_args(args)
    if func in _FULL:
        size = _size_args(args[:1])
    if not is_batched(size):
        return func(*args, **kwargs)
    dtype = kwargs.get("dtype") or (torch.int64 if func is torch.randint else torch.get_default_dtype())
    return ShapeTensor(size, dtype, bool(kwargs.get("requires_grad", False)))


def _new_factory(x, *args, **kwargs):
    size = _size_args(args[:1] if args and isinstance(args[0], (tuple, list, torch.Size)) else args)
    return ShapeTensor(size, kwargs.get("dtype") or x.dtype, bool(kwargs.get("requires_grad", False)))


def _like(x, *args, **kwargs):
    return ShapeTensor(x.shape, kwargs.get("dtype") or x.dtype, bool(kwargs.get("requires_grad", False)))


_FULL = {torch.full}
FACTORIES = {torch.empty, torch.zeros, torch.ones, torch.rand, torch.randn, torch.full}


# --- views: run on a meta tensor --------------------------------------------------------------
def _meta(x: ShapeTensor, scale: int = 1) -> torch.Tensor:
    """An empty meta tensor standing for ``x`` (``scale``: the batch multiplied by it)."""
    if scale == 1:
        base = torch.empty(max(x.storage_nbytes // x.dtype.itemsize, 1), dtype=x.dtype, device="meta")
        return base.as_strided(tuple(x.shape), x.stride(), x.offset)
    return torch.empty([d * scale if type(d) is BatchSize else d for d in x.shape], dtype=x.dtype, device="meta")


def _scaled(value, scale):
    if type(value) is BatchSize:
        return int(value) * scale
    if isinstance(value, (list, tuple, torch.Size)):
        return type(value)(_scaled(v, scale) for v in value) if type(value) in (list, tuple) else \
            tuple(_scaled(v, scale) for v in value)
    return value


def _on_meta(func, args, kwargs, scale):
    def convert(v):
        if isinstance(v, ShapeTensor):
            if v.dtype in (torch.int64, torch.int32, torch.bool, torch.uint8) and scale == 1:
                raise NoRule  # an index tensor: values decide the shape
            return _meta(v, scale)
        if isinstance(v, T):
            raise NoRule
        if isinstance(v, (list, tuple)):
            return type(v)(convert(u) for u in v) if type(v) in (list, tuple) else tuple(convert(u) for u in v)
        return _scaled(v, scale)

    return func(*convert(args), **{k: convert(v) for k, v in kwargs.items()})


def _view_rule(func):
    """A view function, run on meta (module docstring): outputs alias the input's storage or are
    new (a copy), with the input's strides; batch dims found by doubling the batch."""

    def rule(x, *args, **kwargs):
        try:
            out = _on_meta(func, (x, *args), kwargs, 1)
        except (RuntimeError, IndexError, TypeError, ValueError) as error:
            raise ShapeError(f"{getattr(func, '__name__', func)}: {error}") from None
        doubled = None
        if x.storage_batched or is_batched(x.shape):
            try:
                doubled = _on_meta(func, (x, *args), kwargs, 2)
            except (RuntimeError, IndexError, TypeError, ValueError):
                doubled = None
        return _back(out, doubled, x)

    return rule


def _back(out, doubled, x):
    """Meta results as shape-only tensors: views of ``x`` keep its storage, copies get their own."""
    if isinstance(out, (list, tuple)):
        pairs = list(zip(out, doubled if isinstance(doubled, (list, tuple)) else [None] * len(out)))
        return tuple(_back(o, d, x) for o, d in pairs) if type(out) is not list else [_back(o, d, x) for o, d in pairs]
    if not isinstance(out, T):
        return out
    shape = list(out.shape)
    if isinstance(doubled, T) and doubled.dim() == out.dim():
        shape = [BatchSize(n) if m != n else n for n, m in zip(out.shape, doubled.shape)]
    elif is_batched(x.shape) and shape:
        shape[0] = BatchSize(shape[0])
    strides = None if out.is_contiguous() else tuple(out.stride())
    if out._is_view():  # the meta input is itself a view of a base standing for x's storage
        return ShapeTensor(shape, out.dtype, x.requires_grad, base=x, strides=strides, offset=out.storage_offset())
    return ShapeTensor(shape, out.dtype, x.requires_grad, strides=strides)


def _reshape_fast(x, *shape):
    """view / reshape of a contiguous tensor: the same storage, the batch mark kept."""
    if not x.is_contiguous():
        raise NoRule
    shape = list(_size_args(shape))
    if -1 in shape:
        known = math.prod(d for d in shape if d != -1)
        i = shape.index(-1)
        n = x.numel() // known if known else 0
        shape[i] = BatchSize(n) if is_batched(x.shape) and not is_batched(shape) else n
    if math.prod(shape) != x.numel():
        raise ShapeError(f"shape {tuple(map(int, shape))} is invalid for an input of {x.numel()} elements")
    if is_batched(x.shape) and not is_batched(shape) and shape:
        shape[0] = BatchSize(shape[0])
    return _alias(x, shape)


def _flatten(x, start_dim=0, end_dim=-1):
    if x.dim() == 0:
        return _alias(x, (1,))
    if not x.is_contiguous():
        raise NoRule
    s = list(x.shape)
    start, end = start_dim % len(s), end_dim % len(s)
    merged = math.prod(s[start:end + 1])
    if is_batched(s[start:end + 1]):
        merged = BatchSize(merged)
    return _alias(x, s[:start] + [merged] + s[end + 1:])


def _unsqueeze(x, dim):
    if not x.is_contiguous():
        raise NoRule
    dim %= x.dim() + 1
    return _alias(x, (*x.shape[:dim], 1, *x.shape[dim:]))


def _permute(x, *dims):
    dims = [d % x.dim() for d in _size_args(dims)]
    strides = x.stride()
    return _alias(x, [x.shape[d] for d in dims], tuple(strides[d] for d in dims))


def _transpose(x, dim0, dim1):
    dims = list(range(x.dim()))
    dims[dim0 % x.dim()], dims[dim1 % x.dim()] = dims[dim1 % x.dim()], dims[dim0 % x.dim()]
    return _permute(x, *dims)


def _with_fallbacks(fast, slow):
    def rule(*args, **kwargs):
        try:
            return fast(*args, **kwargs)
        except NoRule:
            return slow(*args, **kwargs)

    return rule


_register(_new_factory, T.new_empty, T.new_zeros, T.new_ones)
_register(_like, torch.empty_like, torch.zeros_like, torch.ones_like, torch.rand_like, torch.randn_like,
          torch.bernoulli, T.bernoulli)
_register(_with_fallbacks(_reshape_fast, _view_rule(T.reshape)), torch.reshape, T.reshape)
_register(_with_fallbacks(_reshape_fast, _view_rule(T.view)), T.view)
_register(_with_fallbacks(_flatten, _view_rule(torch.flatten)), torch.flatten, T.flatten)
_register(_with_fallbacks(_unsqueeze, _view_rule(torch.unsqueeze)), torch.unsqueeze, T.unsqueeze)
_register(_permute, torch.permute, T.permute)
_register(_transpose, torch.transpose, T.transpose, torch.swapaxes, T.swapaxes)
for _name in ("squeeze", "expand", "expand_as", "view_as", "reshape_as", "narrow", "select", "chunk", "split",
              "tensor_split", "unbind", "movedim", "unflatten", "t", "repeat", "flip", "roll", "unfold",
              "split_with_sizes", "__getitem__"):
    for _f in (getattr(torch, _name, None), getattr(T, _name, None)):
        if _f is not None:
            SHAPE_RULES[_f] = _view_rule(getattr(T, _name))
