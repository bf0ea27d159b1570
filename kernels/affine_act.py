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
- :func:`norm_act_forward` and ``_norm_act_fwd_kernel``: the normalise-scale-shift-activate-pack
  pass over the row tiles of :mod:`kernels.tiling`, which :mod:`kernels.group_norm_act` runs with
  its per-(sample, group) statistics and :func:`affine_act_forward` with one slab of mean 0 and
  rstd 1;
- :func:`saved_by_affine_act`: what the function keeps for backward, for the memory engine;
- :func:`frozen_scale_shift`: ``scale`` and ``shift`` of a norm with frozen statistics (also
  used by MobileTL's plain-torch shift-only norm, ``ondevice.blocks.FrozenStatsBatchNorm2d``);
- ``affine_act_tile``: the Triton device function of the scale-shift-activate step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.overrides import handle_torch_function, has_torch_function_variadic

from . import activations
from .activations import STEP, Surrogate
from .activations_triton import code
from .bits import BITS, packed_words
from .checks import MASK_ONLY, check_channel_vector, check_input, check_surrogate
from .norm_act_backward import differentiable_once, norm_act_backward
from .runtime import choose_backend, launch
from .tiling import NUM_WARPS, ROWS, SEGS, aligned, channel_vectors, check_size, row_grid, sm_count

try:
    import triton
    import triton.language as tl

    from .activations_triton import act_forward, act_mask
    from .bits import store_segments
    from .tiling import tile_at, tile_ids, tile_rows
except ImportError:  # pragma: no cover - triton is pinned in requirements.txt
    triton = None

_IDENTITY: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}  # mean 0, rstd 1


def affine_act_forward_reference(x, scale, shift, *, activation: str, surrogate: Surrogate | None,
                                 write_mask: bool):
    """Plain-torch twin of :func:`affine_act_forward`: ``(y, words)``, ``words`` None unless
    ``write_mask``. ``z = x * scale + shift`` is computed in float32 (one ``addcmul``) and rounded
    to ``x``'s dtype before the activation and its mask, as a separate norm layer would round
    it; the activation then overwrites ``z``, so ``y`` is the only tensor of ``x``'s size made."""
    C = x.shape[1]
    z = torch.addcmul(shift.float().view(1, C, 1, 1), x.float(), scale.float().view(1, C, 1, 1)).to(x.dtype)
    words = None
    if write_mask:
        words = activations.packed_mask(z, activation, STEP if surrogate is None else surrogate)
    y = activations.forward(z, activation, inplace=True)
    return y, words


