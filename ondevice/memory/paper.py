"""The ``paper`` profile: TinyTL's memory profiler rules, to reproduce the paper's tables.

TinyTL (Cai et al., NeurIPS 2020) reports *theoretical* training memory computed by a profiler
in its reference code. Its rules, per leaf layer at batch size 1 (chapter 1, "Whole networks",
reproduces TinyTL's Table 2 with them):

- conv and linear keep their full input (32 bit) only if their weight trains; a norm layer keeps
  its input only if its scale (gamma) trains; ReLU / ReLU6 / LeakyReLU keep 1 bit per element and
  Sigmoid / Tanh / Hard-Swish / Hard-Sigmoid 32 bits whenever the network is trained at all;
- the forward is replayed in order; before each leaf the running memory is that leaf's temporary
  buffer (input + output for linear, input + output / groups for conv, input for norms and
  activations) + everything kept so far + the input of the residual block it sits in; the peak
  is the largest such value;
- total = peak (batch 1) x batch size + parameter bytes (trainable 32 bit, frozen at
  ``frozen_param_bits``); gradients and optimizer state are not counted.

MobileTL's modules (chapter 3) fit these rules as they are: a frozen-statistics norm is a norm
whose gamma is frozen (nothing kept), and a mask activation is charged 1 bit per element, like
ReLU, whatever the activation (the point of keeping a mask).

These rules are optimistic in two places the book points out: ReLU6 is charged 1 bit even when
stock PyTorch keeps 32, and a norm with frozen gamma is charged nothing although its input
gradient needs the normalized input.

TinyTL's training script inserts the lite residual branches into the network *before* choosing
the method, so every row of its Table 2 (FT-Full and FT-Last included) was profiled on the
network with those branches present (frozen unless the method trains them). Profiled the same
way, these rules reproduce Table 2 within 1% (``tests/test_memory_estimate.py`` prints them);
without the branches, FT-Full and TinyTL-B come out 6-7% lower.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from kernels import FrozenNormAct, GroupNormAct

from ..blocks import InvertedResidual
from ..lean.norms import BatchNormAct
from ..mask_activations import MASK_ACTIVATIONS
from ..models.resnet import ResidualBlock
from .trace import Call

_CONV, _LINEAR = (nn.Conv2d,), (nn.Linear,)
_NORM = (nn.BatchNorm2d, nn.GroupNorm)
# MobileTL's mask activations (chapter 3) keep 1 bit per element by construction, Hard-Swish too:
# charged like ReLU (consistent with the per-block numbers of MobileTL's Fig. 1, chapter 3).
_ONE_BIT = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, *MASK_ACTIVATIONS)
_SMOOTH = (nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid)


@dataclass(frozen=True)
class PaperLayer:
    call: Call
    kept: float  # bytes kept for backward, batch 1
    temporary: float  # the leaf's temporary buffer, batch 1
    running: float  # temporary + kept so far + residual input: the value the peak is taken over


def _trains_weight(module: nn.Module) -> bool:
    w = getattr(module, "weight", None)
    return w is not None and w.requires_grad


def _residual(call: Call) -> bool:
    m = call.module
    return (isinstance(m, InvertedResidual) and m.use_residual) or isinstance(m, ResidualBlock)


def replay(root: Call, act_bytes: float = 4.0) -> list[PaperLayer]:
    """Replay the leaves of a batch-1 trace under the profiler's rules.

    The profiler's "backward needed" flag is true when any part of the network below its output
    layer trains (TinyTL's script sets it for every method but FT-Last): here, when a gradient
    reaches the input of any leaf layer.
    """
    backward = any(c.input.requires_grad for c in root.walk() if not c.children and c.inputs)
    layers: list[PaperLayer] = []
    state = {"kept": 0.0, "residual": 0.0}

    def visit(call: Call) -> None:
        if _residual(call):
            state["residual"] = call.input.numel * act_bytes
        if not call.children:
            leaf(call)
        for c in call.children:
            visit(c)
        if _residual(call):
            state["residual"] = 0.0  # as in the reference: reset, not restored

    def leaf(call: Call) -> None:
        m = call.module
        x = call.input.numel * act_bytes
        y = call.output.numel * act_bytes if call.output is not None else 0.0
        if isinstance(m, _CONV):
            kept, tmp = (x if _trains_weight(m) else 0.0), x + y // m.groups
        elif isinstance(m, _LINEAR):
            kept, tmp = (x if _trains_weight(m) else 0.0), x + y
        elif isinstance(m, (GroupNormAct, BatchNormAct)):  # a fused norm + activation: the norm's rule + 1 bit
            kept, tmp = (x if _trains_weight(m) else 0.0) + (call.input.numel / 8 if backward else 0.0), x
        elif isinstance(m, _NORM):
            kept, tmp = (x if _trains_weight(m) else 0.0), x
        elif isinstance(m, _ONE_BIT):
            kept, tmp = (call.input.numel / 8 if backward else 0.0), x
        elif isinstance(m, FrozenNormAct):  # a frozen-statistics norm (no gamma) + a 1-bit mask
            kept, tmp = (call.input.numel / 8 if backward else 0.0), x
        elif isinstance(m, _SMOOTH):
            kept, tmp = (x if backward else 0.0), x
        else:
            kept, tmp = 0.0, 0.0
        running = tmp + state["kept"] + state["residual"]
        state["kept"] += kept
        layers.append(PaperLayer(call, kept, tmp, running))

    visit(root)
    del visit  # a recursive closure is a reference cycle: drop it so no GC pause is needed
    return layers
