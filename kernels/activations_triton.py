"""The activations of :mod:`kernels.activations`, as Triton device functions (chapter 4).

A Triton kernel cannot call torch, so the fused kernels need the activation math in Triton. This
module is its only Triton copy, and it follows :mod:`kernels.activations` line by line: the same
forward ``f(z)`` (NaN passes through, as in torch), the same 1-bit mask predicate, and the same
true derivative. Every kernel that uses it is tested against a torch twin built on
:mod:`kernels.activations`, so a difference between the two copies fails a test
(``tests/test_kernels_gn_act.py``, ``tests/test_kernels_affine_act.py``).

Activations are passed to kernels as a ``tl.constexpr`` code, :data:`CODES`.
"""

from __future__ import annotations

from .activations import ACTIVATIONS, check_activation

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton is pinned in requirements.txt
    triton = None

CODES = {name: code for code, name in enumerate(ACTIVATIONS)}  # relu 0, relu6 1, hardswish 2, hardsigmoid 3


def code(activation: str) -> int:
    """The ``tl.constexpr`` code of ``activation``."""
    return CODES[check_activation(activation)]


if triton is not None:

    @triton.jit
    def act_forward(z, ACT: tl.constexpr):
        """``f(z)`` in float32: relu, relu6, ``z * relu6(z + 3) / 6`` (hardswish) or
        ``relu6(z + 3) / 6`` (hardsigmoid). Clipping is written with comparisons, so that NaN
        passes through as in torch."""
        if ACT == 0:
            y = tl.where(z < 0.0, 0.0, z)
        elif ACT == 1:
            y = tl.where(z < 0.0, 0.0, tl.where(z > 6.0, 6.0, z))
        elif ACT == 2:
            y = z * tl.where(z + 3.0 < 0.0, 0.0, tl.where(z + 3.0 > 6.0, 6.0, z + 3.0)) / 6.0
        else:
            y = tl.where(z + 3.0 < 0.0, 0.0, tl.where(z + 3.0 > 6.0, 6.0, z + 3.0)) / 6.0
        return y

    @triton.jit
    def act_mask(
        z,  # float32 tile, the activation's input
        threshold,  # Hard-Swish's surrogate threshold tau (unused for the others)
        ACT: tl.constexpr,  # activation code (CODES)
    ):
        """The 1-bit mask of :func:`kernels.activations.mask_bits` (``threshold``: hardswish's
        surrogate threshold; unused for relu and relu6)."""
        if ACT == 0:
            m = z > 0.0
        elif ACT == 1:
            m = (z > 0.0) & (z < 6.0)
        elif ACT == 2:
            m = z > threshold
        else:
            m = (z > -3.0) & (z < 3.0)
        return m

    @triton.jit
    def act_derivative(z, ACT: tl.constexpr):
        """The true derivative of :func:`kernels.activations.derivative`, in float32."""
        if ACT == 2:
            d = tl.where(z <= -3.0, 0.0, tl.where(z >= 3.0, 1.0, (2.0 * z + 3.0) / 6.0))
        elif ACT == 3:
            d = act_mask(z, 0.0, ACT).to(tl.float32) / 6.0
        else:
            d = act_mask(z, 0.0, ACT).to(tl.float32)
        return d


__all__ = ["CODES", "code"]
