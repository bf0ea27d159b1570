"""The activations a 1-bit mask can serve, in plain torch: the one definition every kernel, twin
and autograd function of the book uses (chapters 3 and 4).

For each activation ``f`` the mask is one bit per element, ``m = predicate(z)`` on the
activation's input ``z``, and the backward pass computes ``dz = dy * (low + (high - low) * m)``:

=========== ======================== ============================ ===========================
activation  forward ``f(z)``          mask bit                     derivative from the bit
=========== ======================== ============================ ===========================
relu        ``max(z, 0)``             ``z > 0``                    exact: 0 or 1
relu6       ``min(max(z, 0), 6)``     ``0 < z < 6``                exact: 0 or 1
hardswish   ``z * relu6(z + 3) / 6``  ``z > threshold``            a surrogate: ``low`` or ``high``
=========== ======================== ============================ ===========================

Hard-Swish's derivative, ``0`` up to -3, ``(2z + 3) / 6`` between, ``1`` from 3 on, takes more
than two values, so one bit can only approximate it. A :class:`Surrogate` names the threshold
and the two levels; :data:`STEP` is the plain step at 0. MobileTL does not publish its choice;
chapter 3 derives the alternatives and says which one the book uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ACTIVATIONS = ("relu", "relu6", "hardswish")


@dataclass(frozen=True)
class Surrogate:
    """A two-level derivative: ``low`` where ``z <= threshold``, ``high`` where ``z > threshold``."""

    threshold: float = 0.0
    low: float = 0.0
    high: float = 1.0


STEP = Surrogate(0.0, 0.0, 1.0)  # the derivative of ReLU, used for Hard-Swish


def check_activation(activation) -> str:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    return activation


def forward(z: torch.Tensor, activation: str) -> torch.Tensor:
    """``f(z)``, exactly as ``torch.nn.functional`` computes it."""
    check_activation(activation)
    if activation == "relu":
        return torch.relu(z)
    if activation == "relu6":
        return torch.nn.functional.relu6(z)
    return torch.nn.functional.hardswish(z)


def mask_bits(z: torch.Tensor, activation: str, surrogate: Surrogate = STEP) -> torch.Tensor:
    """The 1-bit mask (``torch.bool``, the shape of ``z``) the backward pass needs."""
    check_activation(activation)
    if activation == "relu":
        return z > 0
    if activation == "relu6":
        return (z > 0) & (z < 6)
    return z > surrogate.threshold


def levels(activation: str, surrogate: Surrogate = STEP) -> tuple[float, float]:
    """The derivative where the bit is 0 and where it is 1."""
    check_activation(activation)
    return (surrogate.low, surrogate.high) if activation == "hardswish" else (0.0, 1.0)


def backward_from_mask(dy: torch.Tensor, mask: torch.Tensor, activation: str,
                       surrogate: Surrogate = STEP) -> torch.Tensor:
    """``dz`` from the output gradient and the mask: exact for relu / relu6, the surrogate for
    hardswish."""
    low, high = levels(activation, surrogate)
    if (low, high) == (0.0, 1.0):
        return dy * mask
    return dy * torch.where(mask, high, low).to(dy.dtype)


def derivative(z: torch.Tensor, activation: str) -> torch.Tensor:
    """The true derivative ``f'(z)`` (what autograd computes from the full ``z``)."""
    check_activation(activation)
    if activation == "hardswish":
        return torch.where(z <= -3, 0.0, torch.where(z >= 3, 1.0, (2 * z + 3) / 6)).to(z.dtype)  # as torch
    return mask_bits(z, activation).to(z.dtype)


__all__ = ["ACTIVATIONS", "STEP", "Surrogate", "backward_from_mask", "check_activation",
           "derivative", "forward", "levels", "mask_bits"]
