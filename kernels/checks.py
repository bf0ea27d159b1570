"""Argument checks shared by the fused norm-and-activation cores (chapter 4).

Every public function of :mod:`kernels.group_norm_act` and :mod:`kernels.affine_act` validates
its arguments here, before choosing a backend, so that the Triton kernels and the torch twins
reject exactly the same inputs, with a message that names the argument and what is allowed.
"""

from __future__ import annotations

import math

import torch

from .activations import Surrogate, check_activation

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MODES = ("exact", "detached")


def _dtype_names() -> str:
    return ", ".join(str(d).removeprefix("torch.") for d in DTYPES)


def check_input(x) -> torch.Tensor:
    """``x``: a non-empty, contiguous (N, C, H, W) tensor of a supported floating dtype."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in DTYPES:
        raise TypeError(f"x must have dtype {_dtype_names()}, got {x.dtype}")
    if x.dim() != 4:
        raise ValueError(f"x must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"x must have N, C, H, W >= 1, got shape {tuple(x.shape)}")
    if not x.is_contiguous():
        layout = "channels_last" if x.is_contiguous(memory_format=torch.channels_last) else "strided"
        raise ValueError(f"x must be contiguous in NCHW order (torch.contiguous_format), got a {layout} "
                         "tensor: call x.contiguous() first")
    return x


def check_channel_vector(name: str, t, x: torch.Tensor, optional: bool) -> torch.Tensor | None:
    """A per-channel tensor (``weight``, ``bias``, ``scale``, ``shift``): shape (C,), floating,
    on ``x``'s device."""
    if t is None:
        if optional:
            return None
        raise TypeError(f"{name} must be a torch.Tensor of shape ({x.shape[1]},), got None")
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor{' or None' if optional else ''}, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {t.dtype}")
    if tuple(t.shape) != (x.shape[1],):
        raise ValueError(f"{name} must have shape ({x.shape[1]},) (one value per channel of x), "
                         f"got {tuple(t.shape)}")
    if t.device != x.device:
        raise ValueError(f"{name} is on {t.device} but x is on {x.device}: they must be on the same device")
    return t


def check_groups(num_groups, x: torch.Tensor) -> int:
    if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1:
        raise ValueError(f"num_groups must be an int >= 1, got {num_groups!r}")
    if x.shape[1] % num_groups:
        raise ValueError(f"num_groups={num_groups} must divide the number of channels C={x.shape[1]}")
    return num_groups


def check_eps(eps) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    return float(eps)


def check_mode(backward) -> str:
    if backward not in MODES:
        raise ValueError(f"backward must be one of {MODES}, got {backward!r}")
    return backward


def check_surrogate(surrogate, activation: str, allow_true_derivative: bool,
                    keeps_input: str = "only backward='exact' keeps: pass a kernels.activations.Surrogate "
                                       "(e.g. STEP) or use backward='exact'") -> Surrogate | None:
    """``surrogate``: a :class:`~kernels.activations.Surrogate`, or ``None`` for the true
    Hard-Swish derivative, which needs the activation input and so is only available where
    ``x`` is kept (``allow_true_derivative``). ``keeps_input`` ends the error message: what keeps
    the input, for the caller at hand."""
    check_activation(activation)
    if surrogate is not None and not isinstance(surrogate, Surrogate):
        raise TypeError(f"surrogate must be a kernels.activations.Surrogate or None, got {type(surrogate).__name__}")
    if surrogate is None and activation == "hardswish" and not allow_true_derivative:
        raise ValueError(f"surrogate=None (the true Hard-Swish derivative) needs the activation input, which {keeps_input}")
    return surrogate


MASK_ONLY = ("a mask-only norm does not keep: pass a kernels.activations.Surrogate (e.g. STEP), or use "
             "kernels.group_norm_act(..., backward='exact') or nn.BatchNorm2d + nn.Hardswish, which keep it")


__all__ = ["DTYPES", "MASK_ONLY", "MODES", "check_channel_vector", "check_eps", "check_groups", "check_input",
           "check_mode", "check_surrogate"]
