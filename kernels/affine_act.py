"""A frozen-statistics norm + activation that keeps only a 1-bit mask (chapter 4, and the
shift-only norms of MobileTL, chapter 3).

With its statistics frozen (BatchNorm in eval mode, or MobileTL's first two IRB norms) a norm is
a per-channel affine map, so norm + activation is

    z = scale_c * x + shift_c,     y = f(z),

and its backward needs no activation at all: ``dz = dy * f'(z)`` comes from the mask,
``dx = scale_c * dz`` and ``d(shift)_c = sum_{n,h,w} dz``. (``d(scale)`` would need ``x``:
``scale`` must not require a gradient here.) :func:`affine_act` keeps the packed mask, one bit
per element in the layout of :mod:`kernels.bits`, and ``scale`` when ``x`` needs a gradient.

- :func:`affine_act`: the autograd-aware function (Triton, or the torch twin; ``backend=``);
- :func:`affine_act_forward` / :func:`affine_act_forward_reference`: the forward kernel and its
  plain-torch twin (``y`` and the packed mask);
- :func:`saved_by_affine_act`: what the function keeps for backward, for the memory engine;
- :func:`frozen_scale_shift`: ``scale`` and ``shift`` of a norm with frozen statistics (also
  used by MobileTL's plain-torch shift-only norm, ``ondevice.blocks.FrozenStatsBatchNorm2d``);
- ``affine_act_tile``: the Triton device function that :mod:`kernels.group_norm_act` reuses for
  its normalise-and-activate step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.overrides import handle_torch_function, has_torch_function_variadic

from . import activations
from .activations import STEP, Surrogate
from .activations_triton import code
from .bits import packed_words
from .checks import check_channel_vector, check_input, check_surrogate
from .norm_act_backward import norm_act_backward
from .runtime import choose_backend

try:
    import triton
    import triton.language as tl

    from .activations_triton import act_forward, act_mask
    from .bits import pack_rows
except ImportError:  # pragma: no cover - triton is pinned in requirements.txt
    triton = None

WORDS_PER_PROGRAM = 128  # 4096 elements per program of the forward kernel


def affine_act_forward_reference(x, scale, shift, activation: str, surrogate: Surrogate | None,
                                 write_mask: bool):
    """Plain-torch twin of :func:`affine_act_forward`: ``(y, words)``, ``words`` None unless
    ``write_mask``. ``z = x * scale + shift`` is computed in float32 (one ``addcmul``) and rounded
    to ``x``'s dtype before the activation and its mask, as a separate norm layer would round
    it; the activation then overwrites ``z``, so ``y`` is the only tensor of ``x``'s size made."""
    C = x.shape[1]
    z = torch.addcmul(shift.float().view(1, C, 1, 1), x.float(), scale.float().view(1, C, 1, 1)).to(x.dtype)
    words = activations.packed_mask(z, activation, STEP if surrogate is None else surrogate) if write_mask else None
    return activations.forward(z, activation, inplace=True), words


