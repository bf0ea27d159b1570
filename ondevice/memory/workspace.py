"""The backend's scratch memory, layer by layer: the named terms of the step model (chapter 5,
"Theory meets the allocator").

The saved tensors and gradients of a step follow from the mathematics; these bytes follow from
how the backend computes. Each rule below was read off the counting allocator
(:func:`ondevice.memory.measure_step`) one operator at a time, and ``tests/test_step_model.py``
measures it again. They hold for PyTorch's CPU backend (oneDNN) as shipped with torch 2.13; on
CUDA the step model has no workspace rule (cuDNN's are not modelled) and says so.

- **Convolutions, oneDNN's blocked layout.** oneDNN computes a convolution on tensors laid out in
  blocks of ``b`` channels (``b`` = 16 with AVX-512, 8 otherwise; a channel count is padded up to
  a whole block): it copies the input in (not for inputs of fewer than ``b`` channels, such as an
  image), writes a blocked output, copies it out, and copies the weight. (A frozen int8 weight is
  first dequantized: one float copy, whichever implementation runs.) With ``X``, ``Y``, ``W``
  the blocked sizes of input, output and weight, and ``x``, ``y`` the plain ones:

  ====================  ===========================================================================
  forward               ``max(X + Y + W, Y + y) - y`` beyond the output
  backward, dx only     ``max(Y + X + W, X + x) - x`` beyond dx (a transposed convolution)
  backward, dW          ``X + Y`` beyond dW, or ``W`` if larger; none for a depthwise conv with a
                        kernel of 5 or more (oneDNN's direct depthwise kernel)
  backward, dx and dW   the larger of the two
  ====================  ===========================================================================

- **BatchNorm's backward** (``native_batch_norm_backward``) allocates a scratch tensor the size of
  its input.
- **The book's mask twins** build and read their 1-bit masks in chunks of
  :data:`kernels.activations.CHUNK` elements: while packing, up to three boolean chunks (ReLU6 and
  Hard-Sigmoid compare twice); a fused norm whose exact backward needs the input gradient of the
  norm computes ``dz`` first, a tensor the size of the input.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from kernels import FrozenNormAct, GroupNormAct
from kernels.activations import CHUNK

from ..lean.frozen import FrozenConv2d, FrozenLinear
from ..lean.norms import BatchNormAct, LeanBatchNorm2d
from ..lean.ws_conv import LeanWSConv2d
from ..models.groupnorm import WSConv2d
from ..mask_activations import MaskActivation
from .trace import Call

NONE = (0, 0, 0)  # (bytes per sample, fixed bytes, bytes per sample capped at a fixed amount: (per, cap))


def block_channels() -> int:
    """oneDNN's channel block on this CPU: 16 with AVX-512, 8 otherwise."""
    return 16 if "AVX512" in torch.backends.cpu.get_cpu_capability() else 8


