"""GroupNorm + activation fused, keeping a 1-bit mask (chapter 4, "The fused forward" and "The
backward").

Forward, for sample ``n`` and group ``g`` (its slab of ``|S| = Cg H W`` elements, ``Cg = C / G``;
chapter 2, "GroupNorm vs BatchNorm"; ``rstd`` is the book's rho):

    mu = mean(x),  var = mean((x - mu)^2),  rstd = 1 / sqrt(var + eps),
    x_hat = (x - mu) * rstd,   z = gamma_c * x_hat + beta_c,   y = f(z).

On Triton it takes three launches over the row tiles of :mod:`kernels.tiling` (a row is one
(sample, channel)), so that the work fills a GPU whatever ``N`` and ``G``: partial statistics
per row and chunk, a fixed-order combine per slab (:mod:`kernels.group_stats`: two-pass within a
tile, Chan's formula across tiles and partials, no ``E[x^2] - E[x]^2`` cancellation, so an input
offset of 1e4 is harmless), then one pass that normalises, applies ``gamma``, ``beta`` and the
activation, writes ``y`` and packs the activation's 1-bit mask
(:func:`kernels.affine_act.norm_act_forward`). It stores ``mu`` and ``rstd`` (float32, whatever
``x``'s dtype).

**Mask layout.** Exactly :mod:`kernels.bits`'s: element ``i`` of the flattened NCHW tensor is
bit ``i % 32`` of int32 word ``i // 32``, so ``unpack_bits(words, x.numel())`` is the mask.
When rows start on a word boundary (``H W % 32 == 0``) every 32-element segment of a tile is one
word, written with a plain store; otherwise the words that two segments share are combined with
an atomic OR into a zero-initialised buffer. OR does not depend on the order, so the words are
still deterministic and identical to ``pack_bits`` of the mask.

**Backward** (:mod:`kernels.norm_act_backward`): ``backward="exact"`` keeps ``x``, the mask and
the statistics and computes the exact GroupNorm input gradient; ``backward="detached"`` keeps
only the mask and the statistics and treats them as constants, ``dx = gamma * rstd * dz``.
``d(beta)`` always; ``d(gamma)`` needs ``x_hat``, so only in exact mode (an error otherwise).

**Hard-Swish.** Its derivative takes more than two values, so a bit can only approximate it:
with a :class:`~kernels.activations.Surrogate` (default :data:`~kernels.activations.STEP`; chapter
3 derives the one the book uses) the mask serves it in both modes. In exact mode ``x`` is kept
anyway, so ``surrogate=None`` gives the *true* derivative, recomputed from ``z = gamma * x_hat +
beta``; no mask is kept then. For ReLU and ReLU6 the mask is exact and ``surrogate`` is ignored.

:func:`saved_by_group_norm_act` says what is kept in each case; the memory engine's rule for
:class:`kernels.GroupNormAct` reads it (``ondevice/memory/kernel_rules.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.overrides import handle_torch_function, has_torch_function_variadic

from . import activations
from .activations import STEP, Surrogate
from .affine_act import norm_act_forward
from .checks import (check_channel_vector, check_eps, check_groups, check_input, check_mode,
                     check_surrogate)
from .group_stats import group_stats
from .norm_act_backward import differentiable_once, norm_act_backward
from .runtime import choose_backend
from .tiling import check_size


def _as_float(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.float()


def group_norm_act_forward_reference(x, num_groups, weight, bias, *, eps, activation, surrogate, write_mask):
    """Plain-torch twin of :func:`group_norm_act_forward`: ``(y, words, mean, rstd)``.

    ``z`` and the statistics come from PyTorch's own GroupNorm (``native_group_norm``, in float32
    for 16-bit inputs, ``z`` then rounded to ``x``'s dtype as a separate norm layer would round
    it); the mask is packed from ``z`` chunk by chunk, and the activation overwrites ``z``. So on
    a CPU the twin costs a stock GroupNorm + activation plus one pass for the mask, and allocates
    ``y`` and the packed words, nothing of ``x``'s size besides.
    """
    N, C = x.shape[:2]
    hw = x[0, 0].numel()
    z, mean, rstd = torch.native_group_norm(_as_float(x), _as_float(weight), _as_float(bias), N, C, hw,
                                            num_groups, eps)
    z = z.to(x.dtype)
    words = None
    if write_mask:
        words = activations.packed_mask(z, activation, STEP if surrogate is None else surrogate)
    y = activations.forward(z, activation, inplace=True)
    return y, words, mean, rstd


def group_norm_act_forward(x, num_groups, weight, bias, *, eps, activation, surrogate, write_mask, backend):
    """``(y, words, mean, rstd)``: ``y`` like ``x``; ``words`` the packed mask (int32,
    ``ceil(numel / 32)``; None unless ``write_mask``); ``mean``, ``rstd`` float32 (N, G). Triton:
    the statistics in two launches (:func:`kernels.group_stats.group_stats`), then one launch that
    normalises, activates and packs the mask (:func:`kernels.affine_act.norm_act_forward`).
    The arguments after ``bias`` are keyword-only, in the order of :func:`group_norm_act`; they
    are not checked here (:func:`group_norm_act` does)."""
    if backend == "torch":
        return group_norm_act_forward_reference(x, num_groups, weight, bias, eps=eps, activation=activation,
                                                surrogate=surrogate, write_mask=write_mask)
    check_size(x)
    mean, rstd = group_stats(x, num_groups, eps)
    channels_per_group = x.shape[1] // num_groups
    y, words = norm_act_forward(x, mean, rstd, slab_rows=channels_per_group, weight=weight, bias=bias,
                                activation=activation, surrogate=surrogate, write_mask=write_mask)
    return y, words, mean, rstd


@dataclass(frozen=True)
class GroupNormActSaved:
    """What :func:`group_norm_act` keeps for backward (besides ``gamma`` and ``beta``, which are
    parameters)."""

    x: bool  # the input (exact mode: dx and d(gamma) need x_hat)
    mask: bool  # the packed 1-bit mask, ceil(numel / 32) int32 words
    stats: bool  # mean and rstd, float32, N * G each


def saved_by_group_norm_act(activation: str, backward: str, surrogate: Surrogate | None,
                            need_dx: bool, need_dgamma: bool, need_dbeta: bool) -> GroupNormActSaved:
    """What is kept, given which gradients are needed (module docstring)."""
    true_derivative = activation == "hardswish" and surrogate is None
    if not (need_dx or need_dgamma or need_dbeta):
        return GroupNormActSaved(x=False, mask=False, stats=False)
    needs_x_hat = need_dx or need_dgamma or true_derivative
    keep_x = backward == "exact" and needs_x_hat  # detached mode never keeps x
    return GroupNormActSaved(x=keep_x, mask=not true_derivative, stats=needs_x_hat)


@dataclass(frozen=True)
class _Spec:
    num_groups: int
    eps: float
    activation: str
    backward: str
    surrogate: Surrogate | None
    backend: str


class _GroupNormAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, spec: _Spec):
        need = ctx.needs_input_grad
        plan = saved_by_group_norm_act(spec.activation, spec.backward, spec.surrogate, need_dx=need[0],
                                       need_dgamma=need[1], need_dbeta=need[2])
        y, words, mean, rstd = group_norm_act_forward(x, spec.num_groups, weight, bias, eps=spec.eps,
                                                      activation=spec.activation, surrogate=spec.surrogate,
                                                      write_mask=plan.mask, backend=spec.backend)
        if not plan.x:
            x = None
        if not plan.stats:
            mean = rstd = None
        ctx.save_for_backward(x, words, mean, rstd, weight, bias)
        ctx.spec = spec
        return y

    @staticmethod
    def backward(ctx, dy):
        x, words, mean, rstd, weight, bias = ctx.saved_tensors
        spec = ctx.spec
        need = ctx.needs_input_grad
        with torch.no_grad():
            dx, dw, db = norm_act_backward(
                dy, x=x, words=words, mean=mean, rstd=rstd, weight=weight, bias=bias, groups=spec.num_groups,
                activation=spec.activation, surrogate=spec.surrogate, exact=spec.backward == "exact",
                need_dx=need[0], need_dw=need[1], need_db=need[2], backend=spec.backend)
            if dw is not None:
                dw = dw.to(weight.dtype)  # the kernels sum in float32
            if db is not None:
                db = db.to(bias.dtype)
            grads = (dx, dw, db)
        return differentiable_once("group_norm_act", grads) + (None,)


def group_norm_act(x: torch.Tensor, num_groups: int, weight: torch.Tensor | None = None,
                   bias: torch.Tensor | None = None, eps: float = 1e-5, activation: str = "relu6",
                   backward: str = "exact", surrogate: Surrogate | None = STEP,
                   backend: str | None = None) -> torch.Tensor:
    """``f(group_norm(x, num_groups, weight, bias, eps))`` in one kernel, keeping a 1-bit mask.

    ``x``: contiguous (N, C, H, W), float32 / float16 / bfloat16, ``C % num_groups == 0``.
    ``weight`` / ``bias``: per-channel ``gamma`` / ``beta`` (None: 1 / 0). ``activation``:
    one of :data:`kernels.activations.ACTIVATIONS`. ``backward``: ``"exact"`` (keeps ``x``) or
    ``"detached"`` (keeps only the mask and the statistics; ``weight`` must then not train).
    ``surrogate``: the 1-bit Hard-Swish derivative, or None for the true one (exact mode only).
    ``backend``: ``"triton"`` or ``"torch"`` forces one (default:
    :func:`kernels.runtime.choose_backend`). The module docstring gives the equations.
    """
    if has_torch_function_variadic(x, weight, bias):  # tensor-likes, e.g. the memory engine's trace
        return handle_torch_function(group_norm_act, (x, weight, bias), x, num_groups, weight, bias, eps=eps,
                                     activation=activation, backward=backward, surrogate=surrogate,
                                     backend=backend)
    check_input(x)
    check_groups(num_groups, x)
    check_channel_vector("weight", weight, x, optional=True)
    check_channel_vector("bias", bias, x, optional=True)
    # Expanded or strided gamma / beta (e.g. w.expand(C), w[::2]): both backends read them contiguous.
    weight, bias = (None if t is None else t.contiguous() for t in (weight, bias))
    eps = check_eps(eps)
    check_mode(backward)
    check_surrogate(surrogate, activation, allow_true_derivative=backward == "exact")
    chosen = choose_backend(x, backend)
    params = [t for t in (weight, bias) if t is not None]
    if not (torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params))):
        y, _, _, _ = group_norm_act_forward(x, num_groups, weight, bias, eps=eps, activation=activation,
                                            surrogate=surrogate, write_mask=False, backend=chosen)
        return y
    if backward == "detached" and weight is not None and weight.requires_grad:
        raise ValueError("backward='detached' keeps no x, so it cannot give d(gamma): freeze weight "
                         "(requires_grad_(False)) or use backward='exact'")
    return _GroupNormAct.apply(x, weight, bias, _Spec(num_groups, eps, activation, backward, surrogate, chosen))


__all__ = ["GroupNormActSaved", "group_norm_act", "group_norm_act_forward", "group_norm_act_forward_reference",
           "saved_by_group_norm_act"]
