"""Frozen convolutions and linear layers that keep nothing but their weight (chapter 4, "Putting
the kernels in a network").

A layer ``y = W * x + b`` whose weight is frozen needs no activation for its backward pass:

    dx = W^T * dy   (a transposed convolution, ``F.conv_transpose2d``),
    db = sum(dy)    (over every axis but the channel).

Stock PyTorch keeps ``x`` anyway whenever a gradient flows through a convolution (its
``convolution`` node saves the input for a weight gradient it may be asked for). The autograd
functions here save only the weight, a parameter that is in memory anyway, so the bytes kept are
what the ``masked`` profile charges a frozen layer: nothing.

Two storage choices for the frozen weight (``bits``):

- 32: the weight as it is, float32 (for a weight-standardized conv, the standardized weight,
  computed once here instead of at every step);
- 8: int8 with one float32 scale per output channel, ``W ~ scale_o * q``, ``q`` in [-127, 127]
  (symmetric, round to nearest: ``scale_o = max |W_o| / 127``, so the error of any element is at
  most ``scale_o / 2``). The layer dequantizes it on the fly, in the forward and again in the
  backward, one layer at a time: the float copy is a temporary of the weight's size.

:func:`quantize` / :func:`dequantize` are that storage; :class:`FrozenConv2d` and
:class:`FrozenLinear` the layers, built from a stock one with ``from_module``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair
from torch.overrides import handle_torch_function, has_torch_function_variadic

from ..models.groupnorm import WSConv2d

BITS = (32, 8)  # storage of a frozen weight: float32, or int8 + a float32 scale per output channel
QMAX = 127  # symmetric int8 range [-127, 127]


def check_bits(bits) -> int:
    if isinstance(bits, bool) or bits not in BITS:
        raise ValueError(f"frozen_bits must be one of {BITS}, got {bits!r}")
    return bits


def quantize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q, scale)``: int8 ``q`` and float32 ``scale`` of shape (out, 1, ..., 1) with
    ``weight ~ scale * q`` (module docstring). An all-zero output channel gets scale 1."""
    w = weight.detach().float()
    peak = w.abs().amax(dim=tuple(range(1, w.dim())), keepdim=True)
    scale = torch.where(peak > 0, peak / QMAX, torch.ones_like(peak))
    q = torch.round(w / scale).clamp_(-QMAX, QMAX).to(torch.int8)
    return q, scale


