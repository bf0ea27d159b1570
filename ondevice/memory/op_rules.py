"""What stock PyTorch autograd keeps for one function call (chapter 1, section 2): the rules of
modules without a registered rule, whose memory is the sum of what their own calls keep.

Each rule reads an :class:`~.shapes.Op` (the call's arguments as :class:`~.shapes.TensorInfo`,
as they were before the call, and its output) and returns the tensors kept, as
:class:`~.rules.Stored`. Measured on PyTorch 2.13 CPU with saved-tensor hooks
(``tests/test_trace_ops.py`` checks every rule against :func:`ondevice.memory.measure`):

=============================================  ===============================================
functions                                      kept when a gradient flows through them
=============================================  ===============================================
add, sub, cat, stack, views, pad (constant),   nothing
interpolate, mean, sum, clone, to, dropout
(eval)
relu, sigmoid, tanh, softmax, exp, sqrt,       the output
rsqrt, in-place relu\\_ / sigmoid\\_ / elu\\_
relu6, hardtanh, hardswish, hardsigmoid,       the input
silu, gelu, leaky_relu, elu, abs, clamp, pow,
avg_pool, adaptive_avg_pool (not 1x1),
pad (reflect / replicate), var
in-place relu6 / hardtanh / hardswish /        a copy of the input (the original values)
hardsigmoid / silu (``inplace=True``)
mul(a, b), matmul                              ``b`` if ``a`` needs a gradient, ``a`` if ``b`` does
div(a, b)                                      ``b``; and ``a`` if ``b`` needs a gradient
mul\\_(b), div\\_(b) (in place)                  as mul / div, with a copy of the original ``a``
conv*, linear, batch_norm, group_norm,         as their modules' rules (:mod:`.rules`), plus any
layer_norm                                     computed (non-parameter) weight
max_pool, adaptive_max_pool                    the input and int64 argmax indices
max / min over a dim                           int64 indices; amax / amin: input and output
dropout (training)                             the mask: input-sized, the input's dtype on CPU,
                                               1 byte on CUDA
=============================================  ===============================================

A function missing here is measured (:mod:`.fallback`) and named ``measured, no rule``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import layer_shapes, shape_rules, view_rules  # noqa: F401  (the shape rules these rules sit beside)
from .rules import Context, Stored, keep
from .shapes import SAVED_RULES, Op, TensorInfo

T = torch.Tensor


def _get(op: Op, i: int, name: str, default=None):
    return op.args[i] if len(op.args) > i else op.kwargs.get(name, default)


def _grad(*values) -> bool:
    return any(isinstance(v, TensorInfo) and v.requires_grad for v in values)


def copy_of(t: TensorInfo, what: str, why: str) -> Stored:
    """A new tensor of ``t``'s size that autograd keeps (the original values of an in-place call)."""
    return Stored(what, why, per_sample=t.nbytes) if t.storage_batched else Stored(what, why, fixed=t.nbytes)


def _saved(*funcs):
    def register(rule):
        for f in funcs:
            if f is not None:
                SAVED_RULES[f] = rule
        return rule

    return register


def _both(*names):
    return [getattr(mod, n, None) for n in names for mod in (torch, T)]


_VIEWS = ["reshape", "view", "flatten", "unsqueeze", "squeeze", "permute", "transpose", "swapaxes", "expand",
          "expand_as", "view_as", "reshape_as", "narrow", "select", "chunk", "split", "tensor_split", "unbind",
          "movedim", "unflatten", "t", "repeat", "flip", "roll", "split_with_sizes", "contiguous", "clone",
          "detach", "to", "type_as", "float", "half", "bfloat16", "__getitem__", "__setitem__"]


@_saved(*_both("add", "sub", "subtract", "add_", "sub_", "copy_", "sum", "mean", "cat", "stack", "neg", "neg_",
               "eq", "ne", "lt", "le", "gt", "ge", "argmax", "argmin", "bernoulli_", "uniform_", "normal_",
               "fill_", "zero_", "random_", "exponential_", "empty_like", "zeros_like", "ones_like",
               "rand_like", "randn_like", "bernoulli", "new_empty", "new_zeros", "new_ones", *_VIEWS),
        T.__add__, T.__radd__, T.__iadd__, T.__sub__, T.__rsub__, T.__isub__, T.__neg__, T.__pos__,
        T.__eq__, T.__ne__, T.__lt__, T.__le__, T.__gt__, T.__ge__, torch.concat, torch.concatenate,
        F.interpolate, F.pixel_shuffle, torch.pixel_shuffle)
