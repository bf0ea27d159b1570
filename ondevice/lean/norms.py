"""Norms that keep only what their backward needs (chapter 4, "Putting the kernels in a network").

A norm computes ``x_hat = (x - mu) * rstd`` and ``z = gamma * x_hat + beta``, with statistics
per (sample, group) for GroupNorm and per channel over the batch for BatchNorm in training mode.
What its backward needs depends on what trains (chapter 4, "The backward"):

=====================================  ==========================================================
gradient needed                        kept
=====================================  ==========================================================
only ``d(beta) = sum(dy)``             nothing (stock PyTorch keeps ``x`` and the statistics)
``dx``, exact (eq. (VJP))              ``x`` and the statistics
``dx``, detached statistics            the statistics: ``dx = gamma * rstd * dy``
``d(gamma) = sum(dy * x_hat)``         ``x`` and the statistics, in either mode
=====================================  ==========================================================

With an activation after the norm (:class:`BatchNormAct`) ``dy`` above becomes ``dz``, computed
from a 1-bit mask of ``z`` (:mod:`kernels.activations`), which is kept whenever any gradient
flows. The plan is :func:`kernels.group_norm_act.saved_by_group_norm_act`'s, the one the fused
GroupNorm kernel follows; for a lone norm it is :func:`saved_by_norm`.

- :class:`LeanGroupNorm`: a lone ``nn.GroupNorm`` (GroupNorm + activation is the fused
  :class:`kernels.GroupNormAct`);
- :class:`LeanBatchNorm2d`: a lone ``nn.BatchNorm2d``; with frozen statistics (eval mode) and a
  frozen ``gamma`` it is the affine map ``x * scale + shift``, which keeps the per-channel
  ``scale`` (a computed tensor) and nothing of ``x``'s size;
- :class:`BatchNormAct`: ``nn.BatchNorm2d`` + ReLU / ReLU6 / Hard-Swish / Hard-Sigmoid; with
  frozen statistics and a frozen ``gamma`` it runs :func:`kernels.affine_act` (the fused
  frozen-statistics kernel of chapter 4).

Both BatchNorm twins follow the module's mode at every call as ``nn.BatchNorm2d`` does (batch
statistics and running-statistics updates in training mode, running statistics in eval mode),
so their outputs equal the stock modules' in either mode. The computation is PyTorch's own
(``native_group_norm`` / ``native_batch_norm`` and their backward functions), so on a CPU they
run at stock speed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.overrides import handle_torch_function, has_torch_function_variadic

from kernels import activations, affine_act
from kernels.activations import STEP, Surrogate
from kernels.affine_act import frozen_scale_shift
from kernels.bits import pack_bits
from kernels.checks import check_mode
from kernels.group_norm_act import saved_by_group_norm_act
from kernels.norm_act import activation_module

from ..mask_activations import mask_activation


@dataclass(frozen=True)
class NormSaved:
    """What a lean norm keeps for backward (besides ``gamma`` and ``beta``, parameters)."""

    x: bool  # the input
    mask: bool  # the packed 1-bit mask of z (with an activation)
    stats: bool  # the statistics: mean and rstd (GroupNorm: N x G; BatchNorm: C each)


def saved_by_norm(activation: str | None, backward: str, surrogate: Surrogate | None,
                  need_dx: bool, need_dgamma: bool, need_dbeta: bool) -> NormSaved:
    """What a lean norm (+ ``activation``, or None) keeps, given the gradients needed (the
    module docstring's table)."""
    if activation is not None:
        plan = saved_by_group_norm_act(activation, backward, surrogate, need_dx, need_dgamma, need_dbeta)
        return NormSaved(plan.x, plan.mask, plan.stats)
    if not (need_dx or need_dgamma):
        return NormSaved(False, False, False)  # d(beta) = sum(dy) needs nothing
    return NormSaved(x=need_dgamma or backward == "exact", mask=False, stats=True)


@dataclass(frozen=True)
class _Spec:
    kind: str  # "group" (per sample and group) or "batch" (per channel, batch statistics)
    groups: int  # GroupNorm's G (BatchNorm: C)
    eps: float
    factor: float  # BatchNorm's running-statistics update factor
    activation: str | None
    backward: str
    surrogate: Surrogate | None


def _statistics_forward(x, weight, bias, running_mean, running_var, spec: _Spec):
    """``(z, mean, rstd)``: PyTorch's own GroupNorm or BatchNorm (training mode, updating the
    running statistics in place)."""
    N, C = x.shape[:2]
    if spec.kind == "group":
        return torch.native_group_norm(x, weight, bias, N, C, x[0, 0].numel(), spec.groups, spec.eps)
    return torch.native_batch_norm(x, weight, bias, running_mean, running_var, True, spec.factor, spec.eps)


def _per_channel(stat: torch.Tensor, spec: _Spec, C: int) -> torch.Tensor:
    """A statistic as an (N or 1, C, 1, 1) tensor that broadcasts against x."""
    if spec.kind == "group":
        return stat.repeat_interleave(C // spec.groups, dim=1).view(stat.shape[0], C, 1, 1)
    return stat.view(1, C, 1, 1)


class _LeanNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, spec: _Spec):
        need = ctx.needs_input_grad
        plan = saved_by_norm(spec.activation, spec.backward, spec.surrogate, need[0], need[1], need[2])
        z, mean, rstd = _statistics_forward(x, weight, bias, running_mean, running_var, spec)
        words = None
        if plan.mask:
            surrogate = STEP if spec.surrogate is None else spec.surrogate
            words = (pack_bits(activations.mask_bits(z, spec.activation, surrogate)) if z.is_cuda
                     else activations.packed_mask(z, spec.activation, surrogate))
        ctx.save_for_backward(x if plan.x else None, words, mean if plan.stats else None,
                              rstd if plan.stats else None, weight, bias)
        ctx.spec = spec
        return z if spec.activation is None else activations.forward(z, spec.activation, inplace=True)

    @staticmethod
    def backward(ctx, dy):
        x, words, mean, rstd, weight, bias = ctx.saved_tensors
        spec = ctx.spec
        need_dx, need_dw, need_db = ctx.needs_input_grad[:3]
        C = dy.shape[1]
        if spec.activation is None:
            dz = dy
        elif words is not None:
            dz = activations.backward_from_words(dy, words, spec.activation, spec.surrogate or STEP)
        else:  # the true Hard-Swish derivative at z, recomputed from x
            z = (x - _per_channel(mean, spec, C)) * _per_channel(rstd, spec, C)
            if weight is not None:
                z = z * weight.view(1, C, 1, 1)
            if bias is not None:
                z = z + bias.view(1, C, 1, 1)
            dz = dy * activations.derivative(z, spec.activation)
        if x is not None and (need_dx or need_dw):  # exact: PyTorch's own backward
            mask = [need_dx, need_dw, need_db]
            if spec.kind == "group":
                N = dy.shape[0]
                return (*torch.ops.aten.native_group_norm_backward(
                    dz, x, mean, rstd, weight, N, C, dy[0, 0].numel(), spec.groups, mask), None, None, None)
            return (*torch.ops.aten.native_batch_norm_backward(
                dz, x, weight, None, None, mean, rstd, True, spec.eps, mask), None, None, None)
        db = dz.sum(dim=(0, 2, 3)) if need_db else None
        dx = None
        if need_dx:  # detached statistics: dx = gamma * rstd * dz (in place when dz is this function's own)
            scale = _per_channel(rstd, spec, C)
            scale = scale if weight is None else scale * weight.view(1, C, 1, 1)
            dx = dz * scale if dz is dy else dz.mul_(scale)
        return dx, None, db, None, None, None


def lean_norm(x, weight, bias, running_mean, running_var, *, kind: str, groups: int, eps: float,
              factor: float = 0.0, activation: str | None = None, backward: str = "exact",
              surrogate: Surrogate | None = None):
    """GroupNorm (``kind="group"``) or training-mode BatchNorm (``kind="batch"``) + optional
    activation, keeping what :func:`saved_by_norm` says."""
    if has_torch_function_variadic(x, weight, bias):  # the memory engine's shape trace
        return handle_torch_function(lean_norm, (x, weight, bias), x, weight, bias, running_mean, running_var,
                                     kind=kind, groups=groups, eps=eps, factor=factor, activation=activation,
                                     backward=backward, surrogate=surrogate)
    spec = _Spec(kind, groups, eps, factor, activation, backward, surrogate)
    params = [t for t in (weight, bias) if t is not None]
    if not (torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params))):
        with torch.no_grad():
            z = _statistics_forward(x, weight, bias, running_mean, running_var, spec)[0]
        return z if activation is None else activations.forward(z, activation, inplace=True)
    if backward == "detached" and weight is not None and weight.requires_grad:
        raise ValueError("backward='detached' keeps no x, so it cannot give d(gamma): freeze the norm's weight "
                         "(requires_grad_(False)) or use backward='exact'")
    return _LeanNorm.apply(x, weight, bias, running_mean, running_var, spec)


class LeanGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` that keeps only what its backward needs (module docstring's table);
    ``backward``: ``"exact"`` or ``"detached"`` (for a frozen ``gamma``)."""

    backward: str = "exact"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lean_norm(x, self.weight, self.bias, None, None, kind="group", groups=self.num_groups,
                         eps=self.eps, backward=self.backward)

    @classmethod
    def from_module(cls, norm: nn.GroupNorm, backward: str = "exact") -> "LeanGroupNorm":
        """A twin sharing ``norm``'s parameters (the same ``nn.Parameter`` objects)."""
        if not isinstance(norm, nn.GroupNorm):
            raise TypeError(f"needs an nn.GroupNorm, got {type(norm).__name__}")
        new = cls(norm.num_groups, norm.num_channels, norm.eps, affine=False)
        new.affine, new.weight, new.bias = norm.affine, norm.weight, norm.bias
        new.backward = check_mode(backward)
        return new

    def extra_repr(self) -> str:
        return super().extra_repr() + f", backward={self.backward!r}"


def _share_batchnorm(new: nn.BatchNorm2d, bn: nn.BatchNorm2d) -> None:
    new.weight, new.bias = bn.weight, bn.bias
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        setattr(new, name, getattr(bn, name))
    new.train(bn.training)


class _LeanBatchNorm(nn.BatchNorm2d):
    """What the two BatchNorm twins share: ``nn.BatchNorm2d``'s choice of statistics and
    running-statistics update, made at every call."""

    activation: str | None = None
    backward: str = "exact"
    surrogate: Surrogate | None = None
    backend: str | None = None  # of the frozen-statistics kernel (kernels.affine_act)

    def _batch_statistics(self) -> tuple[bool, float]:
        """(whether this call uses batch statistics, the update factor), as BatchNorm2d.forward
        decides them (and counting the batch, as it does)."""
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        return self.training or self.running_mean is None, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, factor = self._batch_statistics()
        if batch:
            track = not self.training or self.track_running_stats
            return lean_norm(x, self.weight, self.bias, self.running_mean if track else None,
                             self.running_var if track else None, kind="batch", groups=self.num_features,
                             eps=self.eps, factor=factor, activation=self.activation, backward=self.backward,
                             surrogate=self.surrogate)
        return self._frozen_statistics(x)

    def _frozen_statistics(self, x: torch.Tensor) -> torch.Tensor:
        """Eval mode: the affine map of the running statistics (frozen ``gamma``: nothing of x's
        size kept) or, when ``gamma`` trains, stock BatchNorm (which keeps ``x``)."""
        gamma_trains = self.weight is not None and self.weight.requires_grad
        if gamma_trains:
            z = nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False,
                                         0.0, self.eps)
        else:
            scale, shift = frozen_scale_shift(self.weight, self.bias, self.running_mean, self.running_var, self.eps)
            if self.activation is not None and (self.activation != "hardswish" or self.surrogate is not None):
                return affine_act(x, scale, shift, self.activation, self.surrogate or STEP, self.backend)  # mask, scale
            C = x.shape[1]
            z = torch.add(torch.mul(x, scale.view(1, C, 1, 1)), shift.view(1, C, 1, 1))  # keeps scale
        if self.activation is None:
            return z
        if self.activation == "hardswish" and self.surrogate is None:
            return nn.functional.hardswish(z)  # the true derivative: stock (keeps z)
        return mask_activation(z, self.activation, self.surrogate or STEP)


class LeanBatchNorm2d(_LeanBatchNorm):
    """``nn.BatchNorm2d`` that keeps only what its backward needs (module docstring); shares
    the parameters and running statistics of the module it is built from."""

    @classmethod
    def from_module(cls, bn: nn.BatchNorm2d, backward: str = "exact") -> "LeanBatchNorm2d":
        if not isinstance(bn, nn.BatchNorm2d):
            raise TypeError(f"needs an nn.BatchNorm2d, got {type(bn).__name__}")
        new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats, device="meta")
        _share_batchnorm(new, bn)
        new.backward = check_mode(backward)
        return new

    def extra_repr(self) -> str:
        return super().extra_repr() + f", backward={self.backward!r}"


class BatchNormAct(_LeanBatchNorm):
    """``act(bn(x))`` as one module that keeps a 1-bit mask instead of the activation's input
    (module docstring). ``activation``: one of :data:`kernels.activations.ACTIVATIONS`;
    ``surrogate``: the 1-bit Hard-Swish derivative, or None for the true one (then ``x`` or ``z``
    is kept: exact mode)."""

    activation: str = "relu6"

    @classmethod
    def from_modules(cls, bn: nn.BatchNorm2d, act: nn.Module, *, backward: str = "exact",
                     surrogate: Surrogate | None = None) -> "BatchNormAct":
        """The twin of ``act(bn(x))``, sharing ``bn``'s parameters and running statistics."""
        from kernels.norm_act import activation_name

        if not isinstance(bn, nn.BatchNorm2d):
            raise TypeError(f"needs an nn.BatchNorm2d, got {type(bn).__name__}")
        new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats, device="meta")
        _share_batchnorm(new, bn)
        new.activation = activation_name(act)
        new.backward = check_mode(backward)
        if surrogate is None and new.activation == "hardswish" and backward == "detached":
            raise ValueError("backward='detached' keeps no x: Hard-Swish then needs a 1-bit surrogate")
        new.surrogate = surrogate
        return new

    def activation_module(self) -> nn.Module:
        """The stock activation this module applies (for reports)."""
        return activation_module(self.activation)

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", activation={self.activation!r}, backward={self.backward!r}, "
                                       f"surrogate={self.surrogate}")


__all__ = ["BatchNormAct", "LeanBatchNorm2d", "LeanGroupNorm", "NormSaved", "lean_norm", "saved_by_norm"]
