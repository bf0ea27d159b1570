"""What stock PyTorch keeps for backward, layer type by layer type (chapter 1, section 2).

Each rule reads one traced module call (:class:`~ondevice.memory.trace.Call`): the shapes of its
input and output, whether its input needs a gradient, and which of its parameters train
(``requires_grad``). It returns what autograd keeps for that layer's backward, and why. The
equations behind them (notation page: ``s`` bytes per element, ``x`` input, ``y`` output):

=====================  ========================================================================
layer                  kept for backward when a gradient flows through it
=====================  ========================================================================
Conv2d                 ``x`` (needed for dW; stock PyTorch keeps it even when W is frozen)
WSConv2d               ``x`` and the standardized weight; if W trains also ``W - mean`` and std
Linear                 ``x``, only if W trains (dW = dy^T x; db and dx need no activation)
BatchNorm2d            ``x``, plus per-channel mean and 1/std in training mode (even if frozen)
GroupNorm              ``x``, plus per-(sample, group) mean and 1/std
ReLU, Sigmoid, Tanh    the output ``y`` (ReLU's backward only needs the sign: 1 bit would do)
ReLU6, Hardswish, ...  the input ``x`` (full precision, although ReLU6's backward needs 1 bit);
                       in place (``inplace=True``) a copy of ``x``: the values it overwrites
                       (ReLU and LeakyReLU in place keep their output, the same storage)
Dropout (training)     the scaled noise: ``s`` bytes per element on CPU, a 1-byte mask on CUDA
AvgPool2d              ``x``;  MaxPool2d: ``x`` and int64 indices of ``y``'s size
AdaptiveAvgPool2d(1)   nothing (a mean); other output sizes keep ``x``
Upsample, Flatten,     nothing (so a LiteResidual's bilinear upsampling keeps nothing)
Identity, residual add
SqueezeExcite          its product ``x * gate`` keeps ``gate`` for dx and ``x`` for d(gate)
=====================  ========================================================================

"A gradient flows through" a layer when its input needs a gradient or one of its own parameters
trains. A tensor kept by two layers (ReLU's output is the next conv's input) is one storage and
is counted once by :func:`ondevice.memory.estimate`. Each rule is checked against
:func:`ondevice.memory.measure` in the tests and in chapter 1.

The ``masked`` profile applies these same rules to the model as :func:`ondevice.kernelize` leaves
it: every stock layer replaced by its lean twin (1-bit masks, frozen layers that keep nothing;
the twins' table is in ``ondevice/lean/kernelize.py``, their rules in ``lean_rules.py``). It is
what the book's modules really keep, so it equals measurement of the kernelized model. Masks
are packed 32 per int32 word (``4 * ceil(numel / 32)`` bytes, as :mod:`kernels.bits` packs them).

MobileTL's modules (chapter 3) are lean already (``kernelize`` leaves them), and the tests
measure them: a mask activation
(:mod:`ondevice.mask_activations`) keeps its packed mask; a :class:`FrozenStatsBatchNorm2d`
(shift-only norm) keeps its per-channel scale, plus its input if gamma trains.

A module type without a rule needs none: the trace records the functions its own forward calls
and :mod:`.op_rules` says what each keeps (a custom block, an ``nn.Sequential`` subclass, a
subclass of ``nn.ReLU``); what neither covers is measured (:mod:`.fallback`) and named
``measured, no rule`` in the report. A rule is needed only where a module's forward keeps
something its functions do not show (a custom ``torch.autograd.Function``)::

    @ondevice.memory.rules.rule(MyLayer)
    def my_layer(call, ctx):
        return [keep(call.input, "input", "why it is needed")] if flows(call) else []

:func:`container` declares that a module's own forward keeps nothing (skipping its calls'
rules: faster, and what the zoo's blocks do).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from kernels.checks import MODES  # noqa: F401  (the masked profile's two backward modes, as kernelize's)

from ..blocks import (ConvNet, ConvNormAct, FrozenStatsBatchNorm2d, InvertedResidual,
                      LiteResidual, SkipBlock, SqueezeExcite)
from ..mask_activations import MASK_ACTIVATIONS
from ..models.groupnorm import WSConv2d
from ..models.resnet import Bottleneck
from .trace import Call, TensorInfo


@dataclass(frozen=True)
class Stored:
    """One tensor a layer keeps for backward.

    Bytes are ``per_sample * batch + fixed``: activations scale with the batch, tensors shaped
    like parameters (standardized weights, BatchNorm statistics) do not. ``storage`` identifies a
    layer's input or output, which another layer may keep too (then it is counted once).
    """

    what: str
    why: str
    per_sample: int = 0
    fixed: int = 0
    storage: int | None = None
    bits: int = 0  # per-sample bits of a packed mask: ceil(bits * batch / (8 word)) words
    word: int = 1  # bytes per word of the packed mask (4: int32 words, as kernels.bits packs)

    def nbytes(self, batch: int) -> int:
        return self.per_sample * batch + self.fixed + self.word * -(-self.bits * batch // (8 * self.word))


@dataclass(frozen=True)
class Context:
    """What the rules may depend on besides the call: the profile the rules serve ("pytorch", or
    "masked" for a kernelized model; the rules are the same) and the device type ("cpu" or
    "cuda")."""

    profile: str = "pytorch"
    device: str = "cpu"


Rule = Callable[[Call, Context], list[Stored]]
RULES: dict[type, Rule] = {}
MEASURED = "measured, no rule"  # how the report names what the fallback measured (:mod:`.fallback`)


def rule(*types: type):
    """Register the decorated function as the rule for modules of exactly these types."""

    def register(fn: Rule) -> Rule:
        for t in types:
            RULES[t] = fn
        return fn

    return register


def container(*types: type) -> None:
    """Register module types whose own forward keeps nothing (it only calls its children,
    adds, flattens or reshapes)."""
    for t in types:
        RULES[t] = lambda call, ctx: []


def rule_for(module: nn.Module) -> Rule:
    """The rule for ``module``'s calls: its type's registered rule; for a type without one, the
    rules of the functions its own forward called (:func:`own_calls`); for a call the fallback
    measured, the measurement."""
    return functools.partial(_of_call, RULES.get(type(module), own_calls))


def _of_call(rule: Rule, call: Call, ctx: Context) -> list[Stored]:
    return call.measured if call.measured is not None else rule(call, ctx)


def own_calls(call: Call, ctx: Context) -> list[Stored]:
    """What a module without a rule keeps: what each function its own forward called keeps
    (:mod:`.op_rules`), or what the fallback measured for a function without a rule."""
    from .shapes import SAVED_RULES  # noqa: PLC0415

    out = []
    for op in call.ops or ():
        out += op.saved if op.saved is not None else SAVED_RULES[op.func](op, ctx)
    return out


def keep(t: TensorInfo, what: str, why: str) -> Stored:
    """Keep a layer's input or output tensor: its whole storage (a view keeps its base), per
    sample when it holds the batch (the trace runs at batch 1), nothing for a parameter."""
    if t.held:
        return Stored(what, why + " (a parameter or buffer: not an activation)", storage=t.storage)
    if t.storage_batched:
        return Stored(what, why, per_sample=t.kept_nbytes, storage=t.storage)
    return Stored(what, why, fixed=t.kept_nbytes, storage=t.storage)


def trains(module: nn.Module, name: str) -> bool:
    p = getattr(module, name, None)
    return isinstance(p, torch.Tensor) and p.requires_grad


def flows(call: Call) -> bool:
    """A gradient flows through the layer: its input needs one or one of its parameters trains."""
    return call.input.requires_grad or any(p.requires_grad for p in call.module.parameters(False))


MASK_WORD = 4  # bytes: masks are packed 32 elements per int32 word (kernels.bits)


def mask(t: TensorInfo, why: str) -> Stored:
    """A 1-bit-per-element mask of ``t``, packed in int32 words: ``4 * ceil(numel / 32)`` bytes
    for the whole batch (what :func:`kernels.bits.pack_bits` returns)."""
    return Stored("1-bit mask", why, bits=t.numel, word=MASK_WORD)


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


@rule(nn.Conv2d)
def conv2d(call: Call, ctx: Context) -> list[Stored]:
    if not flows(call):
        return []
    m = call.module
    if m.padding_mode == "zeros":
        return [keep(call.input, "input x", "dW = dy * x; stock conv keeps x whenever it has a backward")]
    x = call.input  # padding_mode reflect / replicate / circular: the conv runs on a padded copy
    ph, pw = (m.padding if isinstance(m.padding, tuple) else (0, 0))
    padded = x.nbytes // max(x.shape[2] * x.shape[3], 1) * (x.shape[2] + 2 * ph) * (x.shape[3] + 2 * pw)
    out = [Stored(f"{m.padding_mode}-padded input", "dW = dy * x_padded", per_sample=padded)]
    if m.padding_mode != "circular" and x.requires_grad:
        out.append(keep(x, "input x", f"{m.padding_mode} padding's backward takes x"))
    return out


@rule(WSConv2d)
def ws_conv2d(call: Call, ctx: Context) -> list[Stored]:
    if not flows(call):
        return []
    w = call.module.weight
    size = w.numel() * w.element_size()
    out = conv2d(call, ctx) + [
        Stored("standardized weight", "a computed tensor, not a parameter: dx = dy * W_hat",
               fixed=size)]
    if w.requires_grad:
        out += [Stored("W - mean", "d(standardization)/dW", fixed=size),
                Stored("std per output channel", "d(standardization)/dW",
                       fixed=w.shape[0] * w.element_size())]
    return out


@rule(nn.Linear)
def linear(call: Call, ctx: Context) -> list[Stored]:
    if not trains(call.module, "weight"):
        return []  # db = sum(dy) and dx = dy W need no activation
    return [keep(call.input, "input x", "dW = dy^T x")]


def _stat_bytes(call: Call, ctx: Context, norm: str) -> int:
    """Bytes per saved statistic: the input's dtype on CPU (measured: 2 for bfloat16); on CUDA
    BatchNorm keeps float32 statistics for 16-bit inputs (not yet measured here)."""
    size = call.input.dtype.itemsize
    return max(size, 4) if ctx.device == "cuda" and norm == "batch" else size


@rule(nn.BatchNorm2d)
def batch_norm(call: Call, ctx: Context) -> list[Stored]:
    if not flows(call):
        return []
    m = call.module
    frozen_statistics = not call.training and m.track_running_stats
    out = [keep(call.input, "input x", "stock BatchNorm keeps x whenever it has a backward")]
    if not frozen_statistics:
        out.append(Stored("batch mean and 1/std", "statistics of this batch, for dx",
                          fixed=2 * m.num_features * _stat_bytes(call, ctx, "batch")))
    return out


@rule(nn.GroupNorm)
def group_norm(call: Call, ctx: Context) -> list[Stored]:
    if not flows(call):
        return []
    return [keep(call.input, "input x", "x_hat = (x - mean) / std is recomputed from x"),
            Stored("group mean and 1/std", "per (sample, group) statistics, for dx",
                   per_sample=2 * call.module.num_groups * _stat_bytes(call, ctx, "group"))]


@rule(nn.ReLU, nn.Sigmoid, nn.Tanh)
def keeps_output(call: Call, ctx: Context) -> list[Stored]:
    if not call.input.requires_grad:
        return []
    return [keep(call.output, "output y", "the derivative is a function of y")]


@rule(nn.ReLU6, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.LeakyReLU, nn.SiLU, nn.GELU)
def keeps_input(call: Call, ctx: Context) -> list[Stored]:
    if not call.input.requires_grad:
        return []
    if getattr(call.module, "inplace", False):
        if isinstance(call.module, nn.LeakyReLU):  # leaky_relu_ keeps its result (negative slope > 0)
            return [keep(call.output, "output y", "in place: the derivative is read from the sign of y")]
        x = call.input
        return [Stored("a copy of the input x", "in place: autograd keeps the values it overwrites",
                       per_sample=x.nbytes if x.storage_batched else 0,
                       fixed=0 if x.storage_batched else x.nbytes)]
    return [keep(call.input, "input x", "the derivative is a function of x")]


@rule(*MASK_ACTIVATIONS)
def mask_activation(call: Call, ctx: Context) -> list[Stored]:
    """MobileTL's activations (:mod:`ondevice.mask_activations`): the packed mask and nothing
    else, in both profiles (that is what their autograd function saves)."""
    if not call.input.requires_grad:
        return []
    why = ("the derivative is exactly 0 or 1 by the bit" if call.module.exact else
           "the surrogate derivative: low or high by the bit (chapter 3)")
    return [mask(call.input, why)]


@rule(FrozenStatsBatchNorm2d)
def frozen_stats_batch_norm(call: Call, ctx: Context) -> list[Stored]:
    """MobileTL's norms 1 and 2, an affine map ``x * scale + shift`` (both profiles: that is
    what its plain-torch forward saves)."""
    if not flows(call):
        return []
    m = call.module
    size = m.num_features * m.weight.element_size()
    out = []
    if call.input.requires_grad:
        out.append(Stored("per-channel scale", "dx = dy * gamma / sqrt(running_var + eps)", fixed=size))
    if trains(m, "weight"):
        out += [keep(call.input, "input x", "d(gamma) = sum(dy * x_hat)"),
                Stored("1/sqrt(running_var + eps)", "d(scale)/d(gamma)", fixed=size)]
    return out


@rule(nn.Dropout)
def dropout(call: Call, ctx: Context) -> list[Stored]:
    if not (call.training and call.module.p > 0 and call.input.requires_grad):
        return []
    per_element = 1 if ctx.device == "cuda" else call.input.dtype.itemsize
    return [Stored("dropout mask", "dx = dy * mask / (1 - p)",
                   per_sample=call.input.numel * per_element)]


@rule(nn.AvgPool2d)
def avg_pool(call: Call, ctx: Context) -> list[Stored]:
    if not call.input.requires_grad:
        return []
    return [keep(call.input, "input x", "stock avg_pool2d keeps x (its backward only needs the shape)")]


@rule(nn.MaxPool2d)
def max_pool(call: Call, ctx: Context) -> list[Stored]:
    if not call.input.requires_grad:
        return []
    return [keep(call.input, "input x", "max_pool2d backward takes x"),
            Stored("argmax indices", "where each maximum came from (int64)", per_sample=_numel(call.output.shape) * 8)]


@rule(nn.AdaptiveAvgPool2d)
def adaptive_avg_pool(call: Call, ctx: Context) -> list[Stored]:
    if not call.input.requires_grad or tuple(call.output.shape[2:]) == (1, 1):
        return []  # global pooling is a mean: its backward needs only the shape
    return [keep(call.input, "input x", "adaptive_avg_pool2d backward takes x")]


@rule(SqueezeExcite)
def squeeze_excite(call: Call, ctx: Context) -> list[Stored]:
    x, gate = call.input, call.child("gate").output
    out = []
    if x.requires_grad:
        out.append(keep(gate, "gate", "d(x * gate)/dx = gate"))
    if gate.requires_grad:
        out.append(keep(x, "input x", "d(x * gate)/d(gate) = x"))
    return out


container(nn.Sequential, nn.ModuleList, nn.Identity, nn.Flatten, nn.Upsample, ConvNormAct,
          InvertedResidual, LiteResidual, SkipBlock, ConvNet, Bottleneck)

from . import op_rules  # noqa: E402, F401  (the functions' rules, for modules without one)