def nothing(op: Op, ctx: Context) -> list[Stored]:
    return []


@_saved(torch.relu, F.sigmoid, F.tanh, F.softmax, F.log_softmax,
        *_both("relu", "sigmoid", "tanh", "softmax", "log_softmax", "exp", "sqrt", "rsqrt", "relu_", "sigmoid_",
               "tanh_"), torch.relu_, F.relu_, F.elu_, F.leaky_relu_)
def output(op: Op, ctx: Context) -> list[Stored]:
    x = op.args[0]
    return [keep(op.output, f"{op.name} output", "its derivative is a function of its output")] if _grad(x) else []


_INPLACE = {F.relu: 1, F.relu6: 1, F.hardswish: 1, F.hardsigmoid: 1, F.silu: 1, F.leaky_relu: 2, F.elu: 2,
            F.hardtanh: 3}
_KEEPS_RESULT_IN_PLACE = {F.relu, F.leaky_relu, F.elu}


@_saved(*_INPLACE, F.gelu, *_both("abs", "clamp", "clip", "clamp_min", "clamp_max", "pow", "square", "var"),
        T.__pow__, T.__abs__)
def activation(op: Op, ctx: Context) -> list[Stored]:
    x = op.args[0]
    if not _grad(x, *op.args[1:], *op.kwargs.values()):
        return []
    index = _INPLACE.get(op.func)
    inplace = index is not None and bool(_get(op, index, "inplace", False))
    if not inplace:
        if op.func is F.relu:
            return [keep(op.output, "relu output", "its derivative is 1[y > 0]")]
        return [keep(x, f"{op.name} input", "its derivative is a function of its input")]
    if op.func in _KEEPS_RESULT_IN_PLACE:
        return [keep(op.output, f"in-place {op.name} output", "its derivative is a function of its output")]
    return [copy_of(x, f"in-place {op.name}: a copy of its input",
                    "autograd keeps the original values an in-place call overwrites")]


def _operands(op: Op, a, b, what: str) -> list[Stored]:
    out = []
    if _grad(a) and isinstance(b, TensorInfo):
        out.append(keep(b, f"{what}: the other operand", "d(a b)/da = b"))
    if _grad(b) and isinstance(a, TensorInfo):
        out.append(keep(a, f"{what}: the other operand", "d(a b)/db = a"))
    return out


@_saved(*_both("mul", "multiply", "matmul", "bmm", "mm"), T.__mul__, T.__rmul__, T.__matmul__)
def product(op: Op, ctx: Context) -> list[Stored]:
    return _operands(op, op.args[0], _get(op, 1, "other"), op.name)


@_saved(*_both("mul_"), T.__imul__)
def product_in_place(op: Op, ctx: Context) -> list[Stored]:
    a, b = op.args[0], _get(op, 1, "other")
    out = [keep(b, "mul_: the other operand", "d(a b)/da = b")] if _grad(a) and isinstance(b, TensorInfo) else []
    if _grad(b):
        out.append(copy_of(a, "mul_: a copy of the original a", "d(a b)/db = a, and a is overwritten"))
    return out


@_saved(*_both("div", "divide", "true_divide"), T.__truediv__)
def quotient(op: Op, ctx: Context) -> list[Stored]:
    a, b = op.args[0], _get(op, 1, "other")
    if not isinstance(b, TensorInfo) or not _grad(a, b):
        return []
    out = [keep(b, "div: the divisor", "d(a / b) needs b")]
    if _grad(b) and isinstance(a, TensorInfo):
        out.append(keep(a, "div: the dividend", "d(a / b)/db = -a / b^2"))
    return out


