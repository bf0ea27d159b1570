"""GroupNorm's statistics in two launches that fill any GPU (chapter 4, "The fused forward").

For sample ``n`` and group ``g`` (its slab of ``|S| = Cg H W`` elements, ``Cg = C / G``) GroupNorm needs
``mu = mean(x)`` and ``rstd = 1 / sqrt(mean((x - mu)^2) + eps)``. One program per slab would give
``N G`` programs, 96 at (8, 96, 112, 112) with 8 channels per group and 12 at batch 1, too few for
a GPU with 132 SMs. So the work is split (:mod:`kernels.tiling`):

1. ``_row_stats_kernel``: each program reads its tiles of rows once and writes, per row and
   chunk, the mean and the sum of squared deviations ``m2`` of the elements it saw. Inside a
   tile both come from the two-pass formula on values already in registers; tiles are merged
   into the running ones with Chan's formula (``n``, ``mean``, ``m2`` of two parts ``a`` and ``b``:
   ``mean = mean_a + d n_b / n``, ``m2 = m2_a + m2_b + d^2 n_a n_b / n``, ``d = mean_b - mean_a``).
   Nowhere is ``E[x^2] - E[x]^2`` formed, so an offset of 1e4 is harmless.
2. ``_group_stats_kernel``: one small program per slab merges its ``(C / G) * chunks`` partials
   (counts known from the grid) in a fixed order: ``mu`` relative to the first partial's mean,
   then ``|S| sigma^2 = sum m2_i + sum n_i (mu_i - mu)^2`` (``m2`` is the book's V).

Fixed orders throughout and no atomics: the statistics are deterministic. The plain-torch twin
of the whole forward is :func:`kernels.group_norm_act.group_norm_act_forward_reference`.
"""

from __future__ import annotations

import torch

from .runtime import launch
from .tiling import COMBINE_BLOCK, NUM_WARPS, ROWS, SEGS, RowGrid, aligned, row_grid, sm_count

try:
    import triton
    import triton.language as tl

    from .tiling import row_sum, tile_at, tile_ids, tile_rows
except ImportError:  # pragma: no cover - triton is pinned in requirements.txt
    triton = None


