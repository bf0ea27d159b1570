"""How the norm-and-activation kernels cut a tensor into programs (chapter 4, "Speed").

An (N, C, H, W) tensor is read as a matrix of ``N C`` *rows* (one per sample and channel) of
``HW = H W`` elements. Every kernel of :mod:`kernels.group_stats`, :mod:`kernels.affine_act` and
:mod:`kernels.norm_act_backward` works on the same tile: :data:`ROWS` consecutive rows times
:data:`SEGS` segments of 32 consecutive elements (one mask word per segment when a row starts on a
word boundary), :data:`TILE_ELEMENTS` elements in all. Program ``(i, j)`` of a launch owns the row
block ``i`` and the ``iters`` tiles ``j * iters, ..., (j + 1) * iters - 1`` along the rows, so a
launch has ``cdiv(N C, ROWS) * cdiv(HW, COLS * iters)`` programs *whatever the number of groups*:
GroupNorm's per-(sample, group) reductions are done in two steps, partial sums per (row, chunk)
written by these programs, then a small combine per (sample, group) (our choice; PyTorch's own
CUDA GroupNorm also reduces in a separate pass).

:func:`row_grid` picks ``iters``: the most tiles per program that still give every SM
:data:`PROGRAMS_PER_SM` programs, the most an SM can hold (our choice). On a GPU that is one
tile a program at every shape the book uses: many short programs, so the last wave is short and
small tensors still reach every SM; the partial sums that this costs are under 1% of the bytes
(two floats per 128 elements of a row). Under Triton's interpreter (one "SM") it means few
programs with long loops, which the interpreter runs fastest. The registers, shared memory and
occupancy of each kernel at this tile are in ``benchmarks/results/kernels-compile.json``
(:mod:`kernels.compile_check`).
:mod:`kernels.launch_plan` predicts the time of the resulting launches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton is pinned in requirements.txt
    triton = None

ROWS = 16  # rows (sample, channel) per tile
SEGS = 4  # 32-element segments per row of a tile
COLS = SEGS * 32  # elements of one row per tile
TILE_ELEMENTS = ROWS * COLS
NUM_WARPS = 8  # warps per program of every tiled kernel: 8 elements a thread
PROGRAMS_PER_SM = 32  # programs per SM row_grid aims for at least (an SM's most)
COMBINE_BLOCK = 1024  # partial sums a combine program reads at a time
MAX_ELEMENTS = 2**31 - 1  # indices are int32
_UNITS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def cdiv(a: int, b: int) -> int:
    return -(-int(a) // int(b))


@dataclass(frozen=True)
class RowGrid:
    """The launch grid of a tiled kernel over ``rows`` rows of ``hw`` elements."""

    rows: int
    hw: int
    iters: int  # tiles per program, along the row

    @property
    def row_blocks(self) -> int:
        return cdiv(self.rows, ROWS)

    @property
    def chunks(self) -> int:
        """Programs per row block; also the partial sums per row a reduction writes."""
        return cdiv(self.hw, COLS * self.iters)

    @property
    def grid(self) -> tuple[int, int]:
        return (self.row_blocks, self.chunks)

    @property
    def programs(self) -> int:
        return self.row_blocks * self.chunks

    @property
    def span(self) -> int:
        """Elements of a row one program covers."""
        return COLS * self.iters


def row_grid(rows: int, hw: int, sm_count: int) -> RowGrid:
    """The grid for ``rows`` rows of ``hw`` elements on a GPU with ``sm_count`` SMs (module doc)."""
    tiles = cdiv(hw, COLS)
    wanted = max(1, sm_count * PROGRAMS_PER_SM)
    chunks_wanted = cdiv(wanted, cdiv(rows, ROWS))
    return RowGrid(rows, hw, max(1, tiles // chunks_wanted))


def sm_count(device: torch.device) -> int:
    """SMs of a CUDA device; 1 elsewhere (Triton's interpreter runs one program at a time, so
    few, large programs are fastest there)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 1


def check_size(x: torch.Tensor) -> None:
    if x.numel() > MAX_ELEMENTS:
        raise ValueError(f"x has {x.numel():,} elements; the Triton kernels index with int32 and take at most "
                         f"{MAX_ELEMENTS:,} (use backend='torch')")


def channel_vectors(weight, bias, channels: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight`` and ``bias`` as the kernels read them: contiguous float32 vectors (an expanded or
    strided tensor is copied, so its strides cannot matter), 1 and 0 where absent."""
    if weight is None or bias is None:
        key = (torch.device(device), channels)
        if key not in _UNITS:
            _UNITS[key] = (torch.ones(channels, device=device), torch.zeros(channels, device=device))
        ones, zeros = _UNITS[key]
        weight = ones if weight is None else weight
        bias = zeros if bias is None else bias
    return (weight.detach().to(torch.float32).contiguous(), bias.detach().to(torch.float32).contiguous())


def aligned(t: torch.Tensor) -> torch.Tensor:
    """``t`` contiguous with a 16-byte aligned address (a copy when it is not), so every launch
    sees the pointer alignment that :mod:`kernels.compile_check` compiles for."""
    t = t.contiguous()
    return t if t.data_ptr() % 16 == 0 else t.clone()


if triton is not None:

    @triton.jit
    def tile_ids(REVERSED: tl.constexpr):
        """This program's (row block, chunk). ``REVERSED``: the last program of the grid takes
        the first tile, so a second pass over a tensor starts where the first pass ended, on what
        is still in L2 (the GPU starts programs roughly in grid order)."""
        if REVERSED:
            return tl.num_programs(0) - 1 - tl.program_id(0), tl.num_programs(1) - 1 - tl.program_id(1)
        return tl.program_id(0), tl.program_id(1)

    @triton.jit
    def tile_rows(block, ROWS: tl.constexpr):
        """The rows of row block ``block``, as a (ROWS, 1, 1) and a (ROWS,) tensor."""
        r = block * ROWS + tl.arange(0, ROWS)
        return r[:, None, None], r

    @triton.jit
    def tile_at(
        rows,  # (ROWS, 1, 1) the tile's rows (tile_rows)
        n_rows,  # rows of the tensor, N * C
        HW,  # elements per row
        col0,  # first column of the tile
        SEGS: tl.constexpr,  # 32-element segments per row of the tile
    ):
        """Indices (ROWS, SEGS, 32) of the tile whose columns start at ``col0``, whether each lane
        holds an element, and the first column of each segment (1, SEGS, 1)."""
        seg_col = col0 + tl.arange(0, SEGS)[None, :, None] * 32
        col = seg_col + tl.arange(0, 32)[None, None, :]
        inside = (rows < n_rows) & (col < HW)
        return rows * HW + col, inside, seg_col

    @triton.jit
    def row_sum(v):
        """Sum over a row's lanes: (ROWS, SEGS, 32) -> (ROWS,)."""
        return tl.sum(tl.sum(v, axis=2), axis=1)


__all__ = ["COLS", "NUM_WARPS", "PROGRAMS_PER_SM", "ROWS", "RowGrid", "SEGS", "TILE_ELEMENTS", "aligned",
           "cdiv", "channel_vectors", "check_size", "row_grid", "sm_count"]
