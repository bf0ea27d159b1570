"""Shape rules: the output of each torch function a CNN calls, from its inputs' shapes alone
(chapter 1, section 2; the tensors are :class:`~.shapes.ShapeTensor`).

Convolutions and pooling check that every window fits and that channel counts agree, and raise
:class:`~.shapes.ShapeError` otherwise. A result needs a gradient when any tensor argument does
(autograd's rule); an in-place call returns its input, whose storage it keeps. View functions
(``permute``, ``chunk``, indexing, ...) are run on an empty meta tensor with the same strides, so
they alias, copy and fail exactly as PyTorch does; a second run with the batch doubled tells
which output dimensions hold the batch. Functions missing here are run on real tensors by the
fallback (:mod:`.fallback`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .shapes import SHAPE_RULES, BatchSize, NoRule, ShapeError, ShapeTensor, is_batched

T = torch.Tensor


def needs_grad(*values) -> bool:
    for v in values:
        if v is None or type(v) in (int, float, bool):
            continue
        if isinstance(v, (list, tuple)):
            if needs_grad(*v):
                return True
        elif getattr(v, "requires_grad", False) is True:
            return True
    return False


def _new(x, shape, *others, dtype=None) -> ShapeTensor:
    """A new tensor shaped ``shape``, needing a gradient when ``x`` or any of ``others`` does."""
    return ShapeTensor(shape, x.dtype if dtype is None else dtype, needs_grad(x, *others))


def _alias(x: ShapeTensor, shape=None, strides=None, offset=None) -> ShapeTensor:
    """A view of ``x``: its storage, a new shape (and strides)."""
    return ShapeTensor(x.shape if shape is None else shape, x.dtype, x.requires_grad, base=x,
                       strides=strides, offset=x.offset if offset is None else offset)


def _in_place(x: ShapeTensor, *others) -> ShapeTensor:
    if needs_grad(*others):
        x.requires_grad = True
    return x


def _pair(v, n=2):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def _dtype(a, b) -> torch.dtype:
    da, db = getattr(a, "dtype", None), getattr(b, "dtype", None)
    if da is None or db is None:
        d = da or db
        other = b if da is not None else a
        return torch.get_default_dtype() if isinstance(other, float) and not d.is_floating_point else d
    return torch.promote_types(da, db)


def broadcast(a, b) -> tuple[int, ...]:
    """Broadcast two shapes; a size that holds the batch keeps its mark."""
    if a == b and all(type(x) is type(y) for x, y in zip(a, b)):
        return a
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x == y:
            out.append(y if type(y) is BatchSize else x)
        elif x == 1:
            out.append(y)
        elif y == 1:
            out.append(x)
        else:
            raise ShapeError(f"shapes {tuple(map(int, a))} and {tuple(map(int, b))} do not broadcast "
                             f"(size {int(x)} against {int(y)})")
    return tuple(reversed(out))


def _shape_of(v):
    return getattr(v, "shape", ())


# --- arithmetic ------------------------------------------------------------------------------
def _binary(a, b, *args, **kwargs) -> ShapeTensor:
    return ShapeTensor(broadcast(_shape_of(a), _shape_of(b)), _dtype(a, b), needs_grad(a, b, *args))


def _reversed(a, b, *args, **kwargs):
    return _binary(b, a)


def _binary_in_place(a, b, *args, **kwargs) -> ShapeTensor:
    if broadcast(a.shape, _shape_of(b)) != tuple(a.shape):
        raise ShapeError(f"an in-place {tuple(map(int, _shape_of(b)))} result does not fit {tuple(map(int, a.shape))}")
    return _in_place(a, b)


def _compare(a, b, *args, **kwargs) -> ShapeTensor:
    return ShapeTensor(broadcast(_shape_of(a), _shape_of(b)), torch.bool, False)


def _where(condition, a, b=None) -> ShapeTensor:
    shape = broadcast(broadcast(_shape_of(condition), _shape_of(a)), _shape_of(b))
    return ShapeTensor(shape, _dtype(a, b), needs_grad(a, b))


def _unary(x, *args, **kwargs) -> ShapeTensor:
    return _new(x, x.shape, *args, *kwargs.values())


_INPLACE_ARG = {F.relu: 1, F.relu6: 1, F.hardswish: 1, F.hardsigmoid: 1, F.silu: 1, F.mish: 1, F.selu: 1,
                F.leaky_relu: 2, F.elu: 2, F.celu: 2, F.hardtanh: 3, F.threshold: 3, F.rrelu: 4}


def _activation(func):
    index = _INPLACE_ARG[func]

    def rule(x, *args, **kwargs):
        inplace = kwargs.get("inplace", args[index - 1] if len(args) >= index else False)
        return _in_place(x, *args) if inplace else _new(x, x.shape, *args, *kwargs.values())

    return rule


def _unary_in_place(x, *args, **kwargs) -> ShapeTensor:
    return _in_place(x, *args, *kwargs.values())


def _setitem(x, index, value) -> None:
    _in_place(x, value)


def _fill(x, *args, **kwargs) -> ShapeTensor:  # overwritten with values that need no gradient
    return x


def _dropout(x, p=0.5, training=True, inplace=False):
    if not training or p == 0:
        return x
    return x if inplace else _new(x, x.shape)


def _to(x, *args, **kwargs):
    dtype = kwargs.get("dtype")
    for a in args:
        if isinstance(a, torch.dtype):
            dtype = a
        elif isinstance(a, (ShapeTensor, T)):
            dtype = a.dtype
    return x if dtype is None or dtype == x.dtype else ShapeTensor(x.shape, dtype, x.requires_grad)


def _cast(dtype):
    return lambda x, *args, **kwargs: x if x.dtype == dtype else ShapeTensor(x.shape, dtype, x.requires_grad)


def _clone(x, *args, **kwargs):
    return ShapeTensor(x.shape, x.dtype, x.requires_grad)


def _contiguous(x, *args, **kwargs):
    return x if x.is_contiguous() else _clone(x)


def _detach(x):
    return ShapeTensor(x.shape, x.dtype, False, base=x, strides=x.strides, offset=x.offset)


# --- convolution, linear, pooling ------------------------------------------------------------
def _check_rank(x, spatial: int, what: str):
    if x.dim() != spatial + 2:
        raise ShapeError(f"{what} takes a {spatial + 2}-d input (batch, channels, {spatial} spatial "
                         f"dims), got {x.dim()}-d {tuple(map(int, x.shape))}")


def window(size, kernel, stride, padding, dilation=1, ceil_mode=False, dim=None, what="window"):
    """Output size of a sliding window (conv, pooling); a :class:`ShapeError` when none fits."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    if span < 0:
        need = dilation * (kernel - 1) + 1 - 2 * padding
        raise ShapeError(f"its {what} ({kernel} wide, padding {padding}, dilation {dilation}) needs an "
                         f"input of at least {need} px in dimension {dim}, it gets {int(size)}", dim, need)
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _conv(spatial: int):
    def rule(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        _check_rank(x, spatial, f"conv{spatial}d")
        if x.shape[1] != weight.shape[1] * groups:
            raise ShapeError(f"it expects {weight.shape[1] * groups} input channels, it gets {int(x.shape[1])}", 1,
                             weight.shape[1] * groups)
        k, s, d = _pair(tuple(weight.shape[2:]), spatial), _pair(stride, spatial), _pair(dilation, spatial)
        if padding == "same":
            sizes = [x.shape[2 + i] for i in range(spatial)]
        else:
            p = (0,) * spatial if padding == "valid" else _pair(padding, spatial)
            sizes = [window(x.shape[2 + i], k[i], s[i], p[i], d[i], dim=2 + i, what="kernel")
                     for i in range(spatial)]
        return _new(x, (x.shape[0], weight.shape[0], *sizes), weight, bias)

    return rule


def _conv_transpose(spatial: int):
    def rule(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
        _check_rank(x, spatial, f"conv_transpose{spatial}d")
        if x.shape[1] != weight.shape[0]:
            raise ShapeError(f"it expects {weight.shape[0]} input channels, it gets {int(x.shape[1])}", 1,
                             weight.shape[0])
        k, s, d = _pair(tuple(weight.shape[2:]), spatial), _pair(stride, spatial), _pair(dilation, spatial)
        p, op = _pair(padding, spatial), _pair(output_padding, spatial)
        sizes = [(x.shape[2 + i] - 1) * s[i] - 2 * p[i] + d[i] * (k[i] - 1) + op[i] + 1 for i in range(spatial)]
        return _new(x, (x.shape[0], weight.shape[1] * groups, *sizes), weight, bias)

    return rule


def _linear(x, weight, bias=None):
    if x.shape[-1] != weight.shape[1]:
        raise ShapeError(f"it expects {weight.shape[1]} input features, it gets {int(x.shape[-1])} "
                         f"(input {tuple(map(int, x.shape))})", x.dim() - 1, weight.shape[1])
    return _new(x, (*x.shape[:-1], weight.shape[0]), weight, bias)


def _pool(spatial: int, x, kernel_size, stride, padding, dilation, ceil_mode, what):
    _check_rank(x, spatial, what)
    k, s = _pair(kernel_size, spatial), _pair(stride or kernel_size, spatial)
    p, d = _pair(padding, spatial), _pair(dilation, spatial)
    for i in range(spatial):
        if p[i] > (d[i] * (k[i] - 1) + 1) // 2:
            raise ShapeError(f"its padding {p[i]} is more than half its {k[i]}-wide window")
    return (*x.shape[:2], *[window(x.shape[2 + i], k[i], s[i], p[i], d[i], ceil_mode, 2 + i, "pooling window")
                            for i in range(spatial)])


def _avg_pool(spatial: int):
    def rule(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):
        return _new(x, _pool(spatial, x, kernel_size, stride, padding, 1, ceil_mode, f"avg_pool{spatial}d"))

    return rule


def _max_pool(spatial: int, indices: bool = False):
    def rule(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
        out = _new(x, _pool(spatial, x, kernel_size, stride, padding, dilation, ceil_mode, f"max_pool{spatial}d"))
        return (out, ShapeTensor(out.shape, torch.int64)) if indices or return_indices else out

    return rule


def _pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, *args, **kwargs):
    """avg_pool2d's or max_pool2d's positional arguments (the fifth is ceil_mode in avg_pool2d)."""
    if isinstance(dilation, bool):
        dilation, ceil_mode = 1, dilation
    return _new(x, _pool(2, x, kernel_size, stride, padding, dilation, ceil_mode, "pooling"))


def _adaptive(spatial: int, indices: bool = False):
    def rule(x, output_size, return_indices=False):
        out = _pair(output_size, spatial)
        shape = (*x.shape[:-spatial], *[x.shape[x.dim() - spatial + i] if o is None else o for i, o in enumerate(out)])
        y = _new(x, shape)
        return (y, ShapeTensor(shape, torch.int64)) if indices or return_indices else y

    return rule


def _interpolate(x, size=None, scale_factor=None, mode="nearest", align_corners=None,
                 recompute_scale_factor=None, antialias=False):
    spatial = x.dim() - 2
    if size is None:
        if scale_factor is None:
            raise ShapeError("interpolate needs a size or a scale_factor")
        size = [int(math.floor(n * f)) for n, f in zip(x.shape[2:], _pair(scale_factor, spatial))]
    return _new(x, (*x.shape[:2], *_pair(size, spatial)))


def _pad(x, pad, mode="constant", value=None):
    shape = list(x.shape)
    for i in range(len(pad) // 2):
        d = x.dim() - 1 - i
        if mode == "reflect" and max(pad[2 * i], pad[2 * i + 1]) >= x.shape[d]:
            raise ShapeError(f"reflect padding {pad[2 * i]}, {pad[2 * i + 1]} needs more than that many px in "
                             f"dimension {d}, it gets {int(x.shape[d])}", d, max(pad[2 * i], pad[2 * i + 1]) + 1)
        shape[d] = x.shape[d] + pad[2 * i] + pad[2 * i + 1]
        if shape[d] < 1:
            raise ShapeError(f"padding {pad[2 * i]}, {pad[2 * i + 1]} leaves nothing of dimension {d}")
    return _new(x, shape)


def _pixel_shuffle(x, factor):
    n, c, h, w = x.shape[-4:]
    return _new(x, (*x.shape[:-3], c // (factor * factor), h * factor, w * factor))


# --- norms -----------------------------------------------------------------------------------
def _batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    c = next((t.shape[0] for t in (weight, running_mean) if t is not None), None)
    if c is not None and (x.dim() < 2 or x.shape[1] != c):
        raise ShapeError(f"it normalizes {c} channels, its input has {int(x.shape[1]) if x.dim() > 1 else 0}", 1, c)
    return _new(x, x.shape, weight, bias)


def _group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    if x.shape[1] % num_groups or (weight is not None and weight.shape[0] != x.shape[1]):
        raise ShapeError(f"{int(x.shape[1])} channels do not fit its {num_groups} groups"
                         + ("" if weight is None else f" of {weight.shape[0]} channels"), 1)
    return _new(x, x.shape, weight, bias)


def _layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    n = len(_pair(normalized_shape, 1))
    if tuple(x.shape[-n:]) != tuple(_pair(normalized_shape, 1)):
        raise ShapeError(f"it normalizes the last dims {tuple(_pair(normalized_shape, 1))}, its input is "
                         f"{tuple(map(int, x.shape))}")
    return _new(x, x.shape, weight, bias)


def _var_mean(x, dim=None, *args, keepdim=False, **kwargs):
    shape = _reduced(x, dim, keepdim)
    return _new(x, shape), _new(x, shape)


# --- reductions ------------------------------------------------------------------------------
def _reduced(x, dim, keepdim) -> tuple:
    if dim is None or dim == ():
        return (1,) * x.dim() if keepdim else ()
    dims = {d % max(x.dim(), 1) for d in _pair(dim, 1)}
    if keepdim:
        return tuple(1 if i in dims else n for i, n in enumerate(x.shape))
    return tuple(n for i, n in enumerate(x.shape) if i not in dims)


def _reduce(x, dim=None, keepdim=False, *args, dtype=None, **kwargs):
    if isinstance(dim, torch.dtype):  # sum(x, dtype)
        dim, dtype = None, dim
    return _new(x, _reduced(x, dim, keepdim), dtype=dtype)


def _statistic(x, dim=None, *args, keepdim=False, **kwargs):  # var / std: (x, dim, unbiased, keepdim)
    if args and isinstance(args[-1], bool) and len(args) == 2:
        keepdim = args[-1]
    return _new(x, _reduced(x, dim, keepdim))


class _MinMax(tuple):
    """(values, indices), like ``torch.return_types.max``."""

    values = property(lambda self: self[0])
    indices = property(lambda self: self[1])


def _max_min(x, dim=None, keepdim=False, *args, **kwargs):
    if isinstance(dim, (ShapeTensor, T)):  # max(x, other): elementwise
        return _binary(x, dim)
    if dim is None:
        return _new(x, ())
    shape = _reduced(x, dim, keepdim)
    return _MinMax((_new(x, shape), ShapeTensor(shape, torch.int64)))


def _arg(x, dim=None, keepdim=False):
    return ShapeTensor(_reduced(x, dim, keepdim), torch.int64)


# --- concatenation, matrix products, factories -------------------------------------------------
def _cat(tensors, dim=0, *args, **kwargs):
    tensors = [t for t in tensors if not (t.dim() == 1 and t.shape[0] == 0)]  # cat skips empty 1-d tensors
    first = tensors[0]
    dim %= first.dim()
    total = 0
    for t in tensors:
        if t.dim() != first.dim() or any(t.shape[i] != first.shape[i] for i in range(t.dim()) if i != dim):
            raise ShapeError(f"cat along dim {dim} needs equal other sizes, got "
                             f"{[tuple(map(int, u.shape)) for u in tensors]}")
        total += t.shape[dim]
    size = BatchSize(total) if any(type(t.shape[dim]) is BatchSize for t in tensors) else total
    dtype = first.dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return ShapeTensor((*first.shape[:dim], size, *first.shape[dim + 1:]), dtype, needs_grad(tensors))


def _stack(tensors, dim=0, *args, **kwargs):
    first = tensors[0]
    if any(tuple(t.shape) != tuple(first.shape) for t in tensors):
        raise ShapeError(f"stack needs equal shapes, got {[tuple(map(int, t.shape)) for t in tensors]}")
    dim %= first.dim() + 1
    return ShapeTensor((*first.shape[:dim], len(tensors), *first.shape[dim:]), first.dtype, needs_grad(tensors))


def _matmul(a, b, *args, **kwargs):
    sa, sb = tuple(a.shape), tuple(b.shape)
    if sa[-1] != sb[-2 if len(sb) > 1 else 0]:
        raise ShapeError(f"matmul of {tuple(map(int, sa))} and {tuple(map(int, sb))}: inner sizes differ")
    if len(sb) == 1:
        return _new(a, sa[:-1], b)
    if len(sa) == 1:
        return _new(b, (*sb[:-2], sb[-1]), a)
    return ShapeTensor((*broadcast(sa[:-2], sb[:-2]), sa[-2], sb[-1]), _dtype(a, b), needs_grad(a, b))


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


def register_shape_rule(func, rule=None) -> None:
    """Teach the shape trace a function that modules call (e.g. a custom fused op, chapter 4).

    ``rule(x, *args, **kwargs)`` returns the output's :class:`ShapeTensor`; by default the output
    is shaped like the first argument and needs a gradient when any tensor argument does. (The
    function's memory is then its module's rule; a module without one is measured.)
    """
    SHAPE_RULES[func] = rule if rule is not None else _unary


def _register(rule, *funcs):
    for f in funcs:
        if f is not None:
            SHAPE_RULES[f] = rule


def _both(*names):
    """``torch.<name>`` and ``torch.Tensor.<name>`` for each name (the same arguments after the tensor)."""
    return [getattr(mod, n, None) for n in names for mod in (torch, T)]


_register(_conv(1), F.conv1d)
_register(_conv(2), F.conv2d)
_register(_conv(3), F.conv3d)
_register(_conv_transpose(1), F.conv_transpose1d)
_register(_conv_transpose(2), F.conv_transpose2d)
_register(_linear, F.linear)
_register(_avg_pool(1), F.avg_pool1d)
_register(_avg_pool(2), F.avg_pool2d)
_register(_max_pool(1), F._max_pool1d, F.max_pool1d)  # F.max_pool2d dispatches as itself (return_indices)
_register(_max_pool(2), F._max_pool2d, F.max_pool2d)
_register(_max_pool(1, True), F.max_pool1d_with_indices)
_register(_max_pool(2, True), F.max_pool2d_with_indices)
_register(_adaptive(1), F.adaptive_avg_pool1d)
_register(_adaptive(2), F.adaptive_avg_pool2d)
_register(_adaptive(2), F._adaptive_max_pool2d, F.adaptive_max_pool2d)
_register(_adaptive(2, True), F.adaptive_max_pool2d_with_indices)
_register(_interpolate, F.interpolate)
_register(_pad, F.pad)
_register(_pixel_shuffle, F.pixel_shuffle, torch.pixel_shuffle)
_register(_dropout, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout)
_register(_batch_norm, F.batch_norm)
_register(_group_norm, F.group_norm)
_register(_layer_norm, F.layer_norm)
_register(_var_mean, torch.var_mean)
for _f in _INPLACE_ARG:
    _register(_activation(_f), _f)
_register(_unary, torch.relu, F.gelu, F.softplus, F.sigmoid, F.tanh, F.softmax, F.log_softmax, F.prelu,
          *_both("sigmoid", "tanh", "softmax", "log_softmax", "exp", "log", "sqrt", "rsqrt", "neg", "abs",
                 "clamp", "clip", "clamp_min", "clamp_max", "square", "reciprocal", "erf", "sin", "cos",
                 "floor", "ceil", "round", "sign", "relu"), T.__neg__, T.__pos__, T.__abs__, T.pow, torch.pow, T.__pow__)
_register(_unary_in_place, torch.relu_, F.relu_, F.elu_, F.leaky_relu_, F.hardtanh_, torch.sigmoid_,
          torch.tanh_, *_both("relu_", "sigmoid_", "tanh_", "exp_", "clamp_", "clamp_min_", "clamp_max_",
                              "neg_", "abs_", "sqrt_", "floor_", "round_", "square_", "pow_"))
_register(_fill, *_both("bernoulli_", "uniform_", "normal_", "fill_", "zero_", "random_", "exponential_"))
_register(_binary, *_both("add", "sub", "mul", "div", "true_divide", "maximum", "minimum", "multiply",
                          "subtract", "divide"), T.__add__, T.__sub__, T.__mul__, T.__truediv__,
          T.__radd__, T.__rmul__)
_register(_reversed, T.__rsub__, T.__rtruediv__, T.__rpow__)
_register(_binary_in_place, *_both("add_", "sub_", "mul_", "div_", "copy_"), T.__iadd__, T.__isub__,
          T.__imul__, T.__itruediv__)
_register(_compare, *_both("eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or"), T.__eq__,
          T.__ne__, T.__lt__, T.__le__, T.__gt__, T.__ge__, T.__and__, T.__or__)
_register(_where, torch.where, T.where)
_register(_setitem, T.__setitem__)
_register(_to, T.to, T.type_as)
_register(_cast(torch.float32), T.float)
_register(_cast(torch.float16), T.half)
_register(_cast(torch.bfloat16), T.bfloat16)
_register(_clone, torch.clone, T.clone)
_register(_contiguous, T.contiguous)
_register(_detach, torch.detach, T.detach)
_register(_reduce, *_both("sum", "mean", "amax", "amin", "prod", "logsumexp", "nansum", "all", "any"))
_register(_statistic, *_both("var", "std", "norm"))
_register(_max_min, *_both("max", "min"))
_register(_arg, *_both("argmax", "argmin"))
_register(_cat, torch.cat, torch.concat, torch.concatenate)
_register(_stack, torch.stack)
_register(_matmul, torch.matmul, T.matmul, T.__matmul__, torch.bmm, T.bmm, torch.mm, T.mm)
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