@_saved(*_both("div_"), T.__itruediv__)
def quotient_in_place(op: Op, ctx: Context) -> list[Stored]:
    a, b = op.args[0], _get(op, 1, "other")
    if not isinstance(b, TensorInfo) or not _grad(a, b):
        return []
    out = [keep(b, "div_: the divisor", "d(a / b) needs b")]
    if _grad(b):
        out.append(copy_of(a, "div_: a copy of the original a", "d(a / b)/db needs a, which is overwritten"))
    return out


@_saved(T.__rtruediv__)
def reciprocal(op: Op, ctx: Context) -> list[Stored]:
    x = op.args[0]  # the divisor: c / x is computed as c * reciprocal(x)
    return [copy_of(x, "c / x: reciprocal(x)", "d(1/x) = -(1/x)^2")] if _grad(x) else []


@_saved(*_both("maximum", "minimum"))
def extremum(op: Op, ctx: Context) -> list[Stored]:
    a, b = op.args[0], op.args[1]
    if not _grad(a, b):
        return []
    return [keep(t, f"{op.name}: operand", "which operand won") for t in (a, b) if isinstance(t, TensorInfo)]


@_saved(torch.where, T.where)
def where(op: Op, ctx: Context) -> list[Stored]:
    condition = op.args[0]
    if not _grad(*op.args[1:]) or not isinstance(condition, TensorInfo):
        return []
    return [keep(condition, "where: the condition", "which side each gradient goes to")]


@_saved(*_both("amax", "amin", "std"))
def reduction_with_output(op: Op, ctx: Context) -> list[Stored]:
    x = op.args[0]
    if not _grad(x):
        return []
    return [keep(x, f"{op.name} input", "which elements the result came from"),
            keep(op.output, f"{op.name} output", "compared with the input in backward")]


@_saved(*_both("max", "min"))
def extreme_along(op: Op, ctx: Context) -> list[Stored]:
    x, out = op.args[0], op.output
    if not _grad(x):
        return []
    if isinstance(out, tuple):  # over a dim: (values, indices)
        return [keep(out[1], f"{op.name} indices", "where each extreme came from (int64)")]
    if len(op.args) > 1 and isinstance(op.args[1], TensorInfo):  # max(a, b): elementwise
        return extremum(op, ctx)
    return [keep(x, f"{op.name} input", "which element was the extreme"), keep(out, f"{op.name} output", "")]


def _window_inputs(op: Op) -> list[TensorInfo]:
    return [op.args[0]] if _grad(op.args[0]) else []


@_saved(F.avg_pool1d, F.avg_pool2d)
def avg_pool(op: Op, ctx: Context) -> list[Stored]:
    return [keep(x, "avg_pool input", "stock avg_pool keeps x (its backward only needs the shape)")
            for x in _window_inputs(op)]


@_saved(F.adaptive_avg_pool1d, F.adaptive_avg_pool2d)
def adaptive_avg_pool(op: Op, ctx: Context) -> list[Stored]:
    if all(int(d) == 1 for d in op.output.shape[2:]):
        return []  # global pooling is a mean
    return [keep(x, "adaptive_avg_pool input", "its backward takes x") for x in _window_inputs(op)]


@_saved(F._max_pool1d, F._max_pool2d, F.max_pool1d, F.max_pool2d, F.max_pool1d_with_indices,
        F.max_pool2d_with_indices, F._adaptive_max_pool2d, F.adaptive_max_pool2d, F.adaptive_max_pool2d_with_indices)
def max_pool(op: Op, ctx: Context) -> list[Stored]:
    if not _grad(op.args[0]):
        return []
    out = op.output[0] if isinstance(op.output, tuple) else op.output
    indices = Stored("argmax indices", "where each maximum came from (int64)", per_sample=out.numel * 8) \
        if out.storage_batched else Stored("argmax indices", "(int64)", fixed=out.numel * 8)
    if isinstance(op.output, tuple):  # the indices are returned: that tensor is the one kept
        indices = keep(op.output[1], "argmax indices", "where each maximum came from (int64)")
    return [keep(op.args[0], f"{op.name} input", "max_pool backward takes x"), indices]


@_saved(F.pad)
def pad(op: Op, ctx: Context) -> list[Stored]:
    mode = _get(op, 2, "mode", "constant")
    if mode in ("constant", "circular") or not _grad(op.args[0]):
        return []
    return [keep(op.args[0], f"{mode} pad input", "its backward takes x")]


