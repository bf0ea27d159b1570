"""Memory rules for the lean twins of :mod:`ondevice.lean` (chapter 4, "Putting the kernels in a
network"): what each twin's autograd function saves, read from the same plan functions the
twins obey (:func:`ondevice.lean.norms.saved_by_norm`, :func:`kernels.affine_act.saved_by_affine_act`).

=====================  ==========================================================================
twin                   kept for backward
=====================  ==========================================================================
FrozenConv2d,          nothing (its weight, and for int8 its scales, are parameters)
FrozenLinear
LeanWSConv2d           ``x`` when its weight trains (the standardized weight is recomputed)
LeanGroupNorm,         per :func:`~ondevice.lean.norms.saved_by_norm`: ``x``, the statistics
LeanBatchNorm2d,       (float32; GroupNorm: 2 G per sample, BatchNorm: 2 C), the packed mask. With
BatchNormAct           frozen running statistics (eval mode): the per-channel ``scale`` when
                       ``dx`` is needed (and the mask), or, when ``gamma`` trains, ``x``
LeanAvgPool2d          nothing
LeanMaxPool2d          the argmax within each window: 1 byte per output element up to 16 x 16
=====================  ==========================================================================

This module also teaches the shape trace (:mod:`.trace`) the twins' functions.
"""

from __future__ import annotations

import math

from torch import nn

from kernels.affine_act import saved_by_affine_act

from ..lean.frozen import FrozenConv2d, FrozenLinear, frozen_conv2d, frozen_linear
from ..lean.norms import BatchNormAct, LeanBatchNorm2d, LeanGroupNorm, lean_norm, saved_by_norm
from ..lean.pools import LeanAvgPool2d, LeanMaxPool2d, lean_avg_pool2d, lean_max_pool2d, window_index_dtype
from ..lean.ws_conv import LeanWSConv2d, ws_conv2d
from . import trace
from .rules import Context, Stored, _stat_bytes, keep, mask, rule, trains
from .trace import Call


@rule(FrozenConv2d, FrozenLinear, LeanAvgPool2d)
def keeps_nothing(call: Call, ctx: Context) -> list[Stored]:
    return []


@rule(LeanWSConv2d)
def lean_ws_conv(call: Call, ctx: Context) -> list[Stored]:
    if not trains(call.module, "weight"):
        return []
    return [keep(call.input, "input x", "dW_hat = dy * x; W_hat is recomputed from W in the backward")]


def _frozen_statistics(call: Call) -> bool:
    m = call.module
    return isinstance(m, nn.BatchNorm2d) and not call.training and m.running_mean is not None


@rule(LeanGroupNorm, LeanBatchNorm2d, BatchNormAct)
def lean_norm_rule(call: Call, ctx: Context) -> list[Stored]:
    m = call.module
    need_dx, need_dgamma, need_dbeta = call.input.requires_grad, trains(m, "weight"), trains(m, "bias")
    if _frozen_statistics(call):
        return _frozen_statistics_rule(call, ctx, need_dx, need_dgamma, need_dbeta)
    plan = saved_by_norm(m.activation if isinstance(m, BatchNormAct) else None, m.backward, m.surrogate
                         if isinstance(m, BatchNormAct) else None, need_dx, need_dgamma, need_dbeta)
    out = []
    if plan.x:
        out.append(keep(call.input, "input x", "x_hat for the exact dx and for d(gamma)"))
    if plan.mask:
        out.append(mask(call.input, f"{m.activation} derivative from 1 bit per element"))
    if plan.stats:
        if isinstance(m, nn.BatchNorm2d):
            out.append(Stored("batch mean and 1/std", "per-channel statistics, for dx",
                              fixed=2 * m.num_features * _stat_bytes(call, ctx, "batch")))
        else:
            out.append(Stored("group mean and 1/std", "per (sample, group) statistics, for dx",
                              per_sample=2 * m.num_groups * _stat_bytes(call, ctx, "group")))
    return out


def _frozen_statistics_rule(call, ctx, need_dx, need_dgamma, need_dbeta) -> list[Stored]:
    """A BatchNorm twin in eval mode (``_LeanBatchNorm._frozen_statistics``)."""
    m = call.module
    activation = getattr(m, "activation", None)
    z_needs_grad = need_dx or need_dgamma or need_dbeta
    scale = Stored("scale = gamma / sqrt(running_var + eps)", "dx = scale * dz",
                   fixed=m.num_features * m.running_var.element_size())
    if need_dgamma:  # stock eval-mode BatchNorm keeps x; then the activation
        out = [keep(call.input, "input x", "d(gamma) = sum(dz * x_hat)")]
    elif activation is not None and (activation != "hardswish" or m.surrogate is not None):
        plan = saved_by_affine_act(need_dx, need_dbeta)  # kernels.affine_act: mask and scale
        return ([mask(call.input, f"{activation} derivative from 1 bit per element")] if plan.mask else []) + \
            ([scale] if plan.scale else [])
    else:  # the affine map x * scale + shift keeps the scale for dx
        out = [scale] if need_dx else []
    if activation is None or not z_needs_grad:
        return out
    if activation == "hardswish" and m.surrogate is None:  # the true derivative: stock Hard-Swish keeps z
        return out + [Stored("activation input z", "the true Hard-Swish derivative is a function of z",
                             per_sample=call.input.nbytes)]
    return out + [mask(call.input, f"{activation} derivative from 1 bit per element")]


@rule(LeanMaxPool2d)
def lean_max_pool(call: Call, ctx: Context) -> list[Stored]:
    if not call.input.requires_grad:
        return []
    size = window_index_dtype(call.module.kernel_size).itemsize
    return [Stored("argmax within each window", "where each maximum came from",
                   per_sample=math.prod(call.output.shape) * size)]


trace.register_shape_rule(frozen_conv2d, lambda x, weight, scale, bias, *args: trace._conv2d(x, weight, bias, *args))
trace.register_shape_rule(ws_conv2d, lambda x, weight, bias, eps, *args: trace._conv2d(x, weight, bias, *args))
trace.register_shape_rule(frozen_linear, lambda x, weight, scale, bias: trace._linear(x, weight, bias))
trace.register_shape_rule(lean_norm, lambda x, weight, bias, *args, **kwargs: trace._new(x, x.shape, weight, bias))
trace.register_shape_rule(lean_avg_pool2d, trace._pool2d)
trace.register_shape_rule(lean_max_pool2d, trace._pool2d)

__all__ = ["lean_max_pool", "lean_norm_rule", "lean_ws_conv", "keeps_nothing"]
