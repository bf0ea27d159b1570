"""Modules around the fused cores: drop-in replacements for a norm layer followed by an
activation (chapter 4; used by the MobileTL chapter and by ``kernelize``-style model surgery).

- :class:`GroupNormAct` replaces ``nn.GroupNorm`` + ``nn.ReLU`` / ``nn.ReLU6`` / ``nn.Hardswish``
  (:func:`kernels.group_norm_act`); its ``weight`` and ``bias`` are GroupNorm's, so state dicts
  carry over. ``GroupNormAct.from_modules(gn, act)`` builds one that shares ``gn``'s parameters.
- :class:`FrozenNormAct` replaces a norm with frozen statistics (``nn.BatchNorm2d`` in eval mode)
  + activation (:func:`kernels.affine_act`): it always normalises with ``running_mean`` and
  ``running_var`` (in training mode too) and keeps only the 1-bit mask, so its ``weight`` must not
  train; ``bias`` may. ``FrozenNormAct.from_batchnorm(bn, act)`` shares ``bn``'s parameters and
  buffers.
"""

from __future__ import annotations

import torch
from torch import nn

from .activations import STEP, Surrogate, check_activation
from .affine_act import affine_act, frozen_scale_shift
from .checks import MASK_ONLY, check_eps, check_mode, check_surrogate
from .group_norm_act import group_norm_act

ACTIVATION_MODULES = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.Hardswish: "hardswish", nn.Hardsigmoid: "hardsigmoid"}


def activation_name(module: nn.Module) -> str:
    """``"relu"``, ``"relu6"``, ``"hardswish"`` or ``"hardsigmoid"`` for an activation module of
    exactly that type."""
    try:
        return ACTIVATION_MODULES[type(module)]
    except KeyError:
        allowed = ", ".join(f"nn.{t.__name__}" for t in ACTIVATION_MODULES)
        raise ValueError(f"act must be one of {allowed}, got {type(module).__name__}") from None


def activation_module(name: str) -> nn.Module:
    """The torch module of an activation name (the inverse of :func:`activation_name`)."""
    check_activation(name)
    return next(t for t, n in ACTIVATION_MODULES.items() if n == name)()


def _check_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