if triton is not None:

    @triton.jit
    def affine_act_tile(v, a, b, threshold, ACT: tl.constexpr, OUT_DTYPE: tl.constexpr):
        """Device function: ``z = v * a + b`` in float32, rounded to ``OUT_DTYPE``; returns
        ``f(z)`` in ``OUT_DTYPE`` and the mask bits of ``z``."""
        z = (v * a + b).to(OUT_DTYPE).to(tl.float32)
        return act_forward(z, ACT).to(OUT_DTYPE), act_mask(z, threshold, ACT)

    @triton.jit
    def _affine_act_fwd_kernel(x_ptr, a_ptr, b_ptr, y_ptr, words_ptr, numel, C, HW, threshold,
                               ACT: tl.constexpr, WRITE_MASK: tl.constexpr, WORDS: tl.constexpr):
        # A program owns WORDS whole mask words: a (WORDS, 32) tile of elements, one row per word.
        word = tl.program_id(0).to(tl.int64) * WORDS + tl.arange(0, WORDS)
        idx = word[:, None] * 32 + tl.arange(0, 32)[None, :]
        inside = idx < numel
        chan = ((idx // HW) % C).to(tl.int32)
        v = tl.load(x_ptr + idx, mask=inside, other=0.0).to(tl.float32)
        a = tl.load(a_ptr + chan, mask=inside, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + chan, mask=inside, other=0.0).to(tl.float32)
        y, m = affine_act_tile(v, a, b, threshold, ACT, y_ptr.dtype.element_ty)
        tl.store(y_ptr + idx, y, mask=inside)
        if WRITE_MASK:
            tl.store(words_ptr + word, pack_rows(m & inside), mask=word * 32 < numel)


def affine_act_forward(x, scale, shift, activation: str, surrogate: Surrogate | None,
                       write_mask: bool, backend: str):
    """``(y, words)`` of ``y = f(scale * x + shift)`` (per channel), one Triton kernel;
    ``words`` is the packed mask (None unless ``write_mask``). Arguments are not checked here."""
    if backend == "torch":
        return affine_act_forward_reference(x, scale, shift, activation, surrogate, write_mask)
    N, C, H, W = x.shape
    y = torch.empty_like(x)
    words = torch.empty(packed_words(x.numel()), dtype=torch.int32, device=x.device) if write_mask else None
    threshold = (STEP if surrogate is None else surrogate).threshold
    _affine_act_fwd_kernel[(triton.cdiv(packed_words(x.numel()), WORDS_PER_PROGRAM),)](
        x, scale, shift, y, y if words is None else words, x.numel(), C, H * W, float(threshold),
        ACT=code(activation), WRITE_MASK=write_mask, WORDS=WORDS_PER_PROGRAM, num_warps=8)
    return y, words


@dataclass(frozen=True)
class AffineSaved:
    """What :func:`affine_act` keeps for backward."""

    mask: bool  # the packed mask: ceil(numel / 32) int32 words
    scale: bool  # the per-channel scale (a computed tensor, e.g. gamma / sqrt(running_var + eps))


def saved_by_affine_act(need_dx: bool, need_shift: bool) -> AffineSaved:
    """The mask whenever a gradient flows back through the activation; ``scale`` only for dx."""
    return AffineSaved(mask=need_dx or need_shift, scale=need_dx)


@dataclass(frozen=True)
class _Spec:
    activation: str
    surrogate: Surrogate | None
    backend: str


class _AffineAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, shift, spec: _Spec):
        plan = saved_by_affine_act(ctx.needs_input_grad[0], ctx.needs_input_grad[2])
        y, words = affine_act_forward(x, scale, shift, spec.activation, spec.surrogate, plan.mask, spec.backend)
        ctx.save_for_backward(words, scale if plan.scale else None)
        ctx.spec = spec
        ctx.shift_dtype = shift.dtype
        return y

    @staticmethod
    def backward(ctx, dy):
        words, scale = ctx.saved_tensors
        spec = ctx.spec
        dx, _, dshift = norm_act_backward(
            dy, x=None, words=words, mean=None, rstd=None, weight=scale, bias=None, groups=dy.shape[1],
            activation=spec.activation, surrogate=spec.surrogate, exact=False,
            need_dx=ctx.needs_input_grad[0], need_dw=False, need_db=ctx.needs_input_grad[2],
            backend=spec.backend)
        return dx, None, None if dshift is None else dshift.to(ctx.shift_dtype), None


def frozen_scale_shift(weight, bias, running_mean, running_var, eps: float):
    """The affine map of a norm with frozen statistics: ``scale = weight / sqrt(running_var +
    eps)``, ``shift = bias - running_mean * scale`` (``weight`` / ``bias`` ``None``: 1 / 0).

    Written with ``torch`` functions the memory engine's shape trace follows; when ``weight``
    trains, autograd keeps ``1 / sqrt(running_var + eps)`` (C values) for its gradient.
    """
    scale = torch.rsqrt(running_var + eps)
    if weight is not None:
        scale = torch.mul(weight, scale)
    shift = torch.neg(torch.mul(running_mean, scale))
    if bias is not None:
        shift = torch.add(bias, shift)
    return scale, shift


def affine_act(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, activation: str = "relu6",
               surrogate: Surrogate | None = STEP, backend: str | None = None) -> torch.Tensor:
    """``f(scale_c * x + shift_c)`` for an (N, C, H, W) tensor, keeping a 1-bit mask for backward.

    ``activation``: one of :data:`kernels.activations.ACTIVATIONS`;
    ``surrogate``: the two-level derivative used for Hard-Swish (ignored for relu / relu6, whose
    mask is exact). ``scale`` must not require a gradient (module docstring); ``x`` and ``shift``
    may. ``backend``: ``"triton"`` or ``"torch"`` forces one (default:
    :func:`kernels.runtime.choose_backend`).
    """
    if has_torch_function_variadic(x, scale, shift):  # tensor-likes, e.g. the memory engine's trace
        return handle_torch_function(affine_act, (x, scale, shift), x, scale, shift, activation=activation,
                                     surrogate=surrogate, backend=backend)
    check_input(x)
    check_channel_vector("scale", scale, x, optional=False)
    check_channel_vector("shift", shift, x, optional=False)
    check_surrogate(surrogate, activation, allow_true_derivative=False)
    chosen = choose_backend(x, backend)
    if not (torch.is_grad_enabled() and (x.requires_grad or scale.requires_grad or shift.requires_grad)):
        return affine_act_forward(x, scale, shift, activation, surrogate, False, chosen)[0]
    if scale.requires_grad:
        raise ValueError("scale must not require a gradient: affine_act keeps only the 1-bit mask, and "
                         "d(scale) needs x (train only the shift, or use group_norm_act / "
                         "torch.nn.BatchNorm2d, which keep x)")
    return _AffineAct.apply(x, scale, shift, _Spec(activation, surrogate, chosen))


__all__ = ["AffineSaved", "affine_act", "frozen_scale_shift", "affine_act_forward", "affine_act_forward_reference",
           "saved_by_affine_act"]
