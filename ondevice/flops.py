"""FLOPs of one training step, forward and backward, counted by PyTorch (chapter 3, "Top-K blocks").

:func:`training_flops` runs one forward and one backward pass of a copy of the model under
:class:`torch.utils.flop_counter.FlopCounterMode`, which counts the floating-point operations of
every convolution and matrix product that autograd really executes (a multiply-add is 2 FLOPs;
norms, activations and other elementwise operations are not counted, as in the papers' FLOP
figures). Because the count follows autograd, it includes exactly the backward work a transfer
method leaves: a frozen conv whose input needs a gradient computes ``dx`` but not ``dW``; below
the lowest trainable layer nothing runs backward at all (MobileTL's saving from fine-tuning only
the top K blocks).

One correction to the library's formulas (torch 2.13): for a *grouped* convolution (a depthwise
conv has ``groups = channels``) ``torch.utils.flop_counter`` counts the weight gradient as if
the conv were dense, ``groups`` times too many FLOPs; the input gradient and the forward are
right. :data:`FLOP_FORMULAS` divides that term by ``groups``; the same correction is proposed
upstream in pytorch/pytorch pull request 183405. ``tests/test_flops.py`` checks the corrected
count against the definition (the weight gradient of a conv costs what its forward costs).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten


def _conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation,
                        transposed, _output_padding, groups, output_mask, out_shape=None, **kwargs) -> int:
    """``aten.convolution_backward``: the library's formula, weight-gradient term / ``groups``."""
    def library(mask):
        return flop_counter.conv_backward_flop(
            grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
            _output_padding, groups, mask, out_val=out_shape)

    flops = library([output_mask[0], False, False])
    if output_mask[1]:
        flops += library([False, True, False]) // groups
    return flops


def _raw(fn):
    fn._get_raw = False  # FlopCounterMode wraps it to receive shapes
    return fn


FLOP_FORMULAS = {aten.convolution_backward: _raw(_conv_backward_flop)}


@dataclass(frozen=True)
class TrainingFlops:
    """FLOPs of one training step on a batch: ``forward`` + ``backward`` = :attr:`total`."""

    forward: int
    backward: int

    @property
    def total(self) -> int:
        return self.forward + self.backward

    def g(self, name: str = "total") -> float:
        """A field in GFLOPs (10^9)."""
        return getattr(self, name) / 1e9


def count_flops() -> FlopCounterMode:
    """A silent :class:`FlopCounterMode` with the grouped-convolution correction."""
    return FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS)


def training_flops(model: nn.Module, input_shape, *, dtype: torch.dtype = torch.float32) -> TrainingFlops:
    """FLOPs of a forward and a backward pass of ``model`` on an input of ``input_shape``
    (N, C, H, W), with the trainable set ``model`` has now (``requires_grad``).

    The step runs on a deep copy (the model, its statistics and gradients stay untouched), in
    eval mode (BatchNorm in training mode would need more than one value per channel at batch
    1; the counted operations are the same in both modes), on random input on the model's
    device. The backward pass starts from ``output.sum()``; nothing runs backward when no
    parameter trains.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    shape = tuple(input_shape)
    if len(shape) != 4 or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise ValueError(f"input_shape must be (batch, channels, height, width) of positive ints, "
                         f"got {input_shape!r}")
    twin = copy.deepcopy(model).eval()
    first = next(twin.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    x = torch.randn(shape, dtype=dtype, device=device)
    with count_flops() as forward:
        out = twin(x)
    backward = 0
    if out.requires_grad:
        with count_flops() as counter:
            out.sum().backward()
        backward = counter.get_total_flops()
    return TrainingFlops(forward.get_total_flops(), backward)


__all__ = ["FLOP_FORMULAS", "TrainingFlops", "count_flops", "training_flops"]
