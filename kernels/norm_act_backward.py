"""The backward pass of the fused norm-and-activation cores (chapter 4, "The backward").

Both cores compute ``y = f(z)`` with ``z = gamma * x_hat + beta`` per channel, where
``x_hat = (x - mu) * rstd`` uses per-(sample, group) statistics (GroupNorm) or ``x_hat = x`` with
``gamma = scale`` (a frozen-statistics norm, :mod:`kernels.affine_act`). With ``dz = dy * f'(z)``
taken from the 1-bit mask (or, for Hard-Swish in exact mode, from ``z`` recomputed from ``x``):

- ``d(beta)_c = sum_{n, h, w} dz`` and ``d(gamma)_c = sum_{n, h, w} dz * x_hat``;
- ``exact`` (the GroupNorm vector-Jacobian product, chapter 4 eq. (VJP)): with ``g = gamma * dz``
  and means over the ``M = (C / G) H W`` elements of one (sample, group),
  ``dx = rstd * (g - mean(g) - x_hat * mean(g * x_hat))``;
- ``detached`` (statistics treated as constants, and the frozen-statistics norm):
  ``dx = gamma * rstd * dz``.

One Triton program handles one (sample, group) slab: a first sweep accumulates the two group
means and writes per-(sample, channel) partial sums of ``dz`` and ``dz * x_hat``; an exact ``dx``
needs a second sweep. The partials are summed over the batch in a fixed order by torch, so
``d(gamma)`` and ``d(beta)`` are deterministic (no atomics). :func:`norm_act_backward_reference`
is the plain-torch twin.
"""

from __future__ import annotations

import torch

from . import activations
from .activations import STEP, Surrogate
from .activations_triton import code

try:
    import triton
    import triton.language as tl

    from .activations_triton import act_derivative
    from .bits import bit_at
except ImportError:  # pragma: no cover - triton is pinned in requirements.txt
    triton = None

TILE = 4096  # elements per tile of a backward program


def _dz_reference(dy, x, words, mean, rstd, weight, bias, activation, surrogate):
    """``dz`` in float32: from the packed mask, chunk by chunk, or (``words`` None) from the true
    derivative at ``z = gamma * x_hat + beta``, recomputed from ``x`` and rounded as the forward
    rounded it."""
    if words is not None:
        return activations.backward_from_words(dy, words, activation, STEP if surrogate is None else surrogate,
                                               dtype=torch.float32)
    N, C = dy.shape[:2]
    groups = mean.shape[1]
    x_hat = (x.float().view(N, groups, -1) - mean[..., None]) * rstd[..., None]
    z = x_hat.view(dy.shape) * (1.0 if weight is None else weight.float().view(1, C, 1, 1)) \
        + (0.0 if bias is None else bias.float().view(1, C, 1, 1))
    return dy.float() * activations.derivative(z.to(dy.dtype).float(), activation)