def dequantize(q: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """The float weight of the stored one: ``q`` itself when it is not quantized (``scale`` None)."""
    if scale is None:
        return q
    w = q.to(scale.dtype).mul_(scale)  # one float copy (q * scale would cast q into a temporary first)
    return w if w.dtype == dtype else w.to(dtype)


def _store(module: nn.Module, weight: torch.Tensor, bits: int) -> None:
    """Set ``module.weight`` (and ``weight_scale`` for int8) as frozen parameters: the engine
    counts parameters, and these are what the layer really holds."""
    if bits == 32:
        module.weight = weight if isinstance(weight, nn.Parameter) else nn.Parameter(weight, requires_grad=False)
        module.register_parameter("weight_scale", None)
    else:
        q, scale = quantize(weight)
        module.weight = nn.Parameter(q, requires_grad=False)
        module.weight_scale = nn.Parameter(scale, requires_grad=False)
    module.weight.requires_grad_(False)


def conv_padding(conv: nn.Conv2d) -> tuple[int, int]:
    """``conv``'s zero padding as two ints (``"same"`` / ``"valid"`` resolved), or a ValueError
    for what the backward of a twin cannot express (another ``padding_mode``, uneven padding)."""
    if conv.padding_mode != "zeros":
        raise ValueError(f"padding_mode={conv.padding_mode!r} is not supported (only 'zeros')")
    if conv.padding == "valid":
        return (0, 0)
    if conv.padding == "same":
        total = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]
        if any(t % 2 for t in total):
            raise ValueError(f"padding='same' with kernel {conv.kernel_size} pads unevenly: not supported")
        return tuple(t // 2 for t in total)
    return tuple(conv.padding)


def _check_frozen(module: nn.Module) -> None:
    if module.weight.requires_grad:
        raise ValueError(f"{type(module).__name__}'s weight must stay frozen: it keeps no input, so it cannot "
                         "give the weight a gradient. To train it, kernelize the stock model again after "
                         "choosing what trains")


def _output_padding(x_shape, y_shape, w_shape, stride, padding, dilation) -> tuple[int, int]:
    """The rows and columns a transposed convolution must add to give back ``x``'s size (a strided
    convolution drops the last ``(size + 2 padding - dilation (k - 1) - 1) % stride`` of them)."""
    return tuple(x_shape[2 + i] - ((y_shape[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (w_shape[2 + i] - 1) + 1)
                 for i in range(2))


class _FrozenConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, scale, bias, stride, padding, dilation, groups):
        w = dequantize(weight, scale, x.dtype)
        ctx.save_for_backward(weight, scale)  # parameters: nothing new is kept
        ctx.conv = (x.shape, stride, padding, dilation, groups)
        return F.conv2d(x, w, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, dy):
        weight, scale = ctx.saved_tensors
        shape, stride, padding, dilation, groups = ctx.conv
        dx = db = None
        if ctx.needs_input_grad[0]:  # dx = W^T * dy, from the weight alone: a transposed convolution
            w = dequantize(weight, scale, dy.dtype)
            dx = F.conv_transpose2d(dy, w, None, stride, padding, _output_padding(shape, dy.shape, w.shape, stride,
                                                                                 padding, dilation), groups, dilation)
        if ctx.needs_input_grad[3]:
            db = dy.sum(dim=(0, 2, 3))
        return dx, None, None, db, None, None, None, None


def frozen_conv2d(x, weight, scale, bias, stride=1, padding=0, dilation=1, groups=1):
    """``F.conv2d(x, dequantize(weight, scale), bias, ...)`` that keeps no activation for
    backward (module docstring). ``weight`` and ``scale`` must not require a gradient."""
    if has_torch_function_variadic(x, weight, scale, bias):  # the memory engine's shape trace
        return handle_torch_function(frozen_conv2d, (x, weight, scale, bias), x, weight, scale, bias,
                                     stride, padding, dilation, groups)
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    if torch.is_grad_enabled() and (x.requires_grad or (bias is not None and bias.requires_grad)):
        return _FrozenConv2d.apply(x, weight, scale, bias, stride, padding, dilation, groups)
    return F.conv2d(x, dequantize(weight, scale, x.dtype), bias, stride, padding, dilation, groups)


class FrozenConv2d(nn.Conv2d):
    """A conv with a frozen weight that keeps nothing for backward; ``bias`` may train.

    ``weight`` holds the stored weight (float32, or int8 with ``weight_scale``, see ``bits``);
    for a weight-standardized conv it is the standardized weight. Build it with
    :meth:`from_module`; ``padding_mode`` must be ``"zeros"``.
    """

    bits: int = 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_frozen(self)
        return frozen_conv2d(x, self.weight, self.weight_scale, self.bias, self.stride, self.padding,
                             self.dilation, self.groups)

    @classmethod
    def from_module(cls, conv: nn.Conv2d, bits: int = 32) -> "FrozenConv2d":
        """The twin of ``conv`` (an ``nn.Conv2d`` or :class:`WSConv2d` with a frozen weight),
        sharing its bias; the weight is stored at ``bits`` (32 shares ``conv``'s own weight)."""
        if not isinstance(conv, nn.Conv2d) or conv.weight.requires_grad:
            raise TypeError(f"needs an nn.Conv2d with a frozen weight, got {conv!r}")
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv_padding(conv),
                  conv.dilation, conv.groups, conv.bias is not None, device="meta")
        weight = conv.weight
        if isinstance(conv, WSConv2d):  # a constant: standardized once, here
            with torch.no_grad():
                weight = conv.standardized_weight()
        new.bits = check_bits(bits)
        _store(new, weight, new.bits)
        new.bias = conv.bias
        new.train(conv.training)
        return new

    def extra_repr(self) -> str:
        return super().extra_repr() + f", frozen, {self.bits}-bit"


class _FrozenLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, scale, bias):
        ctx.save_for_backward(weight, scale)  # parameters: nothing new is kept
        return F.linear(x, dequantize(weight, scale, x.dtype), bias)

    @staticmethod
    def backward(ctx, dy):
        weight, scale = ctx.saved_tensors
        dx = db = None
        if ctx.needs_input_grad[0]:  # dx = dy W
            dx = dy @ dequantize(weight, scale, dy.dtype)
        if ctx.needs_input_grad[3]:
            db = dy.reshape(-1, dy.shape[-1]).sum(dim=0)
        return dx, None, None, db


def frozen_linear(x, weight, scale, bias):
    """``F.linear(x, dequantize(weight, scale), bias)`` that keeps no activation for backward."""
    if has_torch_function_variadic(x, weight, scale, bias):
        return handle_torch_function(frozen_linear, (x, weight, scale, bias), x, weight, scale, bias)
    if torch.is_grad_enabled() and (x.requires_grad or (bias is not None and bias.requires_grad)):
        return _FrozenLinear.apply(x, weight, scale, bias)
    return F.linear(x, dequantize(weight, scale, x.dtype), bias)


class FrozenLinear(nn.Linear):
    """A linear layer with a frozen weight (float32, or int8 + ``weight_scale``) that keeps
    nothing for backward; ``bias`` may train. Build it with :meth:`from_module`."""

    bits: int = 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_frozen(self)
        return frozen_linear(x, self.weight, self.weight_scale, self.bias)

    @classmethod
    def from_module(cls, linear: nn.Linear, bits: int = 32) -> "FrozenLinear":
        if not isinstance(linear, nn.Linear) or linear.weight.requires_grad:
            raise TypeError(f"needs an nn.Linear with a frozen weight, got {linear!r}")
        new = cls(linear.in_features, linear.out_features, linear.bias is not None, device="meta")
        new.bits = check_bits(bits)
        _store(new, linear.weight, new.bits)
        new.bias = linear.bias
        new.train(linear.training)
        return new

    def extra_repr(self) -> str:
        return super().extra_repr() + f", frozen, {self.bits}-bit"


__all__ = ["BITS", "FrozenConv2d", "FrozenLinear", "QMAX", "check_bits", "conv_padding", "dequantize", "frozen_conv2d",
           "frozen_linear", "quantize"]
