"""Bit packing: one bit per element, 32 elements per int32 word (chapter 4, "Bit packing").

A 1-bit activation keeps, for every element, only whether its derivative is "on". Stored as a
``torch.bool`` tensor that is one byte per element; packed, it is one *bit*: 32x smaller than a
float32 activation, 8x smaller than a bool tensor.

Layout (the same in the Triton kernels and in the torch twins): the mask is read in row-major
(``flatten``) order; element ``i`` is bit ``i % 32`` (least significant first) of word
``i // 32``. The last word is padded with zero bits. Words are ``torch.int32``, so bit 31 is the
sign bit: a word with bit 31 set is negative, which is only a matter of how it prints.

- :func:`pack_bits` / :func:`unpack_bits`: dispatch like every kernel here (Triton on CUDA,
  the interpreter when ``TRITON_INTERPRET=1``, the torch twin otherwise; ``backend=`` forces);
- :func:`pack_bits_reference` / :func:`unpack_bits_reference`: the plain-torch twins;
- :func:`packed_words`: ``ceil(numel / 32)``, the number of words a mask of ``numel`` takes;
- ``pack_rows`` / ``bit_at``: the Triton device functions that pack a (words, 32) tile and read
  one bit; ``store_segments``: packs the row segments of the fused kernels' tiles
  (:mod:`kernels.tiling`) into words, whether or not rows start on a word boundary
  (:mod:`kernels.affine_act`).
"""

from __future__ import annotations

import sys

import numpy
import torch

from .runtime import choose_backend, launch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton is pinned in requirements.txt
    triton = None

BITS = 32  # elements per word
_SHIFTS: dict[torch.device, torch.Tensor] = {}
_WEIGHTS: dict[torch.device, torch.Tensor] = {}
if sys.byteorder != "little":  # pragma: no cover - every platform torch ships for is little-endian
    raise ImportError("kernels.bits assumes a little-endian machine (int32 words read as 4 bytes)")


