"""A trainable weight-standardized conv that keeps only its input (chapter 4, "Putting the
kernels in a network").

Weight standardization (chapter 2) computes ``W_hat = (W - mean) / s`` with
``s = sqrt(var + eps)`` per output channel before every convolution. Stock autograd keeps, for a
trainable ``W``, the input ``x`` (for ``dW_hat``), ``W_hat`` (for ``dx``), ``W - mean`` and ``s``
(for the standardization's own backward): three weight-sized tensors besides ``x``. Only ``x``
is an activation; the rest is a function of the parameter ``W``, so the backward can recompute it:

    dx = conv2d_input(W_hat, dy),   dW_hat = conv2d_weight(x, dy),
    dW = (dW_hat - mean(dW_hat) - W_hat * mean(dW_hat * W_hat)) / s,

with means over each output channel's ``(in / groups, kh, kw)`` (the vector-Jacobian product of a
normalisation, the same form as GroupNorm's in chapter 4). :class:`LeanWSConv2d` saves ``x`` and
the parameter ``W``, nothing else.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.modules.utils import _pair
from torch.overrides import handle_torch_function, has_torch_function_variadic

from ..models.groupnorm import WSConv2d, standardize
from .frozen import conv_padding


class _WSConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps, stride, padding, dilation, groups):
        need = ctx.needs_input_grad
        ctx.save_for_backward(x if need[1] else None, weight)  # W_hat is recomputed from W
        ctx.conv = (x.shape, eps, stride, padding, dilation, groups)
        return F.conv2d(x, standardize(weight, eps), bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        shape, eps, stride, padding, dilation, groups = ctx.conv
        need_dx, need_dw, need_db = ctx.needs_input_grad[:3]
        w_hat = standardize(weight, eps)
        source = x if x is not None else dy.new_empty(1).expand(shape)  # only its shape is read then
        dx, dw_hat, db = torch.ops.aten.convolution_backward(
            dy, source, w_hat, [w_hat.shape[0]] if need_db else None, stride, padding, dilation, False,
            [0, 0], groups, [need_dx, need_dw, need_db])
        dw = None
        if need_dw:  # in place on dW_hat: one weight-sized temporary (dW_hat * W_hat, for its mean)
            dims = (1, 2, 3)
            projection = (dw_hat * w_hat).mean(dims, keepdim=True)
            dw = dw_hat.sub_(dw_hat.mean(dims, keepdim=True)).addcmul_(w_hat, projection, value=-1)
            dw.div_(torch.sqrt(torch.var(weight, dim=dims, keepdim=True, unbiased=False) + eps))
        return dx, dw, db, None, None, None, None, None


def ws_conv2d(x, weight, bias, eps, stride=1, padding=0, dilation=1, groups=1):
    """``F.conv2d(x, standardize(weight, eps), bias, ...)`` that keeps only ``x`` for backward
    (module docstring)."""
    if has_torch_function_variadic(x, weight, bias):  # the memory engine's shape trace
        return handle_torch_function(ws_conv2d, (x, weight, bias), x, weight, bias, eps, stride, padding,
                                     dilation, groups)
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    params = [t for t in (weight, bias) if t is not None]
    if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params)):
        return _WSConv2d.apply(x, weight, bias, eps, stride, padding, dilation, groups)
    return F.conv2d(x, standardize(weight, eps), bias, stride, padding, dilation, groups)


class LeanWSConv2d(WSConv2d):
    """:class:`~ondevice.models.groupnorm.WSConv2d` whose backward recomputes the standardized
    weight: it keeps only its input (module docstring). Shares the weight and bias of the conv it
    is built from (:meth:`from_module`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ws_conv2d(x, self.weight, self.bias, self.eps, self.stride, self.padding, self.dilation, self.groups)

    @classmethod
    def from_module(cls, conv: WSConv2d) -> "LeanWSConv2d":
        if not isinstance(conv, WSConv2d):
            raise TypeError(f"needs a WSConv2d, got {type(conv).__name__}")
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv_padding(conv),
                  conv.dilation, conv.groups, conv.bias is not None, device="meta")
        new.eps = conv.eps
        new.weight, new.bias = conv.weight, conv.bias
        new.train(conv.training)
        return new


__all__ = ["LeanWSConv2d", "ws_conv2d"]
