"""Triton kernels of the book, each with a plain-torch twin (design.md §5).

Importing this package first switches Triton to its CPU interpreter when no GPU is present
(see :mod:`kernels.runtime`), so it must be imported before anything imports ``triton``.
"""

from . import runtime

runtime.configure()

from .bits import pack_bits, pack_bits_reference, packed_words, unpack_bits, unpack_bits_reference  # noqa: E402
from .relu6 import relu6, relu6_reference  # noqa: E402  (after the interpreter switch)

__all__ = ["pack_bits", "pack_bits_reference", "packed_words", "relu6", "relu6_reference", "runtime",
           "unpack_bits", "unpack_bits_reference"]
