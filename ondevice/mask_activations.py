"""Activations that keep a 1-bit mask for backward, and the Hard-Swish surrogate (chapter 3).

MobileTL (Chiang et al., AAAI 2023, §3) stores, for every activation layer of a fine-tuned
block, only a binary mask: enough to compute the input gradient exactly for ReLU and ReLU6 (their
derivative is 0 or 1) and approximately for Hard-Swish (its derivative takes a continuum of
values, so one bit can only select one of two levels). The paper calls the approximation "a
signed function" and does not publish its threshold or levels; the choice below is ours.

- :class:`MaskReLU`, :class:`MaskReLU6`, :class:`MaskHardswish`, :class:`MaskHardsigmoid`: drop-in
  modules. Their forward equals the stock activation; for backward they save ``ceil(numel / 32)`` int32 words (the mask
  packed by :func:`kernels.bits.pack_bits`), nothing else. All activation math (forward, mask
  predicate, gradient from the mask) is :mod:`kernels.activations`, the book's one definition.
- :func:`l2_optimal_surrogate`: the two-level approximation ``s`` of the Hard-Swish derivative
  ``h'`` that minimises ``E[(h'(X) - s(X))^2]`` for ``X ~ N(mean, std^2)`` (chapter 3, section
  "Binary-mask activations"); :func:`surrogate_error` is that expected squared error.
- :data:`HARDSWISH_L2`: the L2-optimal surrogate for a standard normal input (the distribution
  of a BatchNorm output whose statistics match the data and whose affine parameters are 1 and 0):
  threshold 0 (by symmetry: ``h'(x) - 1/2`` is odd), levels about 0.24 and 0.76.
- :data:`MOBILETL_SURROGATE`: **our choice** for MobileTL mode, :data:`kernels.activations.STEP`,
  the plain step at 0 (ReLU's derivative; the "signed function" of the paper's wording). Both
  candidates use the same bit ``z > 0``, the same memory and the same compute. Chapter 3
  measures them on a real forward pass: the L2-optimal one gives each layer's input gradient a
  higher cosine similarity with the true one, but the step gives the fine-tuned blocks' *weight*
  gradients (what the optimizer uses) a higher one at the headline K = 5 and keeps their scale.
  The reason: a weight gradient multiplies the error of ``s`` by inputs correlated with ``z``,
  and the step's regression slope on ``z`` (``E[s z] = 0.40``) is closer to the true one
  (``E[h' z] = 0.33``) than the L2-optimal one's (0.21). The choice also needs no assumption
  about the input distribution.

Derivation (the notebook repeats it). For a threshold ``t`` the best levels are conditional
means, ``a = E[h'(X) | X <= t]`` and ``b = E[h'(X) | X > t]``, and the remaining error is
``E[h'^2] - P(X <= t) a^2 - P(X > t) b^2``. With ``h'(x) = (2x + 3) / 6`` on ``(-3, 3)``, 0 below
and 1 above, every term is a Gaussian partial moment (closed form in ``Phi`` and ``phi``); the
threshold is then found by a one-dimensional search. At the optimum ``h'(t) = (a + b) / 2`` (the
Lloyd-Max condition): the boundary sits where the true derivative is halfway between the levels.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from kernels import activations as act
from kernels.activations import STEP, Surrogate
from kernels.bits import pack_bits, unpack_bits

# ---------------------------------------------------------------------------------------------
# The surrogate: closed-form Gaussian moments of the Hard-Swish derivative
# ---------------------------------------------------------------------------------------------

_KNOTS = (-3.0, 3.0)  # where h' changes formula: 0 | (2x + 3) / 6 | 1


def _phi(u: float) -> float:
    return 0.0 if math.isinf(u) else math.exp(-0.5 * u * u) / math.sqrt(2 * math.pi)


def _cdf(u: float) -> float:
    return 0.5 * (1.0 + math.erf(u / math.sqrt(2.0)))


def _moments(u1: float, u2: float) -> tuple[float, float, float]:
    """``(int phi, int u phi, int u^2 phi)`` over ``(u1, u2)``, standard normal ``phi``."""
    m0 = _cdf(u2) - _cdf(u1)
    m1 = _phi(u1) - _phi(u2)
    tail = (lambda u: 0.0 if math.isinf(u) else u * _phi(u))
    m2 = m0 - (tail(u2) - tail(u1))  # int u^2 phi = Phi(u) - u phi(u)
    return m0, m1, m2


def _partial(lo: float, hi: float, mean: float, std: float) -> tuple[float, float, float]:
    """``(P, E[h' 1], E[h'^2 1])`` over ``lo < X <= hi`` for ``X ~ N(mean, std^2)``."""
    p = g1 = g2 = 0.0
    edges = (-math.inf, *_KNOTS, math.inf)
    for piece, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        a, b = max(a, lo), min(b, hi)
        if a >= b:
            continue
        m0, m1, m2 = _moments((a - mean) / std, (b - mean) / std)
        p += m0
        if piece == 1:  # h' = alpha + beta u with x = mean + std u
            alpha, beta = (2 * mean + 3) / 6, std / 3
            g1 += alpha * m0 + beta * m1
            g2 += alpha * alpha * m0 + 2 * alpha * beta * m1 + beta * beta * m2
        elif piece == 2:  # h' = 1
            g1 += m0
            g2 += m0
    return p, g1, g2


def _check_normal(mean: float, std: float) -> None:
    if not math.isfinite(mean):
        raise ValueError(f"mean must be a finite number, got {mean!r}")
    if not (math.isfinite(std) and std > 0):
        raise ValueError(f"std must be a finite number > 0, got {std!r}")


def surrogate_error(surrogate: Surrogate, mean: float = 0.0, std: float = 1.0) -> float:
    """``E[(h'(X) - s(X))^2]`` for the Hard-Swish derivative ``h'``, the two-level ``surrogate``
    ``s`` and ``X ~ N(mean, std^2)``, in closed form."""
    _check_normal(mean, std)
    t, a, b = surrogate.threshold, surrogate.low, surrogate.high
    p_lo, g1_lo, g2_lo = _partial(-math.inf, t, mean, std)
    p_hi, g1_hi, g2_hi = _partial(t, math.inf, mean, std)
    return (g2_lo - 2 * a * g1_lo + a * a * p_lo) + (g2_hi - 2 * b * g1_hi + b * b * p_hi)


def best_levels(threshold: float, mean: float = 0.0, std: float = 1.0) -> Surrogate:
    """The levels that minimise the error for a given threshold: the conditional means of
    ``h'(X)`` below and above it."""
    _check_normal(mean, std)
    p_lo, g_lo, _ = _partial(-math.inf, threshold, mean, std)
    p_hi, g_hi, _ = _partial(threshold, math.inf, mean, std)
    low = g_lo / p_lo if p_lo > 0 else 0.0
    high = g_hi / p_hi if p_hi > 0 else 1.0
    return Surrogate(float(threshold), float(low), float(high))


def l2_optimal_surrogate(mean: float = 0.0, std: float = 1.0, *, tol: float = 1e-10) -> Surrogate:
    """The two-level surrogate of the Hard-Swish derivative with the least expected squared
    error for inputs ``X ~ N(mean, std^2)``: levels from :func:`best_levels`, threshold by a grid
    over ``mean +- 6 std`` refined by golden-section search (the error is smooth in ``t``)."""
    _check_normal(mean, std)

    def error(t: float) -> float:
        return surrogate_error(best_levels(t, mean, std), mean, std)

    grid = [mean + std * (-6 + 12 * i / 480) for i in range(481)]
    k = min(range(len(grid)), key=lambda i: error(grid[i]))
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    c, d = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fc, fd = error(c), error(d)
    while hi - lo > tol * max(1.0, std):
        if fc <= fd:
            hi, d, fd = d, c, fc
            c = hi - ratio * (hi - lo)
            fc = error(c)
        else:
            lo, c, fc = c, d, fd
            d = lo + ratio * (hi - lo)
            fd = error(d)
    return best_levels((lo + hi) / 2, mean, std)


HARDSWISH_L2 = l2_optimal_surrogate()  # computed, not typed in: threshold 0, levels ~0.24 / ~0.76
MOBILETL_SURROGATE = STEP  # OUR choice for MobileTL mode (chapter 3, "Binary-mask activations", says why)
SURROGATES = {"step": STEP, "l2": HARDSWISH_L2}


def check_surrogate(surrogate) -> Surrogate:
    """``surrogate`` itself if it is a :class:`~kernels.activations.Surrogate`, or the one named
    by a key of :data:`SURROGATES`."""
    if isinstance(surrogate, Surrogate):
        return surrogate
    if isinstance(surrogate, str) and surrogate in SURROGATES:
        return SURROGATES[surrogate]
    raise ValueError(f"surrogate must be a kernels.activations.Surrogate or one of "
                     f"{tuple(SURROGATES)}, got {surrogate!r}")


# ---------------------------------------------------------------------------------------------
# The autograd function and the modules
# ---------------------------------------------------------------------------------------------


class MaskActivationFunction(torch.autograd.Function):
    """``y = f(z)``; saves only the packed mask ``kernels.activations.mask_bits(z)`` (int32
    words); backward: ``dz = kernels.activations.backward_from_mask(dy, mask)``. On CUDA the
    mask is packed and read by the Triton kernels of :mod:`kernels.bits`; elsewhere by the torch
    twins, chunk by chunk (:func:`kernels.activations.packed_mask`), even with
    ``TRITON_INTERPRET=1``: they are fast on a CPU."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, activation: str, surrogate: Surrogate) -> torch.Tensor:
        if z.is_cuda:
            words = pack_bits(act.mask_bits(z, activation, surrogate))
        else:
            words = act.packed_mask(z, activation, surrogate)
        ctx.save_for_backward(words)
        ctx.shape, ctx.activation, ctx.surrogate = z.shape, activation, surrogate
        return act.forward(z, activation)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: torch.Tensor):
        (words,) = ctx.saved_tensors
        if dy.is_cuda:
            mask = unpack_bits(words, math.prod(ctx.shape)).view(ctx.shape)
            return act.backward_from_mask(dy, mask, ctx.activation, ctx.surrogate), None, None
        return act.backward_from_words(dy, words, ctx.activation, ctx.surrogate), None, None


def mask_activation(z: torch.Tensor, activation: str, surrogate: Surrogate = STEP) -> torch.Tensor:
    """Functional form: ``f(z)`` that keeps a 1-bit mask when a gradient is needed (and
    nothing, with the stock forward, when it is not)."""
    act.check_activation(activation)
    if isinstance(z, torch.Tensor) and z.requires_grad and torch.is_grad_enabled():
        return MaskActivationFunction.apply(z, activation, surrogate)
    # no backward needed, or a shape-only tensor of the memory engine's trace: stock forward
    return act.forward(z, activation)


class MaskActivation(nn.Module):
    """Base class: an activation that keeps one bit per element for backward."""

    activation: str = ""
    exact: bool = True  # the mask gives the true derivative (False: a surrogate)

    def __init__(self):
        super().__init__()
        self.surrogate = STEP

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return mask_activation(z, self.activation, self.surrogate)


class MaskReLU(MaskActivation):
    """ReLU with a 1-bit mask ``z > 0``; its gradient is exact."""

    activation = "relu"


class MaskReLU6(MaskActivation):
    """ReLU6 with a 1-bit mask ``0 < z < 6``; its gradient is exact (the derivative is 0 or 1)."""

    activation = "relu6"


class MaskHardsigmoid(MaskActivation):
    """Hard-Sigmoid with a 1-bit mask ``-3 < z < 3``; its gradient is exact (the derivative is 0
    or 1/6). MobileNetV3's squeeze-excite gate."""

    activation = "hardsigmoid"


class MaskHardswish(MaskActivation):
    """Hard-Swish with a 1-bit mask ``z > surrogate.threshold``; its gradient is the two-level
    ``surrogate`` (default :data:`MOBILETL_SURROGATE`, our choice), an approximation."""

    activation = "hardswish"
    exact = False

    def __init__(self, surrogate: Surrogate | str = MOBILETL_SURROGATE):
        super().__init__()
        self.surrogate = check_surrogate(surrogate)

    def extra_repr(self) -> str:
        s = self.surrogate
        return f"threshold={s.threshold:.4g}, low={s.low:.4g}, high={s.high:.4g}"


MASK_FOR = {nn.ReLU: MaskReLU, nn.ReLU6: MaskReLU6, nn.Hardswish: MaskHardswish, nn.Hardsigmoid: MaskHardsigmoid}
MASK_ACTIVATIONS = (MaskReLU, MaskReLU6, MaskHardswish, MaskHardsigmoid)


def to_mask_activation(module: nn.Module, surrogate: Surrogate | str = MOBILETL_SURROGATE) -> MaskActivation:
    """The mask version of a stock ``nn.ReLU`` / ``nn.ReLU6`` / ``nn.Hardswish`` (``surrogate``
    is used by Hard-Swish only); a mask activation is returned with Hard-Swish's surrogate set."""
    surrogate = check_surrogate(surrogate)
    if isinstance(module, MaskHardswish):
        return MaskHardswish(surrogate)
    if isinstance(module, MaskActivation):
        return module
    cls = MASK_FOR.get(type(module))
    if cls is None:
        names = ", ".join(f"nn.{t.__name__}" for t in MASK_FOR)
        raise TypeError(f"no 1-bit mask activation for {type(module).__name__}; supported: {names}")
    return cls(surrogate) if cls is MaskHardswish else cls()


__all__ = ["HARDSWISH_L2", "MASK_ACTIVATIONS", "MOBILETL_SURROGATE", "MaskActivation",
           "MaskActivationFunction", "MaskHardsigmoid", "MaskHardswish", "MaskReLU", "MaskReLU6", "SURROGATES",
           "best_levels", "check_surrogate", "l2_optimal_surrogate", "mask_activation",
           "surrogate_error", "to_mask_activation"]
