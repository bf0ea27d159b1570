"""Shape rules of layers: convolution, linear, pooling, padding, upsampling, norms, dropout
(chapter 1, section 2; tensor arithmetic: :mod:`.shape_rules`, views: :mod:`.view_rules`).

Each checks that its input can work: the channels agree with the weight, and every window
(kernel, pooling) fits, else a :class:`~.shapes.ShapeError` says what the layer needs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .shape_rules import _new, _pair, _register
from .shapes import ShapeError, ShapeTensor


def _dropout(x, p=0.5, training=True, inplace=False):
    if not training or p == 0:
        return x
    return x if inplace else _new(x, x.shape)


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
        side = {2: "high", 3: "wide"}.get(dim, f"along dim {dim}")
        raise ShapeError(f"its {what} ({kernel} px, padding {padding}, dilation {dilation}) needs an input at "
                         f"least {need} px {side}, it gets {int(size)} px", dim, need)
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
