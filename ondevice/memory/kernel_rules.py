"""Memory rules for the book's fused kernels (chapter 4): :class:`kernels.GroupNormAct` and
:class:`kernels.FrozenNormAct`.

These modules are what PyTorch really runs when a model uses them, so the ``pytorch`` and the
``masked`` profiles agree: both count exactly the tensors their autograd functions save (read
from :func:`kernels.group_norm_act.saved_by_group_norm_act` and
:func:`kernels.affine_act.saved_by_affine_act`, the same functions the kernels obey), and both
equal :func:`ondevice.memory.measure`. Per call, with ``s`` the input's bytes per element:

=================  ===============================================================================
GroupNormAct       exact: ``x`` (s per element) when dx or d(gamma) is needed; ``mean``, ``rstd``
                   (float32, 2 G per sample) likewise; the packed mask, ``4 ceil(N C H W / 32)``
                   bytes, whenever any gradient flows (detached: mask + statistics only). The true
                   Hard-Swish derivative (``surrogate=None``) keeps ``x`` and the statistics and
                   no mask.
FrozenNormAct      the packed mask whenever a gradient flows; ``scale`` (C values, a computed
                   tensor) when dx is needed
=================  ===============================================================================

The ``paper`` profile (TinyTL's profiler, ``paper.py``) counts them as the norm + 1-bit activation
they replace.

This module also teaches the shape trace (:mod:`.trace`) the two functions the modules call.
"""

from __future__ import annotations

from kernels.affine_act import affine_act, saved_by_affine_act
from kernels.group_norm_act import group_norm_act, saved_by_group_norm_act
from kernels.norm_act import FrozenNormAct, GroupNormAct

from . import trace
from .rules import Context, Stored, keep, mask, rule, trains
from .trace import Call

STAT_BYTES = 4  # the kernels keep mean and rstd in float32 for every input dtype


@rule(GroupNormAct)
def group_norm_act_rule(call: Call, ctx: Context) -> list[Stored]:
    m = call.module
    plan = saved_by_group_norm_act(m.activation, m.backward, m.surrogate, call.input.requires_grad,
                                   trains(m, "weight"), trains(m, "bias"))
    out = []
    if plan.x:
        out.append(keep(call.input, "input x", "exact GroupNorm backward: x_hat for dx and d(gamma)"))
    if plan.mask:
        out.append(mask(call.input, f"{m.activation} derivative from 1 bit per element"))
    if plan.stats:
        out.append(Stored("group mean and 1/std (float32)", "per (sample, group) statistics, for dx",
                          per_sample=2 * m.num_groups * STAT_BYTES))
    return out


@rule(FrozenNormAct)
def frozen_norm_act_rule(call: Call, ctx: Context) -> list[Stored]:
    m = call.module
    plan = saved_by_affine_act(call.input.requires_grad, trains(m, "bias"))
    out = []
    if plan.mask:
        out.append(mask(call.input, f"{m.activation} derivative from 1 bit per element"))
    if plan.scale:
        scale = m.scale_shift()[0]
        out.append(Stored("scale = gamma / sqrt(running_var + eps)", "dx = scale * dz",
                          fixed=scale.numel() * scale.element_size()))
    return out


trace.register_shape_rule(group_norm_act)  # outputs shaped like their input
trace.register_shape_rule(affine_act)

__all__ = ["STAT_BYTES", "frozen_norm_act_rule", "group_norm_act_rule"]
