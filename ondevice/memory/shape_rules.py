"""Shape rules of tensor arithmetic: the output of each torch function from its inputs' shapes
alone (chapter 1, section 2; the tensors are :class:`~.shapes.ShapeTensor`). Layers
(convolution, pooling, norms) are in :mod:`.layer_shapes`, views and factories in
:mod:`.view_rules`; a function missing from all three is run on real tensors by the fallback
(:mod:`.fallback`).

A result needs a gradient when any tensor argument does (autograd's rule); an in-place call
returns its input, whose storage it keeps; broadcasting keeps the mark of a dimension that holds
the batch (:class:`~.shapes.BatchSize`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .shapes import SHAPE_RULES, BatchSize, ShapeError, ShapeTensor

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