if triton is not None:

    @triton.jit
    def affine_act_tile(
        v,  # float32 tile: x_hat (GroupNorm) or x (affine_act)
        a,  # per-row scale, broadcast over the tile (gamma)
        b,  # per-row shift, broadcast over the tile (beta)
        threshold,  # Hard-Swish's surrogate threshold tau
        ACT: tl.constexpr,  # activation code (kernels.activations_triton.CODES)
        OUT_DTYPE: tl.constexpr,  # y's dtype: z is rounded to it, as a separate norm layer would
    ):
        """Device function: ``z = v * a + b`` in float32, rounded to ``OUT_DTYPE``; returns
        ``f(z)`` in ``OUT_DTYPE`` and the mask bits of ``z``."""
        z = (v * a + b).to(OUT_DTYPE).to(tl.float32)
        return act_forward(z, ACT).to(OUT_DTYPE), act_mask(z, threshold, ACT)

    @triton.jit(do_not_specialize=["n_rows", "C", "Cg", "iters"])
    def _norm_act_fwd_kernel(
        x_ptr,  # input, (N, C, H, W) contiguous, read as N*C rows of HW elements
        mean_ptr,  # float32, one mean per slab (per (sample, group); one slab of 0 for affine_act)
        rstd_ptr,  # float32, one 1/sqrt(var + eps) per slab (1 for affine_act)
        w_ptr,  # float32 (C,): gamma, the per-channel scale
        b_ptr,  # float32 (C,): beta, the per-channel shift
        y_ptr,  # output, like x
        words_ptr,  # int32 mask words, bit i % 32 of word i // 32 (unused unless WRITE_MASK)
        n_rows,  # N * C
        C,  # channels
        Cg,  # rows per slab: channels per group (GroupNorm), N * C (affine_act)
        HW,  # elements per row, H * W
        iters,  # tiles per program along a row (kernels.tiling.row_grid)
        threshold,  # Hard-Swish's surrogate threshold (its mask bit is z > threshold)
        ACT: tl.constexpr,  # activation code (kernels.activations_triton.CODES)
        WRITE_MASK: tl.constexpr,  # whether to pack and store the 1-bit mask
        ROWS: tl.constexpr,  # rows per tile
        SEGS: tl.constexpr,  # 32-element segments per row of a tile
    ):
        # Legend: a row is one (sample, channel) of HW elements; a slab is Cg consecutive rows,
        # which share one mean and rstd. Row r is sample r // C, channel r % C, slab r // Cg.
        # Program (i, j) owns rows i*ROWS.. and tiles j*iters.. along them, walked in reverse
        # grid order (the statistics pass read them last: they may still be in L2).
        block, chunk = tile_ids(REVERSED=True)
        rows, rows1 = tile_rows(block, ROWS)
        live = rows < n_rows
        channel = rows % C
        slab = rows // Cg
        # Per row: its slab's statistics, its channel's gamma and beta.
        mean = tl.load(mean_ptr + slab, mask=live, other=0.0)
        rstd = tl.load(rstd_ptr + slab, mask=live, other=0.0)
        gamma = tl.load(w_ptr + channel, mask=live, other=0.0)
        beta = tl.load(b_ptr + channel, mask=live, other=0.0)
        for i in range(0, iters):
            col0 = (chunk * iters + i) * (SEGS * 32)
            idx, inside, seg_col = tile_at(rows, n_rows, HW, col0, SEGS)
            # Normalise, scale, shift, activate; write y and (optionally) the mask.
            x_hat = (tl.load(x_ptr + idx, mask=inside, other=0.0).to(tl.float32) - mean) * rstd
            y, bits = affine_act_tile(x_hat, gamma, beta, threshold, ACT, y_ptr.dtype.element_ty)
            tl.store(y_ptr + idx, y, mask=inside)
            if WRITE_MASK:
                seg_first = rows * HW + seg_col  # flat index of each 32-element segment's first element
                seg_inside = live & (seg_col < HW)
                store_segments(words_ptr, bits & inside, seg_first, seg_inside, HW)


def norm_act_forward(x, mean, rstd, *, slab_rows: int, weight, bias, activation: str,
                     surrogate: Surrogate | None, write_mask: bool):
    """``(y, words)`` of ``y = f(weight_c * (x - mean) * rstd + bias_c)``, one Triton launch over the
    tiles of :mod:`kernels.tiling`: row ``r`` (sample ``r // C``, channel ``r % C``) is normalised
    with ``mean[r // slab_rows]``, ``rstd[r // slab_rows]`` (float32). GroupNorm passes its
    per-(sample, group) statistics with ``slab_rows = C / G``; :func:`affine_act_forward` one slab
    with mean 0 and rstd 1. ``weight`` / ``bias``: per-channel vectors, None for 1 / 0 (any dtype
    and strides: they are read as contiguous float32). ``words``: the packed mask, or None."""
    check_size(x)
    N, C = x.shape[:2]
    hw = x[0, 0].numel()
    x = aligned(x)
    w, b = channel_vectors(weight, bias, C, x.device)
    y = torch.empty_like(x)
    words = None
    if write_mask and hw % BITS == 0:  # every mask word belongs to one row: plain stores
        words = torch.empty(packed_words(x.numel()), dtype=torch.int32, device=x.device)
    elif write_mask:  # words shared by two rows are OR-ed in: they must start at zero
        words = torch.zeros(packed_words(x.numel()), dtype=torch.int32, device=x.device)
    dummy = y  # stands for the pointers a constexpr flag switches off
    plan = row_grid(N * C, hw, sm_count(x.device))
    threshold = (STEP if surrogate is None else surrogate).threshold
    launch(_norm_act_fwd_kernel, plan.grid, x, mean, rstd, w, b, y, dummy if words is None else words, N * C, C,
           slab_rows, hw, plan.iters, float(threshold), ACT=code(activation), WRITE_MASK=write_mask, ROWS=ROWS,
           SEGS=SEGS, num_warps=NUM_WARPS)
    return y, words