def packed_words(numel: int) -> int:
    """Number of int32 words that hold ``numel`` bits."""
    return -(-int(numel) // BITS)


def _check_mask(mask) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must have dtype torch.bool, got {mask.dtype}")
    return mask


def _check_words(words, numel) -> tuple[torch.Tensor, int]:
    if not isinstance(words, torch.Tensor):
        raise TypeError(f"words must be a torch.Tensor, got {type(words).__name__}")
    if words.dtype != torch.int32 or words.dim() != 1:
        raise TypeError(f"words must be a 1-D torch.int32 tensor, got {words.dtype} of shape {tuple(words.shape)}")
    if isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
        raise ValueError(f"numel must be an int >= 0, got {numel!r}")
    if words.numel() < packed_words(numel):
        raise ValueError(f"numel={numel} needs {packed_words(numel)} words, words has {words.numel()}")
    return words, numel


def pack_bits_reference(mask: torch.Tensor) -> torch.Tensor:
    """Plain-torch twin of :func:`pack_bits`.

    Word ``w`` is four bytes, least significant first (little-endian), so bit ``i % 32`` of word
    ``i // 32`` is bit ``i % 8`` of byte ``i // 8``: packing is packing bytes. On CPU NumPy's
    ``packbits(bitorder="little")`` packs them (the same layout, without a copy of the mask and
    about ten times faster than torch arithmetic); elsewhere :func:`_pack_bytes_torch` does.
    Nothing wider than a byte is allocated: no int64 intermediate.
    """
    flat = _check_mask(mask).reshape(-1)
    words = torch.zeros(packed_words(flat.numel()), dtype=torch.int32, device=flat.device)
    if flat.numel():
        as_bytes = words.view(torch.uint8)
        if flat.device.type == "cpu":
            packed = torch.from_numpy(numpy.packbits(flat.numpy(), bitorder="little"))
        else:
            packed = _pack_bytes_torch(flat)
        as_bytes[:packed.numel()] = packed
    return words


def _pack_bytes_torch(flat: torch.Tensor) -> torch.Tensor:
    """``ceil(n / 8)`` bytes, element ``i`` in bit ``i % 8`` of byte ``i // 8`` (torch only)."""
    weights = _byte_weights(flat.device)
    whole = flat.numel() // 8 * 8
    parts = [(flat[:whole].view(torch.uint8).view(-1, 8) * weights).sum(dim=1, dtype=torch.uint8)]
    if whole < flat.numel():  # the last, partial byte
        tail = flat[whole:].view(torch.uint8)
        parts.append((tail * weights[:tail.numel()]).sum(dtype=torch.uint8).view(1))
    return torch.cat(parts)


def unpack_bits_reference(words: torch.Tensor, numel: int) -> torch.Tensor:
    """Plain-torch twin of :func:`unpack_bits` (bytes unpacked by NumPy on CPU, by torch
    elsewhere; the layout of :func:`pack_bits_reference`)."""
    words, numel = _check_words(words, numel)
    as_bytes = words[:packed_words(numel)].contiguous().view(torch.uint8)
    if words.device.type == "cpu":
        return torch.from_numpy(numpy.unpackbits(as_bytes.numpy(), count=numel, bitorder="little")).view(torch.bool)
    bits = (as_bytes.unsqueeze(1) >> _byte_shifts(words.device)) & 1
    return bits.view(-1)[:numel].view(torch.bool)


def _byte_weights(device: torch.device) -> torch.Tensor:
    if device not in _WEIGHTS:
        _WEIGHTS[device] = (1 << torch.arange(8, device=device)).to(torch.uint8)  # 1, 2, 4, ..., 128
    return _WEIGHTS[device]


def _byte_shifts(device: torch.device) -> torch.Tensor:
    if device not in _SHIFTS:
        _SHIFTS[device] = torch.arange(8, dtype=torch.uint8, device=device)
    return _SHIFTS[device]


if triton is not None:

    @triton.jit
    def pack_rows(bits):
        """Device function: a (WORDS, 32) tile of 0/1 values, one row per word, to WORDS int32
        words (row element ``j`` is bit ``j``). The fused kernels of chapter 4 call it too."""
        shift = tl.arange(0, 32)
        # Distinct powers of two: their sum is their bitwise or (bit 31 wraps to the sign bit).
        return tl.sum(bits.to(tl.int32) << shift[None, :], axis=1)

    @triton.jit
    def store_segments(
        words_ptr,  # out, int32 mask words of the whole tensor
        bits,  # (ROWS, SEGS, 32) 0/1 values, one 32-element segment per (row, segment)
        seg_first,  # (ROWS, SEGS, 1) flat index of each segment's first element
        seg_inside,  # (ROWS, SEGS, 1) whether the segment holds any element
        HW,  # elements per row (HW % 32 == 0: segments are whole words)
    ):
        """Device function: pack a (ROWS, SEGS, 32) tile of 0/1 values, one 32-element segment of a
        row per (row, segment), into the tensor's words. ``seg_first`` (ROWS, SEGS, 1) is the index
        of each segment's first element. When rows start on a word boundary (``HW % 32 == 0``) every
        segment is one whole word, written with a plain store. Otherwise a segment straddles two
        words that it shares with its neighbours: its bits are OR-ed into both with atomics, into a
        buffer that starts at zero (OR does not depend on the order: deterministic)."""
        packed = tl.sum(bits.to(tl.int32) << tl.arange(0, 32)[None, None, :], axis=2, keep_dims=True)
        if HW % 32 == 0:
            tl.store(words_ptr + (seg_first >> 5), packed, mask=seg_inside)
        else:
            off = seg_first & 31
            tl.atomic_or(words_ptr + (seg_first >> 5), packed << off, mask=seg_inside)
            high = (packed >> (32 - tl.maximum(off, 1))) & ((1 << off) - 1)  # the top off bits, unsigned
            tl.atomic_or(words_ptr + (seg_first >> 5) + 1, high, mask=seg_inside & (off > 0))

    @triton.jit
    def segment_bits(
        words_ptr,  # int32 mask words of the whole tensor
        seg_first,  # (ROWS, SEGS, 1) flat index of each segment's first element
        seg_len,  # (ROWS, SEGS, 1) elements of the segment that exist (may exceed 32)
        seg_inside,  # (ROWS, SEGS, 1) whether the segment holds any element
    ):
        """Device function: the mask bits (0/1 int32) of a (ROWS, SEGS, 32) tile's segments, 32
        consecutive elements from ``seg_first`` (ROWS, SEGS, 1) on, of which ``seg_len`` exist.
        Two word loads a segment (its elements lie in at most two words), not one per element."""
        first_word = seg_first >> 5
        off = seg_first & 31
        low = tl.load(words_ptr + first_word, mask=seg_inside, other=0)
        high = tl.load(words_ptr + first_word + 1, mask=seg_inside & (off + seg_len > 32), other=0)
        k = off + tl.arange(0, 32)[None, None, :]  # bit k of the pair (low, high)
        return tl.where(k < 32, low >> (k & 31), high >> (k & 31)) & 1

    @triton.jit
    def bit_at(
        words_ptr,  # int32 mask words
        index,  # flat element indices (any shape)
        inside,  # whether each index exists (same shape)
    ):
        """Device function: bit ``index % 32`` of word ``index // 32``, as 0/1 int32 (0 outside)."""
        w = tl.load(words_ptr + (index >> 5), mask=inside, other=0)
        return (w >> (index & 31).to(tl.int32)) & 1

    @triton.jit(do_not_specialize=["n_elements", "n_words"])
    def _pack_kernel(
        mask_ptr,  # the mask, one byte (bool as int8) per element, flattened
        words_ptr,  # out, int32: bit i % 32 of word i // 32 is element i
        n_elements,  # elements of the mask
        n_words,  # words, ceil(n_elements / 32)
        WORDS: tl.constexpr,  # words per program
    ):
        # A program packs WORDS words: a (WORDS, 32) tile of the mask, one row per word.
        word = tl.program_id(0) * WORDS + tl.arange(0, WORDS)
        bit = tl.arange(0, 32)
        index = word[:, None] * 32 + bit[None, :]
        m = tl.load(mask_ptr + index, mask=index < n_elements, other=0)
        tl.store(words_ptr + word, pack_rows(m), mask=word < n_words)

    @triton.jit(do_not_specialize=["n_elements"])
    def _unpack_kernel(
        words_ptr,  # int32 words, the layout of _pack_kernel
        mask_ptr,  # out, one byte (int8 0/1) per element
        n_elements,  # elements to unpack
        BLOCK: tl.constexpr,  # elements per program
    ):
        # A program unpacks BLOCK elements, each reading its own word (cached: 32 neighbours
        # share it).
        index = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        inside = index < n_elements
        tl.store(mask_ptr + index, bit_at(words_ptr, index, inside).to(tl.int8), mask=inside)


def _check_block(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value & (value - 1):
        raise ValueError(f"{name} must be a positive power of two, got {value!r}")
    return value


def pack_bits(mask: torch.Tensor, *, words_per_program: int = 128, backend: str | None = None) -> torch.Tensor:
    """Pack a bool tensor of any shape into ``ceil(numel / 32)`` int32 words (layout: module doc).

    ``words_per_program``: words per Triton program (a power of two). ``backend``: ``"triton"``
    or ``"torch"`` forces one; by default Triton runs on CUDA tensors and, with
    ``TRITON_INTERPRET=1``, on CPU tensors.
    """
    _check_mask(mask)
    _check_block("words_per_program", words_per_program)
    if choose_backend(mask, backend) == "torch":
        return pack_bits_reference(mask)
    flat = mask.contiguous().view(-1).view(torch.int8)  # bool and int8 share the byte layout
    n = flat.numel()
    words = torch.empty(packed_words(n), dtype=torch.int32, device=mask.device)
    if n:
        launch(_pack_kernel, (triton.cdiv(words.numel(), words_per_program),), flat, words, n, words.numel(),
               WORDS=words_per_program, num_warps=4)
    return words


def unpack_bits(words: torch.Tensor, numel: int, *, block: int = 4096, backend: str | None = None) -> torch.Tensor:
    """The first ``numel`` bits of ``words`` as a flat ``torch.bool`` tensor (inverse of
    :func:`pack_bits`: ``unpack_bits(pack_bits(m), m.numel()).view(m.shape)`` equals ``m``)."""
    _check_words(words, numel)
    _check_block("block", block)
    if choose_backend(words, backend) == "torch":
        return unpack_bits_reference(words, numel)
    out = torch.empty(numel, dtype=torch.int8, device=words.device)
    if numel:
        launch(_unpack_kernel, (triton.cdiv(numel, block),), words.contiguous(), out, numel, BLOCK=block, num_warps=4)
    return out.view(torch.bool)


__all__ = ["BITS", "pack_bits", "pack_bits_reference", "packed_words", "unpack_bits",
           "unpack_bits_reference"]
