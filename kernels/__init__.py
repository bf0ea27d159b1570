"""Triton kernels of the book, each with a plain-torch twin (chapter 4, ``book/04_kernels``).

- :mod:`.bits`: pack / unpack 1-bit masks (chapter 4, "Bit packing");
- :mod:`.group_norm_act` and :class:`GroupNormAct`: GroupNorm + activation fused, keeping a 1-bit
  mask; exact or detached backward (:mod:`.norm_act_backward`);
- :mod:`.affine_act` and :class:`FrozenNormAct`: a frozen-statistics norm + activation, keeping
  only the mask;
- :mod:`.activations` (plain torch) and :mod:`.activations_triton` (its Triton copy): the one
  definition of relu / relu6 / hardswish, their masks and the Hard-Swish surrogate;
- :mod:`.tiling` and :mod:`.group_stats`: how the fused kernels cut a tensor into programs, and
  GroupNorm's statistics in two launches;
- :mod:`.roofline`: the HBM byte floor the benchmark compares against; :mod:`.launch_plan`: the
  launches of a step and their predicted time on a GPU; :mod:`.compile_check`: every kernel
  variant compiled ahead of time for sm_90 and sm_80, its resources checked;
- :mod:`.relu6`: the primer's first kernel; :mod:`.runtime`: where a kernel runs (and the
  launch hook); :mod:`.checks`: argument checks.

Importing this package first switches Triton to its CPU interpreter when no GPU is present
(see :mod:`kernels.runtime`), so it must be imported before anything imports ``triton``.
"""

from . import runtime

runtime.configure()

from .affine_act import affine_act, affine_act_forward_reference  # noqa: E402
from .bits import pack_bits, pack_bits_reference, packed_words, unpack_bits, unpack_bits_reference  # noqa: E402
from .group_norm_act import group_norm_act, group_norm_act_forward_reference  # noqa: E402
from .norm_act import FrozenNormAct, GroupNormAct  # noqa: E402
from .norm_act_backward import norm_act_backward_reference  # noqa: E402
from .relu6 import relu6, relu6_reference  # noqa: E402  (after the interpreter switch)

__all__ = ["FrozenNormAct", "GroupNormAct", "affine_act", "affine_act_forward_reference", "group_norm_act",
           "group_norm_act_forward_reference", "norm_act_backward_reference", "pack_bits", "pack_bits_reference",
           "packed_words", "relu6", "relu6_reference", "runtime", "unpack_bits", "unpack_bits_reference"]