def _identity_stats(device) -> tuple[torch.Tensor, torch.Tensor]:
    if device not in _IDENTITY:
        _IDENTITY[device] = (torch.zeros(1, device=device), torch.ones(1, device=device))
    return _IDENTITY[device]


def affine_act_forward(x, scale, shift, *, activation: str, surrogate: Surrogate | None,
                       write_mask: bool, backend: str):
    """``(y, words)`` of ``y = f(scale * x + shift)`` (per channel), one Triton kernel;
    ``words`` is the packed mask (None unless ``write_mask``). Arguments are not checked here."""
    if backend == "torch":
        return affine_act_forward_reference(x, scale, shift, activation=activation, surrogate=surrogate,
                                            write_mask=write_mask)
    zero, one = _identity_stats(x.device)
    return norm_act_forward(x, zero, one, slab_rows=x.shape[0] * x.shape[1], weight=scale, bias=shift,
                            activation=activation, surrogate=surrogate, write_mask=write_mask)


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
        plan = saved_by_affine_act(need_dx=ctx.needs_input_grad[0], need_shift=ctx.needs_input_grad[2])
        y, words = affine_act_forward(x, scale, shift, activation=spec.activation, surrogate=spec.surrogate,
                                      write_mask=plan.mask, backend=spec.backend)
        ctx.save_for_backward(words, scale if plan.scale else None)
        ctx.spec = spec
        ctx.shift_dtype = shift.dtype
        return y

    @staticmethod
    def backward(ctx, dy):
        words, scale = ctx.saved_tensors
        spec = ctx.spec
        with torch.no_grad():
            dx, _, dshift = norm_act_backward(
                dy, x=None, words=words, mean=None, rstd=None, weight=scale, bias=None, groups=dy.shape[1],
                activation=spec.activation, surrogate=spec.surrogate, exact=False,
                need_dx=ctx.needs_input_grad[0], need_dw=False, need_db=ctx.needs_input_grad[2],
                backend=spec.backend)
            grads = (dx, None, None if dshift is None else dshift.to(ctx.shift_dtype))
        return differentiable_once("affine_act", grads) + (None,)


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
    scale, shift = scale.contiguous(), shift.contiguous()  # expanded or strided: read contiguous, both backends
    check_surrogate(surrogate, activation, allow_true_derivative=False, keeps_input=MASK_ONLY)
    chosen = choose_backend(x, backend)
    if not (torch.is_grad_enabled() and (x.requires_grad or scale.requires_grad or shift.requires_grad)):
        y, _ = affine_act_forward(x, scale, shift, activation=activation, surrogate=surrogate, write_mask=False,
                                  backend=chosen)
        return y
    if scale.requires_grad:
        raise ValueError("scale must not require a gradient: affine_act keeps only the 1-bit mask, and "
                         "d(scale) needs x (train only the shift, or use group_norm_act / "
                         "torch.nn.BatchNorm2d, which keep x)")
    return _AffineAct.apply(x, scale, shift, _Spec(activation, surrogate, chosen))


__all__ = ["AffineSaved", "affine_act", "frozen_scale_shift", "affine_act_forward", "affine_act_forward_reference",
           "saved_by_affine_act"]
