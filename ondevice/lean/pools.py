"""Pooling layers that keep (almost) nothing for backward (chapter 4, "Putting the kernels in a
network").

- Average pooling is linear: its backward spreads ``dy`` evenly over each window and needs only
  the input's *shape*. Stock ``avg_pool2d`` keeps the whole input; :class:`LeanAvgPool2d` keeps
  nothing.
- Max pooling routes ``dy`` to the position of each window's maximum. Stock ``max_pool2d``
  keeps the input and the argmax as int64 *absolute* positions (8 bytes per output element).
  :class:`LeanMaxPool2d` keeps the argmax *within the window*, ``kh * kw`` values, as the
  smallest integer type that holds them (``uint8`` up to 16 x 16 windows: 1 byte per output
  element), and rebuilds the absolute positions in the backward:

      h = oh * stride - padding + (k // kw) * dilation,   w = ow * stride - padding + (k % kw) * dilation.

Both backward passes are PyTorch's own (``avg_pool2d_backward``,
``max_pool2d_with_indices_backward``), given a stand-in for the input that has its shape and no
storage (a one-element tensor expanded).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair
from torch.overrides import handle_torch_function, has_torch_function_variadic


def _stand_in(like: torch.Tensor, shape) -> torch.Tensor:
    """A tensor of ``shape`` without storage of its own (only its shape is read)."""
    return like.new_empty(1).expand(shape)


class _AvgPool2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, args):
        ctx.shape, ctx.args = x.shape, args
        return F.avg_pool2d(x, *args)

    @staticmethod
    def backward(ctx, dy):
        kernel, stride, padding, ceil_mode, count_include_pad, divisor = ctx.args
        dx = torch.ops.aten.avg_pool2d_backward(dy, _stand_in(dy, ctx.shape), kernel, stride, padding, ceil_mode,
                                                count_include_pad, divisor)
        return dx, None


def lean_avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                    divisor_override=None):
    """``F.avg_pool2d`` that keeps nothing for backward."""
    if has_torch_function_variadic(x):  # the memory engine's shape trace
        return handle_torch_function(lean_avg_pool2d, (x,), x, kernel_size, stride, padding, ceil_mode,
                                     count_include_pad, divisor_override)
    args = (_pair(kernel_size), _pair(stride if stride else kernel_size), _pair(padding), ceil_mode,
            count_include_pad, divisor_override)
    if torch.is_grad_enabled() and x.requires_grad:
        return _AvgPool2d.apply(x, args)
    return F.avg_pool2d(x, *args)


class LeanAvgPool2d(nn.AvgPool2d):
    """``nn.AvgPool2d`` that keeps nothing for backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lean_avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                               self.count_include_pad, self.divisor_override)

    @classmethod
    def from_module(cls, pool: nn.AvgPool2d) -> "LeanAvgPool2d":
        return cls(pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode, pool.count_include_pad,
                   pool.divisor_override)


def window_index_dtype(kernel_size) -> torch.dtype:
    """The smallest integer type that holds a position inside a ``kernel_size`` window."""
    kh, kw = _pair(kernel_size)
    return torch.uint8 if kh * kw <= 256 else torch.int16 if kh * kw <= 2**15 else torch.int32


def _output_origins(out_shape, stride, padding, device):
    """Top-left input row and column of every window: (OH, 1) and (1, OW)."""
    oh = torch.arange(out_shape[-2], device=device).view(-1, 1) * stride[0] - padding[0]
    ow = torch.arange(out_shape[-1], device=device).view(1, -1) * stride[1] - padding[1]
    return oh, ow


class _MaxPool2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, args):
        kernel, stride, padding, dilation, ceil_mode = args
        y, flat = F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode, return_indices=True)
        W = x.shape[-1]
        oh, ow = _output_origins(y.shape, stride, padding, x.device)
        local = ((flat // W - oh) // dilation[0]) * kernel[1] + (flat % W - ow) // dilation[1]
        ctx.save_for_backward(local.to(window_index_dtype(kernel)))
        ctx.shape, ctx.args = x.shape, args
        return y

    @staticmethod
    def backward(ctx, dy):
        (local,) = ctx.saved_tensors
        kernel, stride, padding, dilation, ceil_mode = ctx.args
        oh, ow = _output_origins(dy.shape, stride, padding, dy.device)
        k = local.long()
        flat = (oh + (k // kernel[1]) * dilation[0]) * ctx.shape[-1] + ow + (k % kernel[1]) * dilation[1]
        dx = torch.ops.aten.max_pool2d_with_indices_backward(dy, _stand_in(dy, ctx.shape), kernel, stride, padding,
                                                             dilation, ceil_mode, flat)
        return dx, None


def lean_max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """``F.max_pool2d`` that keeps only the argmax within each window (module docstring)."""
    if has_torch_function_variadic(x):
        return handle_torch_function(lean_max_pool2d, (x,), x, kernel_size, stride, padding, dilation, ceil_mode)
    args = (_pair(kernel_size), _pair(stride if stride else kernel_size), _pair(padding), _pair(dilation), ceil_mode)
    if torch.is_grad_enabled() and x.requires_grad:
        return _MaxPool2d.apply(x, args)
    return F.max_pool2d(x, *args)


class LeanMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` that keeps the argmax within each window, 1 byte per output element for
    windows up to 16 x 16 (module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lean_max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)

    @classmethod
    def from_module(cls, pool: nn.MaxPool2d) -> "LeanMaxPool2d":
        if pool.return_indices:
            raise ValueError("a max pool that returns its indices is left stock (its caller reads them)")
        return cls(pool.kernel_size, pool.stride, pool.padding, pool.dilation, False, pool.ceil_mode)


__all__ = ["LeanAvgPool2d", "LeanMaxPool2d", "lean_avg_pool2d", "lean_max_pool2d", "window_index_dtype"]
