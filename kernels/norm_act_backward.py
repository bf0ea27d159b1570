"""The backward pass of the fused norm-and-activation cores (chapter 4, "The backward").

Both cores compute ``y = f(z)`` with ``z = gamma * x_hat + beta`` per channel, where
``x_hat = (x - mu) * rstd`` uses per-(sample, group) statistics (GroupNorm) or ``x_hat = x`` with
``gamma = scale`` (a frozen-statistics norm, :mod:`kernels.affine_act`). With ``dz = dy * f'(z)``
taken from the 1-bit mask (or, for Hard-Swish in exact mode, from ``z`` recomputed from ``x``):

- ``d(beta)_c = sum_{n, h, w} dz`` and ``d(gamma)_c = sum_{n, h, w} dz * x_hat``;
- ``exact`` (the GroupNorm vector-Jacobian product, chapter 4 eq. (VJP)): with ``u = gamma * dz``
  (the book's u) and means over the ``|S| = Cg * HW`` elements of one slab (sample, group),
  ``dx = rstd * (u - mean(u) - x_hat * mean(u * x_hat))``;
- ``detached`` (statistics treated as constants, and the frozen-statistics norm):
  ``dx = gamma * rstd * dz``.

The Triton kernels work on the tiles of :mod:`kernels.tiling` (rows = (sample, channel)), so a
launch has about ``numel / 2048`` programs whatever ``N`` and ``G``. Exact mode takes three
launches: ``_partials_kernel`` writes, per row and chunk, the partial sums ``sum dz`` and
``sum dz * x_hat``; ``_vjp_means_kernel`` (one small program per slab) turns them into
``mean(u)`` and ``mean(u * x_hat)`` (``m_g``, ``m_gx`` in the code); ``_exact_dx_kernel``
writes ``dx``. Detached mode is one launch, ``_detached_dx_kernel``, which writes ``dx`` and the
partial sums of ``dz``. ``d(gamma)`` and ``d(beta)`` are the partials summed over the batch and
the chunks by torch, in a fixed order; nothing is accumulated with atomics, so every result is
deterministic.
:func:`norm_act_backward_reference` is the plain-torch twin.
"""

from __future__ import annotations

import torch

from . import activations
from .activations import STEP, Surrogate
from .activations_triton import code
from .runtime import launch
from .tiling import COMBINE_BLOCK, NUM_WARPS, ROWS, SEGS, aligned, channel_vectors, check_size, row_grid, sm_count

try:
    import triton
    import triton.language as tl

    from .activations_triton import act_derivative
    from .bits import segment_bits
    from .tiling import row_sum, tile_at, tile_ids, tile_rows
