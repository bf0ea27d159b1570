"""The backward-pass memory equations, one layer type at a time (chapter 1, sections 2a and 2b:
``book/01_memory/02_equations`` and ``book/01_memory/02b_side_by_side``).

For every layer type the book studies, one function gives two byte counts for a given answer to
"which of the input x, the weight W (or scale gamma) and the bias b (or shift beta) need a
gradient?":

- what the mathematics of the backward pass needs (the quantities its formulas read), and
- what stock PyTorch keeps (which :func:`study` asserts against ``ondevice.memory.measure``).

Every count is on one bench activation of shape ``(N, C, H, W)`` in float32, ``BYTES`` bytes per
element (the book's s). For the norm layers a count is a pair: the part that grows with the
activation, and the per-channel or per-(sample, group) statistics.

    >>> needs, keeps = conv2d(grad_x=True, grad_W=False, grad_b=True)   # bias-only training
    >>> needs, keeps
    (0, 3072)
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import torch
from torch import nn

from .memory import estimate, measure

N, C, H, W = 2, 6, 8, 8  # batch, channels, height, width of the bench activation
BYTES = 4  # bytes per float32 element
G = 3  # GroupNorm groups on the bench
D, D_OUT = C * H * W, 5  # input and output features of the bench's linear layer
WINDOW = 2  # pooling window side k
P_DROP = 0.5  # dropout rate
ELEMENTS = N * C * H * W


# ---- the equations: (what the math needs, what stock PyTorch keeps), in bytes -------------------

def linear(grad_x, grad_W, grad_b):
    """Section 1: only dL/dW = dy^T x reads an activation, and PyTorch saves x only for it."""
    needs = BYTES * N * D if grad_W else 0
    keeps = BYTES * N * D if grad_W else 0
    return needs, keeps


def conv2d(grad_x, grad_W, grad_b):
    """Section 2 (also depthwise): dL/dW reads x; PyTorch keeps x whenever any gradient flows."""
    needs = BYTES * ELEMENTS if grad_W else 0
    keeps = BYTES * ELEMENTS if (grad_x or grad_W or grad_b) else 0
    return needs, keeps


def _normalizing(statistics, grad_x, grad_gamma, grad_beta):
    """A norm with batch statistics (``statistics`` mean/std pairs): dx reads x_hat and 1/std,
    dgamma reads x_hat, dbeta nothing; PyTorch keeps x and mean, 1/std whenever a gradient flows."""
    needs = (BYTES * ELEMENTS if (grad_x or grad_gamma) else 0, BYTES * statistics if grad_x else 0)
    any_grad = grad_x or grad_gamma or grad_beta
    keeps = (BYTES * ELEMENTS, 2 * BYTES * statistics) if any_grad else (0, 0)
    return needs, keeps


def batchnorm_train(grad_x, grad_gamma, grad_beta):
    """Section 3, batch statistics: one mean and 1/std per channel."""
    return _normalizing(C, grad_x, grad_gamma, grad_beta)


def batchnorm_eval(grad_x, grad_gamma, grad_beta):
    """Section 3, frozen statistics: an affine map; only dgamma reads x_hat."""
    needs = BYTES * ELEMENTS if grad_gamma else 0
    keeps = BYTES * ELEMENTS if (grad_x or grad_gamma or grad_beta) else 0
    return needs, keeps


def groupnorm(grad_x, grad_gamma, grad_beta):
    """Section 4: batch-norm's equation with statistics per (sample, group)."""
    return _normalizing(N * G, grad_x, grad_gamma, grad_beta)


def relu(grad_x):
    """Section 5: f'(x) = 1[y > 0], one bit; PyTorch keeps the output y."""
    return (ELEMENTS / 8 if grad_x else 0), (BYTES * ELEMENTS if grad_x else 0)


def relu6(grad_x):
    """Section 5: f'(x) = 1[0 < x < 6], one bit; PyTorch keeps the input x."""
    return (ELEMENTS / 8 if grad_x else 0), (BYTES * ELEMENTS if grad_x else 0)


def sigmoid(grad_x):
    """Section 5: f'(x) = y (1 - y) reads the output y."""
    return (BYTES * ELEMENTS if grad_x else 0), (BYTES * ELEMENTS if grad_x else 0)