def norm_act_backward_reference(dy, *, x, words, mean, rstd, weight, bias, groups: int,
                                activation: str, surrogate: Surrogate | None, exact: bool,
                                need_dx: bool, need_dw: bool, need_db: bool):
    """Plain-torch twin of :func:`norm_act_backward` (same arguments and results).

    ``dz`` comes from the mask; the exact GroupNorm part (eq. (VJP), with ``d(gamma)``) is
    PyTorch's own GroupNorm backward, ``native_group_norm_backward``, so on a CPU the twin runs
    at stock speed; the detached part is one multiply, done in place on ``dz``. Temporaries: ``dz``
    (float32, the size of ``dy``) and the mask, one chunk of booleans at a time.
    """
    N, C = dy.shape[:2]
    dz = _dz_reference(dy, x, words, mean, rstd, weight, bias, activation, surrogate)
    if exact and x is not None and (need_dx or need_dw):
        dx, dw, db = torch.ops.aten.native_group_norm_backward(
            dz, x.float(), mean, rstd, None if weight is None else weight.float(), N, C,
            dy[0, 0].numel(), groups, [need_dx, need_dw, need_db])
        return (None if dx is None else dx.to(dy.dtype)), dw, db
    if need_dw:
        raise ValueError("d(gamma) needs x_hat: it is computed in exact mode only, where x is kept")
    db = dz.sum(dim=(0, 2, 3)) if need_db else None
    dx = None
    if need_dx:  # detached statistics (or a frozen-statistics norm): dx = gamma * rstd * dz
        scale = torch.ones(1, C, device=dy.device) if weight is None else weight.float().view(1, C)
        if rstd is not None:
            scale = scale * rstd.repeat_interleave(C // groups, dim=1)  # (N, C): rstd of each channel's group
        dx = dz.mul_(scale.view(-1, C, 1, 1)).to(dy.dtype)
    return dx, None, db


if triton is not None:

    @triton.jit
    def _dz_tile(dy_ptr, x_ptr, words_ptr, idx, inside, mean, rstd, gam, bet, low, high,
                 ACT: tl.constexpr, HAS_X: tl.constexpr, TRUE_DERIVATIVE: tl.constexpr):
        """``dz`` and ``x_hat`` (float32) of one tile (``x_hat`` is ``dy`` when ``x`` is not kept)."""
        dy = tl.load(dy_ptr + idx, mask=inside, other=0.0)
        x_hat = dy.to(tl.float32)
        if HAS_X:
            x_hat = (tl.load(x_ptr + idx, mask=inside, other=0.0).to(tl.float32) - mean) * rstd
        if TRUE_DERIVATIVE:  # z rounded as the forward rounded it, then f'(z)
            z = (x_hat * gam + bet).to(dy.dtype).to(tl.float32)
            d = act_derivative(z, ACT)
        else:
            d = tl.where(bit_at(words_ptr, idx, inside) != 0, high, low)
        dz = tl.where(inside, dy.to(tl.float32) * d, 0.0)
        return dz, x_hat

    @triton.jit
    def load_affine(w_ptr, b_ptr, chan, inside, HAS_W: tl.constexpr, HAS_B: tl.constexpr):
        """gamma and beta of the channels ``chan`` in float32 (1 and 0 where the norm has none)."""
        gam = chan.to(tl.float32) * 0.0 + 1.0
        bet = chan.to(tl.float32) * 0.0
        if HAS_W:
            gam = tl.load(w_ptr + chan, mask=inside, other=0.0).to(tl.float32)
        if HAS_B:
            bet = tl.load(b_ptr + chan, mask=inside, other=0.0).to(tl.float32)
        return gam, bet

    @triton.jit
    def _norm_act_bwd_kernel(dy_ptr, x_ptr, words_ptr, mean_ptr, rstd_ptr, w_ptr, b_ptr,
                             dx_ptr, dw_ptr, db_ptr, C, HW, G, Cg, low, high,
                             ACT: tl.constexpr, EXACT: tl.constexpr, HAS_X: tl.constexpr,
                             HAS_STATS: tl.constexpr, TRUE_DERIVATIVE: tl.constexpr,
                             HAS_W: tl.constexpr, HAS_B: tl.constexpr, NEED_DX: tl.constexpr,
                             NEED_DW: tl.constexpr, NEED_DB: tl.constexpr,
                             CBLOCK: tl.constexpr, HBLOCK: tl.constexpr):
        # One program per (sample n, group g): a (CBLOCK channels, HBLOCK pixels) tile at a time.
        pid = tl.program_id(0)
        n = pid // G
        g = pid % G
        start = pid.to(tl.int64) * Cg * HW
        if HAS_STATS:
            mean = tl.load(mean_ptr + pid)
            rstd = tl.load(rstd_ptr + pid)
        else:
            mean = 0.0
            rstd = 1.0
        rows = tl.arange(0, CBLOCK)
        cols = tl.arange(0, HBLOCK)
        sum_g = tl.zeros([CBLOCK, HBLOCK], dtype=tl.float32)  # sum of gamma * dz over the group
        sum_gx = tl.zeros([CBLOCK, HBLOCK], dtype=tl.float32)  # sum of gamma * dz * x_hat
        for c0 in range(0, Cg, CBLOCK):
            ch = c0 + rows
            ch_in = ch < Cg
            chan = g * Cg + ch
            gam, bet = load_affine(w_ptr, b_ptr, chan, ch_in, HAS_W, HAS_B)
            part_b = tl.zeros([CBLOCK, HBLOCK], dtype=tl.float32)
            part_w = tl.zeros([CBLOCK, HBLOCK], dtype=tl.float32)
            for h0 in range(0, HW, HBLOCK):
                hw = h0 + cols
                inside = ch_in[:, None] & (hw < HW)[None, :]
                idx = start + ch[:, None].to(tl.int64) * HW + hw[None, :]
                dz, x_hat = _dz_tile(dy_ptr, x_ptr, words_ptr, idx, inside, mean, rstd, gam[:, None],
                                     bet[:, None], low, high, ACT, HAS_X, TRUE_DERIVATIVE)
                if NEED_DB:
                    part_b += dz
                if NEED_DW:
                    part_w += dz * x_hat
                if NEED_DX:
                    if EXACT:
                        sum_g += dz * gam[:, None]
                        sum_gx += dz * gam[:, None] * x_hat
                    else:  # detached statistics: dx = gamma * rstd * dz, in this one sweep
                        dx = dz * gam[:, None] * rstd
                        tl.store(dx_ptr + idx, dx.to(dx_ptr.dtype.element_ty), mask=inside)
            if NEED_DB:
                tl.store(db_ptr + n * C + chan, tl.sum(part_b, axis=1), mask=ch_in)
            if NEED_DW:
                tl.store(dw_ptr + n * C + chan, tl.sum(part_w, axis=1), mask=ch_in)
        if NEED_DX:
            if EXACT:  # second sweep: dx = rstd * (g - mean(g) - x_hat * mean(g * x_hat))
                m_g = tl.sum(tl.sum(sum_g, axis=1), axis=0) / (Cg * HW)
                m_gx = tl.sum(tl.sum(sum_gx, axis=1), axis=0) / (Cg * HW)
                for c0 in range(0, Cg, CBLOCK):
                    ch = c0 + rows
                    ch_in = ch < Cg
                    chan = g * Cg + ch
                    gam, bet = load_affine(w_ptr, b_ptr, chan, ch_in, HAS_W, HAS_B)
                    for h0 in range(0, HW, HBLOCK):
                        hw = h0 + cols
                        inside = ch_in[:, None] & (hw < HW)[None, :]
                        idx = start + ch[:, None].to(tl.int64) * HW + hw[None, :]
                        dz, x_hat = _dz_tile(dy_ptr, x_ptr, words_ptr, idx, inside, mean, rstd,
                                             gam[:, None], bet[:, None], low, high, ACT, HAS_X,
                                             TRUE_DERIVATIVE)
                        dx = rstd * (dz * gam[:, None] - m_g - x_hat * m_gx)
                        tl.store(dx_ptr + idx, dx.to(dx_ptr.dtype.element_ty), mask=inside)


def next_pow2(n: int) -> int:
    """The smallest power of two >= ``n`` (>= 1): Triton block sizes."""
    return 1 << max(int(n) - 1, 0).bit_length()


def tile_shape(channels_per_group: int, hw: int) -> tuple[int, int]:
    """(CBLOCK, HBLOCK) of a backward program: whole rows of pixels first, then channels, up to
    :data:`TILE` elements."""
    hblock = max(16, min(next_pow2(hw), TILE))
    return max(1, min(next_pow2(channels_per_group), TILE // hblock)), hblock


def norm_act_backward(dy, *, x, words, mean, rstd, weight, bias, groups: int, activation: str,
                      surrogate: Surrogate | None, exact: bool, need_dx: bool, need_dw: bool,
                      need_db: bool, backend: str):
    """``(dx, d_weight, d_bias)`` of a fused norm + activation (module docstring for the math).

    ``x``, ``mean``, ``rstd`` may be ``None`` where the forward did not keep them (then
    ``x_hat = x`` and ``rstd = 1``, the frozen-statistics case); ``words`` is ``None`` when the
    true Hard-Swish derivative is recomputed from ``x``. Results not asked for are ``None``;
    ``d_weight`` and ``d_bias`` are float32 (the caller casts them to the parameters' dtype).
    ``backend``: ``"triton"`` or ``"torch"`` (already chosen by the caller).
    """
    dy = dy.contiguous()
    args = dict(x=x, words=words, mean=mean, rstd=rstd, weight=weight, bias=bias, groups=groups,
                activation=activation, surrogate=surrogate, exact=exact, need_dx=need_dx,
                need_dw=need_dw, need_db=need_db)
    if backend == "torch":
        return norm_act_backward_reference(dy, **args)
    N, C, H, W = dy.shape
    cg = C // groups
    dx = torch.empty_like(dy) if need_dx else None
    part_w = torch.empty(N, C, dtype=torch.float32, device=dy.device) if need_dw else None
    part_b = torch.empty(N, C, dtype=torch.float32, device=dy.device) if need_db else None
    low, high = activations.levels(activation, STEP if surrogate is None else surrogate)
    cblock, hblock = tile_shape(cg, H * W)
    dummy = dy  # stands for the pointers a constexpr flag switches off
    _norm_act_bwd_kernel[(N * groups,)](
        dy, dummy if x is None else x, dummy if words is None else words,
        dummy if mean is None else mean, dummy if rstd is None else rstd,
        dummy if weight is None else weight, dummy if bias is None else bias,
        dummy if dx is None else dx, dummy if part_w is None else part_w,
        dummy if part_b is None else part_b, C, H * W, groups, cg, float(low), float(high),
        ACT=code(activation), EXACT=exact, HAS_X=x is not None, HAS_STATS=rstd is not None,
        TRUE_DERIVATIVE=words is None, HAS_W=weight is not None, HAS_B=bias is not None,
        NEED_DX=need_dx, NEED_DW=need_dw, NEED_DB=need_db, CBLOCK=cblock, HBLOCK=hblock,
        num_warps=8 if cblock * hblock >= 2048 else 4)
    # The batch reduction of the partials, in a fixed order: deterministic d(gamma), d(beta).
    dw = part_w.sum(dim=0) if need_dw else None
    db = part_b.sum(dim=0) if need_db else None
    return dx, dw, db


__all__ = ["norm_act_backward", "norm_act_backward_reference", "tile_shape"]
