"""What an inverted residual block and its lite residual branch keep for backward, counted by hand
(chapter 1, ``book/01_memory/03_networks`` section 1, derives the block once; chapter 2,
``book/02_tinytl/02_lite_residual`` and ``02b_lite_residual_costs``, recounts it under TinyTL's
rules and counts the branch).

The counts are per block, for a batch of ``batch`` square inputs of side ``h``, when every weight
of the block (or branch) trains. ``estimate``'s per-layer rows give the same bytes; the book's
cells and ``tests/test_block_memory.py`` assert it, block by block.
"""

from __future__ import annotations

from collections import defaultdict

from .blocks import InvertedResidual

BYTES = 4  # bytes per float32 element (the book's s)
PROFILES = ("pytorch", "paper")


def ceil_div(a: int, b: int) -> int:
    """The output side of a "same"-padded conv with stride ``b`` on a side of ``a``."""
    return -(-a // b)


def inverted_residuals(model) -> list:
    """``(index in model.blocks, block)`` for the inverted residual blocks (skip blocks left out)."""
    return [(i, b) for i, b in enumerate(model.blocks) if isinstance(b, InvertedResidual)]


def block_input_sizes(model, resolution: int) -> list:
    """The side of every block's input: the stem halves the resolution, each block divides by its stride."""
    h = ceil_div(resolution, 2)
    sizes = []
    for block in model.blocks:
        sizes.append(h)
        h = ceil_div(h, block.stride)
    return sizes


def irb_kept_bytes(block: InvertedResidual, h: int, *, batch: int, profile: str = "pytorch") -> int:
    """Bytes an expanded inverted residual block keeps for backward when everything trains.

    With C input channels, M expanded, C' output channels and h' = ceil(h / S), per sample:

    - ``pytorch`` (stock autograd, BatchNorm): the expand conv's input C h^2; three distinct tensors
      of width M at h x h (norm 1's input, ReLU6's input, the depthwise conv's input); three at
      h' x h'; norm 3's input C' h'^2; plus each BatchNorm's mean and 1/std per channel, once per
      batch: 2 (2M + C') floats.
    - ``paper`` (TinyTL's profiler): each ReLU6 keeps a 1-bit mask instead of its input, and no
      statistics are counted: C h^2 + 2 M h^2 + 2 M h'^2 + C' h'^2 floats and M h^2 + M h'^2 bits.
    """
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    if block.expand is None:
        raise ValueError("block has no expansion conv (expand ratio 1): the count is for expanded blocks")
    C, M, C_out = block.in_channels, block.mid_channels, block.out_channels
    h_out = ceil_div(h, block.stride)
    wide, wide_out = M * h * h, M * h_out * h_out
    if profile == "pytorch":
        floats = C * h * h + 3 * wide + 3 * wide_out + C_out * h_out * h_out
        statistics = 2 * (2 * M + C_out)
        return BYTES * batch * floats + BYTES * statistics
    floats = C * h * h + 2 * wide + 2 * wide_out + C_out * h_out * h_out
    mask_bits = batch * (wide + wide_out)
    return BYTES * batch * floats + mask_bits // 8


def lite_kept_bytes(block: InvertedResidual, h: int, *, batch: int) -> int:
    """Bytes a block's lite residual branch keeps under TinyTL's rules when it trains.

    With h_p = floor(h / 2) after the 2x2 pool and h_l = ceil(h_p / S): conv1 keeps its input
    C h_p^2 floats, norm 1 and conv2 keep M h_l^2 each, the ReLU M h_l^2 bits, the final norm
    C' h_l^2 floats; the pool and the upsampling keep nothing.
    """
    if block.lite is None:
        raise ValueError("block has no lite residual branch")
    C, M, C_out = block.in_channels, block.lite.conv1.out_channels, block.out_channels
    h_pool = h // 2
    h_lite = ceil_div(h_pool, block.stride)
    floats = C * h_pool * h_pool + 2 * M * h_lite * h_lite + C_out * h_lite * h_lite
    mask_bits = batch * M * h_lite * h_lite
    return BYTES * batch * floats + mask_bits // 8


def ideal_ratio(t: float, s: int = BYTES) -> float:
    """Main branch / lite branch bytes for a stride-1 block with C' = C and an even h, under
    TinyTL's rules: (s (2 + 4t) + t / 4) C h^2 against (s + 1/32) C h^2."""
    return (s * (2 + 4 * t) + t / 4) / (s + 1 / 32)


def kept_by_part(report) -> dict:
    """Bytes kept per ``(block index, "main" or "lite")``, from an estimate's per-layer rows."""
    out = defaultdict(int)
    for layer in report.layers:
        parts = layer.name.split(".")
        if parts[0] == "blocks" and len(parts) > 2:
            part = "lite" if parts[2] == "lite" else "main"
            out[(int(parts[1]), part)] += layer.saved
    return out
