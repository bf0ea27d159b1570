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
hardsigmoid ``relu6(z + 3) / 6``      ``-3 < z < 3``               exact: 0 or 1/6
=========== ======================== ============================ ===========================

Hard-Swish's derivative, ``0`` up to -3, ``(2z + 3) / 6`` between, ``1`` from 3 on, takes more
than two values, so one bit can only approximate it. A :class:`Surrogate` names the threshold
and the two levels; :data:`STEP` is the plain step at 0. MobileTL does not publish its choice;
chapter 3 derives the alternatives and says which one the book uses. (Hard-Sigmoid, the gate
of MobileNetV3's squeeze-excite, is exact from one bit: its derivative is 0 or 1/6.)

The mask of a large tensor is built and read in chunks of :data:`CHUNK` elements
(:func:`packed_mask`, :func:`backward_from_words`), so that the boolean temporaries stay a few
MB whatever the tensor, and no int64 or float copy of the mask is ever made.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .bits import BITS, pack_bits_reference, packed_words, unpack_bits_reference

ACTIVATIONS = ("relu", "relu6", "hardswish", "hardsigmoid")
CHUNK = 1 << 20  # elements per chunk of packed_mask / backward_from_words (a multiple of 32)


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


def forward(z: torch.Tensor, activation: str, inplace: bool = False) -> torch.Tensor:
    """``f(z)``, exactly as ``torch.nn.functional`` computes it (``inplace``: overwrite ``z``)."""
    check_activation(activation)
    F = torch.nn.functional
    if activation == "relu":
        return torch.relu_(z) if inplace else torch.relu(z)
    if activation == "relu6":
        return F.relu6(z, inplace=inplace)
    if activation == "hardswish":
        return F.hardswish(z, inplace=inplace)
    return F.hardsigmoid(z, inplace=inplace)


def mask_bits(z: torch.Tensor, activation: str, surrogate: Surrogate = STEP) -> torch.Tensor:
    """The 1-bit mask (``torch.bool``, the shape of ``z``) the backward pass needs."""
    check_activation(activation)
    if activation == "relu":
        return z > 0
    if activation == "relu6":
        return (z > 0) & (z < 6)
    if activation == "hardsigmoid":
        return (z > -3) & (z < 3)
    return z > surrogate.threshold


def levels(activation: str, surrogate: Surrogate = STEP) -> tuple[float, float]:
    """The derivative where the bit is 0 and where it is 1."""
    check_activation(activation)
    if activation == "hardswish":
        return surrogate.low, surrogate.high
    return (0.0, 1.0 / 6.0) if activation == "hardsigmoid" else (0.0, 1.0)


def backward_from_mask(dy: torch.Tensor, mask: torch.Tensor, activation: str,
                       surrogate: Surrogate = STEP) -> torch.Tensor:
    """``dz`` from the output gradient and the mask: exact for relu / relu6 / hardsigmoid, the
    surrogate for hardswish."""
    low, high = levels(activation, surrogate)
    if (low, high) == (0.0, 1.0):
        return dy * mask
    if low == 0.0:
        return dy * mask * high
    return dy * torch.where(mask, high, low).to(dy.dtype)


_ZEROS: dict = {}


def _zero(like: torch.Tensor) -> torch.Tensor:
    """A cached 0-d zero of ``like``'s dtype and device."""
    key = (like.dtype, like.device)
    if key not in _ZEROS:
        _ZEROS[key] = torch.zeros((), dtype=like.dtype, device=like.device)
    return _ZEROS[key]


def packed_mask(z: torch.Tensor, activation: str, surrogate: Surrogate = STEP) -> torch.Tensor:
    """``pack_bits_reference(mask_bits(z))`` chunk by chunk: the int32 words of the mask, with
    boolean temporaries of at most a few :data:`CHUNK` bytes."""
    flat = z.reshape(-1)
    words = torch.empty(packed_words(flat.numel()), dtype=torch.int32, device=z.device)
    for start in range(0, flat.numel(), CHUNK):
        part = flat[start:start + CHUNK]
        words[start // BITS:start // BITS + packed_words(part.numel())] = \
            pack_bits_reference(mask_bits(part, activation, surrogate))
    return words


def backward_from_words(dy: torch.Tensor, words: torch.Tensor, activation: str, surrogate: Surrogate = STEP,
                        dtype: torch.dtype | None = None) -> torch.Tensor:
    """:func:`backward_from_mask` with the mask read from its packed ``words``, chunk by chunk;
    ``dz`` has the shape of ``dy`` and ``dtype`` (default ``dy``'s). Each chunk is written in
    place (``out=``): besides ``dz``, only one chunk of booleans is allocated at a time."""
    dz = torch.empty(dy.shape, dtype=dy.dtype if dtype is None else dtype, device=dy.device)
    flat_dy, flat_dz = dy.reshape(-1), dz.view(-1)
    low, high = levels(activation, surrogate)
    for start in range(0, flat_dy.numel(), CHUNK):
        part, out = flat_dy[start:start + CHUNK], flat_dz[start:start + CHUNK]
        mask = unpack_bits_reference(words[start // BITS:], part.numel())
        if low == 0.0:  # dz = high * dy where the bit is set, 0 elsewhere (where: no float copy of the mask)
            torch.where(mask, part.to(out.dtype), _zero(out), out=out)
            if high != 1.0:
                out.mul_(high)
        else:
            torch.mul(part, torch.where(mask, high, low), out=out)
    return dz


def derivative(z: torch.Tensor, activation: str) -> torch.Tensor:
    """The true derivative ``f'(z)`` (what autograd computes from the full ``z``)."""
    check_activation(activation)
    if activation == "hardswish":
        return torch.where(z <= -3, 0.0, torch.where(z >= 3, 1.0, (2 * z + 3) / 6)).to(z.dtype)  # as torch
    low, high = levels(activation)
    return mask_bits(z, activation).to(z.dtype) * high


__all__ = ["ACTIVATIONS", "CHUNK", "STEP", "Surrogate", "backward_from_mask", "backward_from_words",
           "check_activation", "derivative", "forward", "levels", "mask_bits", "packed_mask"]