except ImportError:  # pragma: no cover - triton is pinned in requirements.txt
    triton = None


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

    # Legend for the kernels below: a row is one (sample, channel) of HW = H * W elements; a slab is
    # the Cg consecutive rows of one (sample, group), with one mean and rstd = 1 / sqrt(var + eps);
    # gamma and beta are the per-channel scale and shift (w_ptr, b_ptr); dz = dy * f'(z) is the
    # gradient at the activation's input, read from the 1-bit mask (bit -> low or high) or, with
    # TRUE_DERIVATIVE, recomputed from z = gamma * x_hat + beta. S is the number of chunks of a row
    # (one partial sum per row and chunk); iters the tiles a program walks along its row chunk.

    @triton.jit
    def _dz_tile(
        dy_ptr,  # incoming gradient dL/dy, (N, C, H, W)
        x_ptr,  # the kept input x (read only if HAS_X)
        words_ptr,  # int32 mask words (read unless TRUE_DERIVATIVE)
        rows,  # (ROWS, 1, 1) the tile's rows
        n_rows,  # N * C
        HW,  # elements per row
        col0,  # first column of the tile
        mean,  # (ROWS, 1, 1) each row's slab mean
        rstd,  # (ROWS, 1, 1) each row's slab rstd
        gamma,  # (ROWS, 1, 1) each row's channel scale
        beta,  # (ROWS, 1, 1) each row's channel shift
        low,  # derivative where the mask bit is 0
        high,  # derivative where the mask bit is 1
        ACT: tl.constexpr,  # activation code, for TRUE_DERIVATIVE
        HAS_X: tl.constexpr,  # x is kept: compute x_hat
        TRUE_DERIVATIVE: tl.constexpr,  # f'(z) from z instead of the mask (Hard-Swish, exact mode)
        SEGS: tl.constexpr,  # 32-element segments per row of a tile
    ):
        """The tile at ``col0`` (:mod:`kernels.tiling`): its indices and lanes, ``dz`` and ``x_hat``
        (float32; ``x_hat`` is ``dy`` when ``x`` is not kept)."""
        idx, inside, seg_col = tile_at(rows, n_rows, HW, col0, SEGS)
        dy = tl.load(dy_ptr + idx, mask=inside, other=0.0)
        x_hat = dy.to(tl.float32)
        if HAS_X:
            x_hat = (tl.load(x_ptr + idx, mask=inside, other=0.0).to(tl.float32) - mean) * rstd
        if TRUE_DERIVATIVE:  # z rounded as the forward rounded it, then f'(z)
            z = (x_hat * gamma + beta).to(dy.dtype).to(tl.float32)
            d = act_derivative(z, ACT)
        else:
            bits = segment_bits(words_ptr, rows * HW + seg_col, HW - seg_col, (rows < n_rows) & (seg_col < HW))
            d = tl.where(bits != 0, high, low)
        dz = tl.where(inside, dy.to(tl.float32) * d, 0.0)
        return idx, inside, dz, x_hat

    @triton.jit
    def _row_params(
        mean_ptr,  # float32, one mean per slab (read only if HAS_STATS)
        rstd_ptr,  # float32, one rstd per slab (read only if HAS_STATS)
        w_ptr,  # float32 (C,): gamma
        b_ptr,  # float32 (C,): beta
        rows,  # (ROWS, 1, 1) the tile's rows
        n_rows,  # N * C
        C,  # channels
        Cg,  # rows per slab
        HAS_STATS: tl.constexpr,  # False: mean 0 and rstd 1 (a frozen-statistics norm)
    ):
        """Per row (ROWS, 1, 1): its slab's ``mean`` and ``rstd`` (0 and 1 without statistics),
        its channel's ``gamma`` and ``beta``; and the slab index."""
        live = rows < n_rows
        slab = rows // Cg
        channel = rows % C
        mean = rows.to(tl.float32) * 0.0
        rstd = mean + 1.0
        if HAS_STATS:
            mean = tl.load(mean_ptr + slab, mask=live, other=0.0)
            rstd = tl.load(rstd_ptr + slab, mask=live, other=0.0)
        gamma = tl.load(w_ptr + channel, mask=live, other=0.0)
        beta = tl.load(b_ptr + channel, mask=live, other=0.0)
        return mean, rstd, gamma, beta, slab

    @triton.jit(do_not_specialize=["n_rows", "C", "Cg", "iters", "S"])
    def _partials_kernel(
        dy_ptr,  # dL/dy, (N, C, H, W)
        x_ptr,  # the kept input x (read only if HAS_X)
        words_ptr,  # int32 mask words (read unless TRUE_DERIVATIVE)
        mean_ptr,  # float32 slab means (read only if HAS_X)
        rstd_ptr,  # float32 slab rstds (read only if HAS_X)
        w_ptr,  # float32 (C,): gamma
        b_ptr,  # float32 (C,): beta
        pb_ptr,  # out, float32 (N*C, S): partial sums of dz, for d(beta) and mean(u)
        pw_ptr,  # out, float32 (N*C, S): partial sums of dz * x_hat, for d(gamma) and mean(u x_hat)
        n_rows,  # N * C
        C,  # channels
        Cg,  # rows per slab
        HW,  # elements per row
        iters,  # tiles per program along a row
        S,  # chunks per row: partial sums per row
        low,  # derivative where the mask bit is 0
        high,  # derivative where the mask bit is 1
        ACT: tl.constexpr,  # activation code, for TRUE_DERIVATIVE
        HAS_X: tl.constexpr,  # x is kept: also sum dz * x_hat
        TRUE_DERIVATIVE: tl.constexpr,  # f'(z) from z instead of the mask
        ROWS: tl.constexpr,  # rows per tile
        SEGS: tl.constexpr,  # 32-element segments per row of a tile
    ):
        # Program (i, j) of the tiling: per row, sum(dz) and (with x) sum(dz * x_hat) over its tiles.
        block, chunk = tile_ids(REVERSED=False)
        rows, rows1 = tile_rows(block, ROWS)
        mean, rstd, gamma, beta, slab = _row_params(mean_ptr, rstd_ptr, w_ptr, b_ptr, rows, n_rows, C, Cg,
                                                    HAS_STATS=HAS_X)
        part_b = tl.zeros([ROWS], dtype=tl.float32)
        part_w = tl.zeros([ROWS], dtype=tl.float32)
        for i in range(0, iters):
            col0 = (chunk * iters + i) * (SEGS * 32)
            idx, inside, dz, x_hat = _dz_tile(dy_ptr, x_ptr, words_ptr, rows, n_rows, HW, col0, mean, rstd, gamma,
                                              beta, low, high, ACT=ACT, HAS_X=HAS_X,
                                              TRUE_DERIVATIVE=TRUE_DERIVATIVE, SEGS=SEGS)
            part_b += row_sum(dz)
            if HAS_X:
                part_w += row_sum(dz * x_hat)
        out = rows1 * S + chunk
        tl.store(pb_ptr + out, part_b, mask=rows1 < n_rows)
        if HAS_X:
            tl.store(pw_ptr + out, part_w, mask=rows1 < n_rows)

    @triton.jit(do_not_specialize=["C", "Cg", "S", "M"])
    def _vjp_means_kernel(
        pb_ptr,  # float32 (N*C, S): partial sums of dz
        pw_ptr,  # float32 (N*C, S): partial sums of dz * x_hat
        w_ptr,  # float32 (C,): gamma
        mg_ptr,  # out, float32, one per slab: mean(u), u = gamma * dz
        mgx_ptr,  # out, float32, one per slab: mean(u * x_hat)
        C,  # channels
        Cg,  # rows per slab
        S,  # partial sums per row
        M,  # elements per slab, Cg * HW (float)
        BLOCK: tl.constexpr,  # partial sums read at a time
    ):
        # One program per slab: mean(u) and mean(u * x_hat), u = gamma * dz, from its Cg * S partials.
        slab = tl.program_id(0)
        P = Cg * S
        base = slab.to(tl.int64) * P
        acc_g = tl.zeros([BLOCK], dtype=tl.float32)
        acc_gx = tl.zeros([BLOCK], dtype=tl.float32)
        for p0 in range(0, P, BLOCK):
            p = p0 + tl.arange(0, BLOCK)
            ok = p < P
            gamma = tl.load(w_ptr + (slab * Cg + p // S) % C, mask=ok, other=0.0)  # gamma of partial p's row
            acc_g += gamma * tl.load(pb_ptr + base + p, mask=ok, other=0.0)
            acc_gx += gamma * tl.load(pw_ptr + base + p, mask=ok, other=0.0)
        tl.store(mg_ptr + slab, tl.sum(acc_g, axis=0) / M)
        tl.store(mgx_ptr + slab, tl.sum(acc_gx, axis=0) / M)

    @triton.jit(do_not_specialize=["n_rows", "C", "Cg", "iters"])
    def _exact_dx_kernel(
        dy_ptr,  # dL/dy, (N, C, H, W)
        x_ptr,  # the kept input x
        words_ptr,  # int32 mask words (read unless TRUE_DERIVATIVE)
        mean_ptr,  # float32 slab means
        rstd_ptr,  # float32 slab rstds
        w_ptr,  # float32 (C,): gamma
        b_ptr,  # float32 (C,): beta
        mg_ptr,  # float32, one per slab: mean(u)
        mgx_ptr,  # float32, one per slab: mean(u * x_hat)
        dx_ptr,  # out, dL/dx, like dy
        n_rows,  # N * C
        C,  # channels
        Cg,  # rows per slab
        HW,  # elements per row
        iters,  # tiles per program along a row
        low,  # derivative where the mask bit is 0
        high,  # derivative where the mask bit is 1
        ACT: tl.constexpr,  # activation code, for TRUE_DERIVATIVE
        TRUE_DERIVATIVE: tl.constexpr,  # f'(z) from z instead of the mask
        ROWS: tl.constexpr,  # rows per tile
        SEGS: tl.constexpr,  # 32-element segments per row of a tile
    ):
        # dx = rstd * (gamma * dz - mean(u) - x_hat * mean(u * x_hat)), tile by tile, in reverse
        # grid order (the partials pass read these tiles last: they may still be in L2).
        block, chunk = tile_ids(REVERSED=True)
        rows, rows1 = tile_rows(block, ROWS)
        mean, rstd, gamma, beta, slab = _row_params(mean_ptr, rstd_ptr, w_ptr, b_ptr, rows, n_rows, C, Cg,
                                                    HAS_STATS=True)
        m_g = tl.load(mg_ptr + slab, mask=rows < n_rows, other=0.0)
        m_gx = tl.load(mgx_ptr + slab, mask=rows < n_rows, other=0.0)
        for i in range(0, iters):
            col0 = (chunk * iters + i) * (SEGS * 32)
            idx, inside, dz, x_hat = _dz_tile(dy_ptr, x_ptr, words_ptr, rows, n_rows, HW, col0, mean, rstd, gamma,
                                              beta, low, high, ACT=ACT, HAS_X=True,
                                              TRUE_DERIVATIVE=TRUE_DERIVATIVE, SEGS=SEGS)
            dx = rstd * (dz * gamma - m_g - x_hat * m_gx)
            tl.store(dx_ptr + idx, dx.to(dx_ptr.dtype.element_ty), mask=inside)

    @triton.jit(do_not_specialize=["n_rows", "C", "Cg", "iters", "S"])
    def _detached_dx_kernel(
        dy_ptr,  # dL/dy, (N, C, H, W)
        words_ptr,  # int32 mask words
        rstd_ptr,  # float32 slab rstds (read only if HAS_STATS)
        w_ptr,  # float32 (C,): gamma (a frozen norm's scale)
        dx_ptr,  # out, dL/dx, like dy
        pb_ptr,  # out, float32 (N*C, S): partial sums of dz, for d(beta)
        n_rows,  # N * C
        C,  # channels
        Cg,  # rows per slab
        HW,  # elements per row
        iters,  # tiles per program along a row
        S,  # chunks per row: partial sums per row
        low,  # derivative where the mask bit is 0
        high,  # derivative where the mask bit is 1
        HAS_STATS: tl.constexpr,  # False: rstd 1 (a frozen-statistics norm)
        ROWS: tl.constexpr,  # rows per tile
        SEGS: tl.constexpr,  # 32-element segments per row of a tile
    ):
        # Statistics as constants: dx = gamma * rstd * dz in one sweep, and the partial sums of dz.
        block, chunk = tile_ids(REVERSED=False)
        rows, rows1 = tile_rows(block, ROWS)
        # No mean and no beta are used here: rstd_ptr and w_ptr stand in for their pointers.
        mean, rstd, gamma, beta, slab = _row_params(rstd_ptr, rstd_ptr, w_ptr, w_ptr, rows, n_rows, C, Cg,
                                                    HAS_STATS=HAS_STATS)
        part_b = tl.zeros([ROWS], dtype=tl.float32)
        for i in range(0, iters):
            col0 = (chunk * iters + i) * (SEGS * 32)
            # x is not kept: dy_ptr stands in for x_ptr, and x_hat is not used.
            idx, inside, dz, x_hat = _dz_tile(dy_ptr, dy_ptr, words_ptr, rows, n_rows, HW, col0, 0.0, 1.0, gamma,
                                              beta, low, high, ACT=0, HAS_X=False, TRUE_DERIVATIVE=False,
                                              SEGS=SEGS)
            part_b += row_sum(dz)
            tl.store(dx_ptr + idx, (dz * (gamma * rstd)).to(dx_ptr.dtype.element_ty), mask=inside)
        tl.store(pb_ptr + rows1 * S + chunk, part_b, mask=rows1 < n_rows)


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
    check_size(dy)
    N, C = dy.shape[:2]
    hw, cg = dy[0, 0].numel(), C // groups
    dy = aligned(dy)
    w, b = channel_vectors(weight, bias, C, dy.device)
    plan = row_grid(N * C, hw, sm_count(dy.device))
    true_derivative = words is None
    low, high = activations.levels(activation, STEP if surrogate is None else surrogate)
    consts = dict(ROWS=ROWS, SEGS=SEGS, num_warps=NUM_WARPS)

    def partial_sums():  # one float32 per row and chunk
        return torch.empty(N * C, plan.chunks, dtype=torch.float32, device=dy.device)

    dummy = dy  # stands for the pointers a constexpr flag switches off
    part_b, part_w, dx = partial_sums(), None, None
    if exact and x is not None:  # eq. (VJP): partial sums, their means, then dx
        x = aligned(x)
        part_w = partial_sums()
        words_or_dummy = dummy if true_derivative else words  # no mask: f'(z) is recomputed from x
        act_code = code(activation) if true_derivative else 0  # read only with TRUE_DERIVATIVE
        launch(_partials_kernel, plan.grid, dy, x, words_or_dummy, mean, rstd, w, b, part_b, part_w, N * C, C, cg,
               hw, plan.iters, plan.chunks, float(low), float(high), ACT=act_code, HAS_X=True,
               TRUE_DERIVATIVE=true_derivative, **consts)
        if need_dx:
            m_g = torch.empty(N * groups, dtype=torch.float32, device=dy.device)
            m_gx = torch.empty_like(m_g)
            launch(_vjp_means_kernel, (N * groups,), part_b, part_w, w, m_g, m_gx, C, cg, plan.chunks,
                   float(cg * hw), BLOCK=COMBINE_BLOCK, num_warps=NUM_WARPS)
            dx = torch.empty_like(dy)
            launch(_exact_dx_kernel, plan.grid, dy, x, words_or_dummy, mean, rstd, w, b, m_g, m_gx, dx, N * C, C,
                   cg, hw, plan.iters, float(low), float(high), ACT=act_code, TRUE_DERIVATIVE=true_derivative,
                   **consts)
    else:
        if need_dw:
            raise ValueError("d(gamma) needs x_hat: it is computed in exact mode only, where x is kept")
        if need_dx:  # detached statistics (or a frozen-statistics norm): dx = gamma * rstd * dz
            dx = torch.empty_like(dy)
            has_stats = rstd is not None  # False: a frozen-statistics norm (affine_act), rstd 1
            rstd_or_dummy = rstd if has_stats else dummy
            launch(_detached_dx_kernel, plan.grid, dy, words, rstd_or_dummy, w, dx, part_b, N * C, C, cg, hw,
                   plan.iters, plan.chunks, float(low), float(high), HAS_STATS=has_stats, **consts)
        elif need_db:
            launch(_partials_kernel, plan.grid, dy, dummy, words, dummy, dummy, w, b, part_b, part_b, N * C, C, cg,
                   hw, plan.iters, plan.chunks, float(low), float(high), ACT=0, HAS_X=False, TRUE_DERIVATIVE=False,
                   **consts)
    # The reduction of the partials over the batch and the chunks, in a fixed order: deterministic.
    dw = part_w.view(N, C, -1).sum(dim=(0, 2)) if need_dw else None
    db = part_b.view(N, C, -1).sum(dim=(0, 2)) if need_db else None
    return dx, dw, db


def differentiable_once(name: str, grads: tuple) -> tuple:
    """The gradients an autograd ``backward`` returns, unchanged, except under ``create_graph=True``
    (grad mode on): then each one that exists carries a node that raises, when it is
    differentiated, an error that names ``name``. The kernels' backward builds no graph, so a
    second derivative through them would otherwise be silently missing or a generic error."""
    if not torch.is_grad_enabled():
        return grads
    message = (f"{name} is differentiable once: its backward (a Triton kernel or its torch twin) builds no graph, "
               "so double backward (create_graph=True, e.g. a gradient penalty) through it is not supported; use "
               "the stock torch layers for that (trying to differentiate twice a function that was marked with "
               "@once_differentiable)")
    error = torch._C._functions.DelayedError(message.encode(), len(grads))
    return error(*[None if g is None else g.detach().requires_grad_(True) for g in grads])


__all__ = ["differentiable_once", "norm_act_backward", "norm_act_backward_reference"]