def _blocked(channels: int, block: int) -> int:
    return -(-channels // block) * block


@dataclass(frozen=True)
class ConvWork:
    """A convolution's scratch under either of the two CPU implementations PyTorch chooses from
    (``ConvParams::use_mkldnn``, also ``torch._C._select_conv_backend``): oneDNN when
    ``(a or batch >= 16 or threads > 1) and (b or batch > 1 or batch * chw > 20480)``, else its own
    ``slow_conv2d``. ``mkldnn`` and ``slow``: (bytes per sample, fixed bytes)."""

    a: bool  # strided, dilated or not 1 x 1
    b: bool  # grouped, or a kernel larger than 3 x 3 both ways
    chw: int  # elements per sample of the selecting input
    mkldnn: tuple[int, int]
    slow: tuple[int, int]
    then: int = 0  # fixed bytes of a later step of the same layer (weight standardization's backward)

    def uses_mkldnn(self, batch: int, threads: int) -> bool:
        return (self.a or batch >= 16 or threads > 1) and (self.b or batch > 1 or batch * self.chw > 20480)

    def bytes(self, batch: int, threads: int) -> int:
        per, fixed = self.mkldnn if self.uses_mkldnn(batch, threads) else self.slow
        return max(per * batch + fixed, self.then)


def _conv(call: Call, backward: bool) -> ConvWork:
    m = call.module
    block = block_channels()
    cin, cout = m.in_channels, m.out_channels
    x, y = call.input.nbytes, call.output.nbytes
    big_x = 0 if cin < block else x * _blocked(cin, block) // cin
    big_y = y * _blocked(cout, block) // cout
    big_w = m.weight.numel() * call.input.dtype.itemsize  # the float weight's blocked copy
    dequantized = big_w if isinstance(m, FrozenConv2d) and m.weight_scale is not None else 0  # int8 -> float
    kh, kw = m.kernel_size
    a = any(s > 1 for s in m.stride) or any(d > 1 for d in m.dilation) or (kh, kw) != (1, 1)
    b = m.groups > 1 or (kh > 3 and kw > 3)
    columns = cin * kh * kw * y // cout  # slow_conv2d's unfolded input: C kh kw values per output pixel
    pointwise = (kh, kw) == (1, 1) and not a and tuple(m.padding) == (0, 0)
    if not backward:
        return ConvWork(a, b, call.input.numel, (max(big_x + big_y, big_y + y) - y, big_w + dequantized),
                        (0 if pointwise else columns, dequantized))
    need_dx, need_dw = call.input.requires_grad, m.weight.requires_grad
    if isinstance(m, FrozenConv2d):  # dx by conv_transpose2d(dy, W): selected on dy
        return ConvWork(a, b, call.output.numel, (max(big_y + big_x, big_x + x) - x, big_w + dequantized),
                        (columns, dequantized))
    direct = m.groups == cin == cout and max(m.kernel_size) >= 5  # oneDNN's direct depthwise kernel
    dx = (max(big_y + big_x, big_x + x) - x, big_w) if need_dx else (0, 0)
    dw = (big_x + big_y, big_w) if need_dw and not direct else (0, 0)
    slow = (columns if need_dw and not pointwise else 0, 0)  # slow_conv2d: dx needs no scratch, dW the unfold
    return ConvWork(a, b, call.input.numel, (max(dx[0], dw[0]), max(dx[1], dw[1])), slow)


def _standardization(m: nn.Conv2d, backward: bool) -> tuple[int, int]:
    """Weight standardization's weight-sized temporaries: (during the convolution, in another step
    of the same layer). Forward: ``W - mean`` and ``W_hat`` while it standardizes, then ``W_hat``
    while the convolution runs.
    Backward of a trainable weight: :class:`LeanWSConv2d` recomputes ``W_hat`` for the convolution's
    backward, then holds it and one temporary while it turns dW_hat into dW in place; stock autograd's
    standardization backward holds four weight-sized tensors after the convolution's (``W_hat`` is
    one of its saved tensors, counted there). A frozen weight has no standardization backward."""
    w = m.weight.numel() * m.weight.element_size()
    if not backward:
        return w, 2 * w
    if not m.weight.requires_grad:
        return 0, 0
    return (w, 2 * w) if isinstance(m, LeanWSConv2d) else (0, 4 * w)


def _mask_chunks(call: Call, activation: str) -> tuple:
    """Boolean chunks while packing a mask: capped at three chunks."""
    copies = 3 if activation in ("relu6", "hardsigmoid") else 1
    return (0, 0, (copies * call.input.numel, copies * CHUNK))


def workspace(call: Call, backward: bool, device: str = "cpu"):
    """Backend scratch at a leaf call's forward or backward: a :class:`ConvWork` for a
    convolution, else (bytes per sample, fixed bytes, capped) with ``capped`` None or (bytes per
    sample, the most it can reach)."""
    if device != "cpu":
        return NONE
    m = call.module
    if isinstance(m, nn.Conv2d) and call.output is not None:
        flows = call.input.requires_grad or any(p.requires_grad for p in m.parameters(False))
        if backward and not flows:
            return NONE
        work = _conv(call, backward)
        if isinstance(m, WSConv2d) and not isinstance(m, FrozenConv2d):  # standardizing the weight
            during, then = _standardization(m, backward)
            work = replace(work, mkldnn=(work.mkldnn[0], work.mkldnn[1] + during),
                           slow=(work.slow[0], work.slow[1] + during), then=then)
        return work
    if isinstance(m, FrozenLinear) or isinstance(m, nn.Linear):
        return NONE
    fused = isinstance(m, (GroupNormAct, BatchNormAct, FrozenNormAct, MaskActivation))
    activation = getattr(m, "activation", None)
    if backward:
        if isinstance(m, nn.BatchNorm2d) and call.training and call.input.requires_grad:
            if getattr(m, "backward", "exact") == "detached":
                return NONE  # dx = gamma * rstd * dz, computed in place: no norm backward runs
            extra = call.input.nbytes  # native_batch_norm_backward's scratch
            if isinstance(m, BatchNormAct):
                extra += call.input.nbytes  # dz, before the norm's backward
            return (extra, 0, None)
        if isinstance(m, GroupNormAct) and m.backward == "exact" and call.input.requires_grad:
            return (call.input.nbytes, 0, None)  # dz, before the norm's backward
        return NONE
    if fused and activation is not None and (call.input.requires_grad or any(p.requires_grad for p in m.parameters(False))):
        return _mask_chunks(call, activation)
    return NONE


__all__ = ["ConvWork", "NONE", "block_channels", "workspace"]