def hardswish(grad_x):
    """Section 5: f'(x) is linear in x on (-3, 3) and reads x."""
    return (BYTES * ELEMENTS if grad_x else 0), (BYTES * ELEMENTS if grad_x else 0)


def avg_pool(grad_x):
    """Section 6: dx spreads dy over each window, from the shape alone; PyTorch keeps x."""
    return 0, (BYTES * ELEMENTS if grad_x else 0)


def global_avg_pool(grad_x):
    """Section 6: a mean over the map; PyTorch keeps nothing."""
    return 0, 0


def max_pool(grad_x):
    """Section 6: where each window's maximum was, log2(k^2) bits per output; PyTorch keeps x and
    an int64 index per output."""
    outputs = N * C * (H // WINDOW) * (W // WINDOW)
    needs = math.log2(WINDOW * WINDOW) / 8 * outputs if grad_x else 0
    keeps = BYTES * ELEMENTS + 8 * outputs if grad_x else 0
    return needs, keeps


def upsample(grad_x):
    """Section 6: a fixed linear map, dx = U^T dy; nothing is kept."""
    return 0, 0


def dropout(grad_x):
    """Section 6: dx = dy * m / (1 - p) needs the 0/1 mask m, one bit; PyTorch on the CPU keeps
    the float noise m / (1 - p)."""
    return (ELEMENTS / 8 if grad_x else 0), (BYTES * ELEMENTS if grad_x else 0)


# ---- the bench ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerEquation:
    """One layer type on the bench: how to build it, its parameters by symbol, its equation."""

    name: str
    build: Callable[[], nn.Module]
    params: dict  # symbol -> parameter name, e.g. {"W": "weight", "b": "bias"}
    equation: Callable
    flat_input: bool = False  # the layer reads the activation flattened to N x D

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) if self.flat_input else x

    def flags(self):
        """Every answer to "does x, and each parameter, need a gradient?", x first."""
        return list(itertools.product([False, True], repeat=1 + len(self.params)))


WEIGHT_BIAS = {"W": "weight", "b": "bias"}
SCALE_SHIFT = {"γ": "weight", "β": "bias"}

EQUATIONS = {e.name: e for e in [
    LayerEquation("Linear", lambda: nn.Linear(D, D_OUT), WEIGHT_BIAS, linear, flat_input=True),
    LayerEquation("Conv2d", lambda: nn.Conv2d(C, 4, 3, padding=1), WEIGHT_BIAS, conv2d),
    LayerEquation("Conv2d (depthwise)", lambda: nn.Conv2d(C, C, 3, padding=1, groups=C), WEIGHT_BIAS, conv2d),
    LayerEquation("BatchNorm2d (train)", lambda: nn.BatchNorm2d(C), SCALE_SHIFT, batchnorm_train),
    LayerEquation("BatchNorm2d (eval)", lambda: nn.BatchNorm2d(C).eval(), SCALE_SHIFT, batchnorm_eval),
    LayerEquation("GroupNorm", lambda: nn.GroupNorm(G, C), SCALE_SHIFT, groupnorm),
    LayerEquation("ReLU", nn.ReLU, {}, relu),
    LayerEquation("ReLU6", nn.ReLU6, {}, relu6),
    LayerEquation("Sigmoid", nn.Sigmoid, {}, sigmoid),
    LayerEquation("Hardswish", nn.Hardswish, {}, hardswish),
    LayerEquation("AvgPool2d", lambda: nn.AvgPool2d(WINDOW), {}, avg_pool),
    LayerEquation("AdaptiveAvgPool2d(1)", lambda: nn.AdaptiveAvgPool2d(1), {}, global_avg_pool),
    LayerEquation("MaxPool2d", lambda: nn.MaxPool2d(WINDOW), {}, max_pool),
    LayerEquation("Upsample (bilinear)", lambda: nn.Upsample(scale_factor=2, mode="bilinear"), {}, upsample),
    LayerEquation("Dropout", lambda: nn.Dropout(P_DROP), {}, dropout),  # training mode, on the CPU
]}


def total(count) -> float:
    """A count is a byte count, or a pair (activation-sized part, statistics)."""
    return sum(count) if isinstance(count, tuple) else count