if triton is not None:

    # Legend: a row is one (sample, channel) of HW = H * W elements; a slab is the Cg consecutive
    # rows of one (sample, group); m2 is a sum of squared deviations from a mean; S is the number
    # of chunks of a row (one partial (mean, m2) per row and chunk).

    @triton.jit(do_not_specialize=["n_rows", "iters", "S"])
    def _row_stats_kernel(
        x_ptr,  # input, (N, C, H, W) contiguous, read as N*C rows of HW elements
        mean_ptr,  # out, float32 (N*C, S): mean of each row chunk
        m2_ptr,  # out, float32 (N*C, S): m2 of each row chunk
        n_rows,  # N * C
        HW,  # elements per row
        iters,  # tiles per program along a row (kernels.tiling.row_grid)
        S,  # chunks per row
        ROWS: tl.constexpr,  # rows per tile
        SEGS: tl.constexpr,  # 32-element segments per row of a tile
    ):
        # Program (i, j): rows i*ROWS.., tiles j*iters.. along them; one partial (mean, m2) per row.
        block, chunk = tile_ids(REVERSED=False)
        rows, rows1 = tile_rows(block, ROWS)
        mean = tl.zeros([ROWS], dtype=tl.float32)
        m2 = tl.zeros([ROWS], dtype=tl.float32)
        count = 0.0
        for i in range(0, iters):
            col0 = (chunk * iters + i) * (SEGS * 32)
            idx, inside, seg_col = tile_at(rows, n_rows, HW, col0, SEGS)
            k = tl.minimum(tl.maximum(HW - col0, 0), SEGS * 32).to(tl.float32)  # elements per row here
            # Two-pass statistics of the tile, from values already in registers.
            v = tl.load(x_ptr + idx, mask=inside, other=0.0).to(tl.float32)
            t_mean = row_sum(v) / tl.maximum(k, 1.0)
            d = tl.where(inside, v - t_mean[:, None, None], 0.0)
            t_m2 = row_sum(d * d)
            # Chan's merge of this tile (k elements per row) into the running (count, mean, m2).
            total = count + k
            delta = t_mean - mean
            w = k / tl.maximum(total, 1.0)
            mean = mean + delta * w
            m2 = m2 + t_m2 + delta * delta * count * w
            count = total
        out = rows1 * S + chunk
        tl.store(mean_ptr + out, mean, mask=rows1 < n_rows)
        tl.store(m2_ptr + out, m2, mask=rows1 < n_rows)

    @triton.jit
    def _partials_at(
        pmean_ptr,  # float32 (N*C, S): the partial means
        base,  # offset of the slab's first partial
        p0,  # first partial to read
        P,  # partials of the slab, Cg * S
        S,  # chunks per row
        HW,  # elements per row
        span,  # elements of a row per chunk
        BLOCK: tl.constexpr,  # partials read at a time
    ):
        """Partials ``p0 .. p0 + BLOCK`` of a slab: offsets, which exist, their counts and means."""
        p = p0 + tl.arange(0, BLOCK)
        ok = p < P
        n_p = tl.minimum(HW - (p % S) * span, span).to(tl.float32)  # elements of row chunk p % S
        return p, ok, n_p, tl.load(pmean_ptr + base + p, mask=ok, other=0.0)

    @triton.jit(do_not_specialize=["Cg", "S", "HW", "span"])
    def _group_stats_kernel(
        pmean_ptr,  # float32 (N*C, S): partial means from _row_stats_kernel
        pm2_ptr,  # float32 (N*C, S): partial m2 from _row_stats_kernel
        mean_ptr,  # out, float32 (N, G): the slab means
        rstd_ptr,  # out, float32 (N, G): 1 / sqrt(var + eps) of each slab
        Cg,  # rows per slab: channels per group
        S,  # chunks per row
        HW,  # elements per row
        span,  # elements of a row per chunk
        eps,  # GroupNorm's epsilon
        BLOCK: tl.constexpr,  # partials read at a time
    ):
        # One program per slab: merge its Cg * S partials in a fixed order.
        slab = tl.program_id(0)
        P = Cg * S
        base = slab.to(tl.int64) * P
        slab_size = (Cg * HW).to(tl.float32)  # |S|
        ref = tl.load(pmean_ptr + base)
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for p0 in range(0, P, BLOCK):  # the mean, relative to the first partial's
            p, ok, n_p, mu = _partials_at(pmean_ptr, base, p0, P, S, HW, span, BLOCK)
            acc += tl.where(ok, n_p * (mu - ref), 0.0)
        mean = ref + tl.sum(acc, axis=0) / slab_size
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for p0 in range(0, P, BLOCK):  # |S| sigma^2 = sum m2_i + sum n_i (mu_i - mu)^2
            p, ok, n_p, mu = _partials_at(pmean_ptr, base, p0, P, S, HW, span, BLOCK)
            m2 = tl.load(pm2_ptr + base + p, mask=ok, other=0.0)
            acc += tl.where(ok, m2 + n_p * (mu - mean) * (mu - mean), 0.0)
        tl.store(mean_ptr + slab, mean)
        tl.store(rstd_ptr + slab, 1.0 / tl.sqrt(tl.sum(acc, axis=0) / slab_size + eps))


def group_stats_grid(x: torch.Tensor) -> RowGrid:
    """The grid of the statistics pass for ``x`` on its device."""
    n, c = x.shape[:2]
    return row_grid(n * c, x[0, 0].numel(), sm_count(x.device))


def group_stats(x: torch.Tensor, num_groups: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, rstd)``, float32 (N, G), of contiguous ``x`` (N, C, H, W): two launches (module
    docstring). Arguments are not checked here."""
    n, c = x.shape[:2]
    hw = x[0, 0].numel()
    plan = group_stats_grid(x)
    part_mean = torch.empty(n * c, plan.chunks, dtype=torch.float32, device=x.device)
    part_m2 = torch.empty_like(part_mean)
    launch(_row_stats_kernel, plan.grid, aligned(x), part_mean, part_m2, n * c, hw, plan.iters, plan.chunks,
           ROWS=ROWS, SEGS=SEGS, num_warps=NUM_WARPS)
    mean = torch.empty(n, num_groups, dtype=torch.float32, device=x.device)
    rstd = torch.empty_like(mean)
    launch(_group_stats_kernel, (n * num_groups,), part_mean, part_m2, mean, rstd, c // num_groups, plan.chunks,
           hw, plan.span, float(eps), BLOCK=COMBINE_BLOCK, num_warps=NUM_WARPS)
    return mean, rstd


__all__ = ["group_stats", "group_stats_grid"]