@_saved(F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout)
def dropout(op: Op, ctx: Context) -> list[Stored]:
    x = op.args[0]
    p, training = _get(op, 1, "p", 0.5), _get(op, 2, "training", True)
    if not (training and p > 0 and _grad(x)):
        return []
    feature = op.func in (F.dropout1d, F.dropout2d, F.dropout3d, F.feature_alpha_dropout)
    numel = math.prod(x.shape[:2]) if feature else x.numel
    size = numel * (1 if ctx.device == "cuda" and not feature else x.dtype.itemsize)
    return [Stored("dropout mask", "dx = dy * mask / (1 - p)", per_sample=size) if x.storage_batched else
            Stored("dropout mask", "dx = dy * mask / (1 - p)", fixed=size)]


@_saved(F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d)
def convolution(op: Op, ctx: Context) -> list[Stored]:
    x, w, b = op.args[0], op.args[1], _get(op, 2, "bias")
    if not _grad(x, w, b):
        return []
    return [keep(x, f"{op.name} input", "dW = dy * x; stock conv keeps x whenever it has a backward"),
            keep(w, f"{op.name} weight", "dx = dy * W (a computed weight is not a parameter)")]


@_saved(F.linear)
def linear(op: Op, ctx: Context) -> list[Stored]:
    x, w = op.args[0], op.args[1]
    out = [keep(x, "linear input", "dW = dy^T x")] if _grad(w) else []
    if _grad(x):
        out.append(keep(w, "linear weight", "dx = dy W (a computed weight is not a parameter)"))
    return out


def _stats(x: TensorInfo, per_sample_values: int, fixed_values: int, what: str) -> Stored:
    size = x.dtype.itemsize
    return Stored(what, "statistics of this input, for dx", per_sample=per_sample_values * size,
                  fixed=fixed_values * size)


@_saved(F.batch_norm)
def batch_norm(op: Op, ctx: Context) -> list[Stored]:
    x, running_mean, running_var = op.args[0], _get(op, 1, "running_mean"), _get(op, 2, "running_var")
    weight, bias, training = _get(op, 3, "weight"), _get(op, 4, "bias"), _get(op, 5, "training", False)
    if not _grad(x, weight, bias):
        return []
    out = [keep(t, "batch_norm " + what, "stock batch_norm keeps it whenever it has a backward")
           for t, what in ((x, "input"), (weight, "weight"), (running_mean, "running mean"),
                           (running_var, "running var")) if isinstance(t, TensorInfo)]
    if training or running_mean is None:
        channels = x.shape[1]
        out.append(Stored("batch mean and 1/std", "statistics of this batch, for dx",
                          fixed=2 * channels * x.dtype.itemsize))
    return out


@_saved(F.group_norm)
def group_norm(op: Op, ctx: Context) -> list[Stored]:
    x, groups, weight, bias = op.args[0], _get(op, 1, "num_groups"), _get(op, 2, "weight"), _get(op, 3, "bias")
    if not _grad(x, weight, bias):
        return []
    out = [keep(t, f"group_norm {what}", "x_hat is recomputed from x") for t, what in ((x, "input"), (weight, "weight"))
           if isinstance(t, TensorInfo)]
    return out + [_stats(x, 2 * groups, 0, "group mean and 1/std")]


@_saved(F.layer_norm)
def layer_norm(op: Op, ctx: Context) -> list[Stored]:
    x, shape = op.args[0], _get(op, 1, "normalized_shape")
    weight, bias = _get(op, 2, "weight"), _get(op, 3, "bias")
    if not _grad(x, weight, bias):
        return []
    n = len(shape) if isinstance(shape, (tuple, list)) else 1
    rows = math.prod(x.shape[:-n])
    out = [keep(t, f"layer_norm {what}", "x_hat is recomputed from x")
           for t, what in ((x, "input"), (weight, "weight"), (bias, "bias")) if isinstance(t, TensorInfo)]
    stats = 2 * rows
    return out + [_stats(x, stats, 0, "mean and 1/std per row") if x.storage_batched else _stats(x, 0, stats, "mean and 1/std")]