def kept(layer: nn.Module, inputs: torch.Tensor, *, grad_x: bool, trainable=()):
    """What autograd keeps for ``layer(inputs)`` when the input needs a gradient (``grad_x``) and
    exactly the parameters named in ``trainable`` train (``ondevice.memory.measure``)."""
    for name, p in layer.named_parameters():
        p.requires_grad_(name in trainable)
    return measure(layer, inputs.detach().requires_grad_(grad_x))


def trainable_names(entry: LayerEquation, flags) -> set:
    """The parameter names that train under ``flags`` (x's flag first)."""
    return {name for name, on in zip(entry.params.values(), flags[1:]) if on}


def study(entry: LayerEquation, x: torch.Tensor, *, layer: nn.Module | None = None, show: bool = True):
    """Run the layer under every answer to "what needs a gradient?", measure what autograd keeps,
    and assert, row by row: measured = the PyTorch count, and the math's count <= measured.
    ``layer``: the module to run (default: a fresh ``entry.build()``). Returns the rows
    (flags, math bytes, PyTorch bytes, measured bytes) and prints them when ``show``."""
    layer = entry.build() if layer is None else layer
    inputs = entry.inputs(x)
    symbols = ["x", *entry.params]
    rows = []
    for flags in entry.flags():
        measured = kept(layer, inputs, grad_x=flags[0], trainable=trainable_names(entry, flags)).saved_activations
        needs, keeps = (total(c) for c in entry.equation(*flags))
        if measured != keeps:
            raise AssertionError(f"{entry.name}, flags {flags}: measured {measured} B, formula {keeps} B")
        if needs > measured:
            raise AssertionError(f"{entry.name}, flags {flags}: the math needs {needs} B > measured {measured} B")
        rows.append((flags, needs, keeps, measured))
    if show:
        print(entry.name)
        print(" ".join(f"{sym:>3}" for sym in symbols) + f"  {'math needs':>10}  {'PyTorch keeps':>13}  {'measured':>8}")
        for flags, needs, keeps, measured in rows:
            marks = " ".join(f"{'yes' if on else '-':>3}" for on in flags)
            print(f"{marks}  {needs:>10g}  {keeps:>13}  {measured:>8}")
    return rows


def activation_part(count, elements: int) -> Fraction:
    """Bytes per element of the activation-sized part of a count (statistics left out)."""
    part = count[0] if isinstance(count, tuple) else count
    return Fraction(part) / elements


def setting_flags(entry: LayerEquation, setting: str):
    """Setting "A" (bias-only: x, b and beta need gradients, W and gamma frozen) or "B" (everything)."""
    if setting not in ("A", "B"):
        raise ValueError(f"setting must be 'A' or 'B', got {setting!r}")
    return (True, *(setting == "B" or sym in ("b", "β") for sym in entry.params))


def library_check(entry: LayerEquation, flags) -> int:
    """Put the layer behind a 1x1 conv whose bias trains exactly when the layer's input must need a
    gradient, and assert that ``estimate`` attributes to the layer the bytes of the PyTorch count,
    and that the model's estimated total equals the measured one. Returns the layer's bytes."""
    feeder = nn.Conv2d(C, C, 1)
    feeder.weight.requires_grad_(False)
    feeder.bias.requires_grad_(flags[0])
    layer = entry.build()
    chain = [feeder, nn.Flatten(), layer] if entry.flat_input else [feeder, layer]
    model = nn.Sequential(*chain)
    for name, on in zip(entry.params.values(), flags[1:]):
        getattr(layer, name).requires_grad_(on)
    report = estimate(model, (N, C, H, W))
    layer_bytes = sum(row.saved for row in report.layers if row.name == str(len(chain) - 1))
    _, keeps = entry.equation(*flags)
    if layer_bytes != total(keeps):
        raise AssertionError(f"{entry.name}, flags {flags}: the rules give {layer_bytes} B, the formula {total(keeps)} B")
    measured = measure(model, torch.randn(N, C, H, W)).saved_activations
    if report.saved_activations != measured:
        raise AssertionError(f"{entry.name}, flags {flags}: estimate {report.saved_activations} B, measured {measured} B")
    return layer_bytes