class GroupNormAct(nn.Module):
    """GroupNorm followed by an activation, one fused kernel, a 1-bit mask kept for backward.

    Arguments as ``nn.GroupNorm`` plus ``activation``, ``backward`` (``"exact"`` or
    ``"detached"``), ``surrogate`` and ``backend``, as in :func:`kernels.group_norm_act`.
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 activation: str = "relu6", backward: str = "exact", surrogate: Surrogate | None = STEP,
                 backend: str | None = None, device=None, dtype=None):
        super().__init__()
        _check_int("num_groups", num_groups)
        _check_int("num_channels", num_channels)
        if num_channels % num_groups:
            raise ValueError(f"num_groups={num_groups} must divide num_channels={num_channels}")
        check_mode(backward)
        check_surrogate(surrogate, activation, allow_true_derivative=backward == "exact")
        self.num_groups, self.num_channels = num_groups, num_channels
        self.eps = check_eps(eps)
        self.affine = affine
        self.activation, self.backward, self.surrogate, self.backend = activation, backward, surrogate, backend
        if affine:
            self.weight = nn.Parameter(torch.ones(num_channels, device=device, dtype=dtype))
            self.bias = nn.Parameter(torch.zeros(num_channels, device=device, dtype=dtype))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    @classmethod
    def from_modules(cls, norm: nn.GroupNorm, act: nn.Module, *, backward: str = "exact",
                     surrogate: Surrogate | None = STEP, backend: str | None = None) -> "GroupNormAct":
        """The fused equivalent of ``act(norm(x))``, sharing ``norm``'s parameters (the same
        ``nn.Parameter`` objects, so optimizers and ``requires_grad`` carry over)."""
        if type(norm) is not nn.GroupNorm:
            raise TypeError(f"norm must be an nn.GroupNorm, got {type(norm).__name__}")
        module = cls(norm.num_groups, norm.num_channels, norm.eps, affine=False, activation=activation_name(act),
                     backward=backward, surrogate=surrogate, backend=backend)
        module.affine = norm.affine
        module.weight, module.bias = norm.weight, norm.bias
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return group_norm_act(x, self.num_groups, self.weight, self.bias, eps=self.eps, activation=self.activation,
                              backward=self.backward, surrogate=self.surrogate, backend=self.backend)

    def extra_repr(self) -> str:
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
                f"activation={self.activation!r}, backward={self.backward!r}, surrogate={self.surrogate}")


class FrozenNormAct(nn.Module):
    """A norm with frozen statistics + activation: ``f(scale * x + shift)`` with
    ``scale = weight / sqrt(running_var + eps)`` and ``shift = bias - running_mean * scale``;
    keeps only the 1-bit mask (and ``scale`` when ``x`` needs a gradient). ``weight`` starts
    frozen and must stay so; ``bias`` (the shift MobileTL trains) may train."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True, activation: str = "relu6",
                 surrogate: Surrogate | None = STEP, backend: str | None = None, device=None, dtype=None):
        super().__init__()
        _check_int("num_features", num_features)
        check_surrogate(surrogate, activation, allow_true_derivative=False, keeps_input=MASK_ONLY)
        self.num_features, self.eps, self.affine = num_features, check_eps(eps), affine
        self.activation, self.surrogate, self.backend = activation, surrogate, backend
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features, device=device, dtype=dtype), requires_grad=False)
            self.bias = nn.Parameter(torch.zeros(num_features, device=device, dtype=dtype))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("running_mean", torch.zeros(num_features, device=device, dtype=dtype))
        self.register_buffer("running_var", torch.ones(num_features, device=device, dtype=dtype))

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm2d, act: nn.Module, *, surrogate: Surrogate | None = STEP,
                       backend: str | None = None) -> "FrozenNormAct":
        """The fused equivalent of ``act(bn(x))`` with ``bn`` in eval mode, sharing ``bn``'s
        parameters and running statistics. Freezes ``bn.weight`` (sets ``requires_grad`` to
        False): the scale of a mask-only norm cannot train."""
        if type(bn) is not nn.BatchNorm2d:
            raise TypeError(f"bn must be an nn.BatchNorm2d, got {type(bn).__name__}")
        if bn.running_mean is None:
            raise ValueError("bn must track running statistics (track_running_stats=True): "
                             "a frozen-statistics norm uses running_mean and running_var")
        module = cls(bn.num_features, bn.eps, affine=False, activation=activation_name(act), surrogate=surrogate,
                     backend=backend)
        module.affine = bn.affine
        if bn.weight is not None:
            bn.weight.requires_grad_(False)
        module.weight, module.bias = bn.weight, bn.bias
        module.running_mean, module.running_var = bn.running_mean, bn.running_var
        return module

    def scale_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-channel affine map of the frozen norm (written with ``torch.mul`` /
        ``torch.add`` so that the memory engine's shape trace can follow it)."""
        return frozen_scale_shift(self.weight, self.bias, self.running_mean, self.running_var, self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and self.weight is not None and self.weight.requires_grad:
            raise ValueError("FrozenNormAct's weight must not require a gradient: it keeps only the 1-bit mask, "
                             "and d(weight) needs x. Freeze it (weight.requires_grad_(False)), or use "
                             "nn.BatchNorm2d + activation to train it")
        scale, shift = self.scale_shift()
        return affine_act(x, scale, shift, activation=self.activation, surrogate=self.surrogate, backend=self.backend)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, affine={self.affine}, activation={self.activation!r}, "
                f"surrogate={self.surrogate}")


__all__ = ["ACTIVATION_MODULES", "FrozenNormAct", "GroupNormAct", "activation_module", "activation_name"]
