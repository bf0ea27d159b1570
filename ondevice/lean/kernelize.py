"""``kernelize``: every layer of a model replaced by its memory-lean twin, where the transfer
method allows (chapter 4, "Putting the kernels in a network").

Run it after a method has chosen what trains (:func:`ondevice.methods.apply`): like the memory
engine it reads ``requires_grad`` (and, for BatchNorm, the mode at every call). In place; the
model is returned. Trainable parameters are the same ``nn.Parameter`` objects afterwards, so an
optimizer over them works before or after.

==========================================  =====================================================
stock layer                                 twin (what it keeps for backward)
==========================================  =====================================================
``Conv2d`` / ``WSConv2d``, frozen weight    :class:`FrozenConv2d`: nothing (dx from the weight);
                                            WS computed once; ``frozen_bits=8``: int8 + scales
``WSConv2d``, trainable weight              :class:`LeanWSConv2d`: ``x`` (W_hat recomputed)
``Linear``, frozen weight                   :class:`FrozenLinear`: nothing
``GroupNorm`` + activation                  :class:`kernels.GroupNormAct`: mask (+ x, statistics)
``BatchNorm2d`` + activation                :class:`BatchNormAct`: mask (+ x, statistics)
lone ``GroupNorm`` / ``BatchNorm2d``        :class:`LeanGroupNorm` / :class:`LeanBatchNorm2d`
lone ReLU / ReLU6 / Hard-Sigmoid            its 1-bit mask twin (exact)
lone Hard-Swish                             exact: stock (the true derivative needs its input);
                                            detached: :class:`MaskHardswish` (1 bit)
``AvgPool2d`` / ``MaxPool2d``               :class:`LeanAvgPool2d`: nothing / :class:`LeanMaxPool2d`:
                                            the argmax within each window, 1 byte
==========================================  =====================================================

"+ activation" means a norm whose output goes only to the activation: ``norm``/``act`` of a
:class:`~ondevice.blocks.ConvNormAct`, ``norm1``/``act`` of a lite residual branch, or two
neighbours in an ``nn.Sequential``. Left as they are, because they keep what their backward
needs already: trainable ``Conv2d`` / ``Linear`` (``x``, for ``dW``), dropout (its mask),
squeeze-excite's product, global average pooling, reshapes, and the book's own lean modules
(chapter 3's mask activations and shift-only norms, chapter 4's fused kernels, these twins).
Any other layer is left stock and named in a warning and in :func:`kernelize_report`.

``backward``: ``"exact"`` keeps every gradient of the trainable parameters equal to the stock
model's (Hard-Swish keeps its true derivative: for free inside a norm whose ``x`` is kept, at
the stock cost elsewhere). ``"detached"`` is the papers' accounting: every norm whose ``gamma``
is frozen treats its statistics as constants (``dx = gamma * rstd * dz``, keeping only the
statistics and the mask; a norm whose ``gamma`` trains stays exact), and Hard-Swish keeps one bit
(MobileTL's approximation, :data:`~ondevice.mask_activations.MOBILETL_SURROGATE`, our choice).

``backend``: ``None`` runs the fused kernels in Triton on a CUDA model and their plain-torch
twins on a CPU one (Triton's interpreter only when asked: ``backend="triton"``); kernelize
after moving the model to its device.
"""

from __future__ import annotations

import copy
import itertools
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from kernels import FrozenNormAct, GroupNormAct
from kernels.activations import STEP
from kernels.checks import check_mode
from kernels.runtime import BACKENDS

from ..blocks import (ConvNet, ConvNormAct, FrozenStatsBatchNorm2d, InvertedResidual, LiteResidual,
                      SkipBlock, SqueezeExcite)
from ..mask_activations import MASK_ACTIVATIONS, MOBILETL_SURROGATE, MaskHardswish, to_mask_activation
from ..models.groupnorm import WSConv2d
from ..models.resnet import ResidualBlock
from .frozen import FrozenConv2d, FrozenLinear, check_bits
from .norms import BatchNormAct, LeanBatchNorm2d, LeanGroupNorm
from .pools import LeanAvgPool2d, LeanMaxPool2d
from .ws_conv import LeanWSConv2d

FUSABLE = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid)  # activations a norm + mask twin takes
TWINS = (FrozenConv2d, FrozenLinear, LeanWSConv2d, BatchNormAct, LeanBatchNorm2d, LeanGroupNorm,
         LeanAvgPool2d, LeanMaxPool2d, GroupNormAct, FrozenNormAct, FrozenStatsBatchNorm2d, *MASK_ACTIVATIONS)
# Leaves whose stock backward keeps only what it needs, and containers (their own forward keeps
# nothing beyond squeeze-excite's product, which needs both factors).
MINIMAL = (nn.Dropout, nn.Identity, nn.Flatten, nn.Upsample)
CONTAINERS = (nn.Sequential, nn.ModuleList, ConvNormAct, InvertedResidual, LiteResidual, SkipBlock,
              SqueezeExcite, ConvNet, ResidualBlock)


@dataclass(frozen=True)
class Row:
    name: str
    stock: str  # the type it had
    twin: str  # the type it has now ("" where it is left as it was)
    note: str


@dataclass
class KernelizeReport:
    """What :func:`kernelize` did to each leaf: ``rows`` in module order; ``unsupported`` are the
    leaves left stock for lack of a twin (they keep what stock PyTorch keeps)."""

    backward: str
    frozen_bits: int
    rows: list[Row] = field(default_factory=list)

    @property
    def unsupported(self) -> list[Row]:
        return [r for r in self.rows if r.note.startswith("no lean twin")]

    def table(self) -> str:
        lines = [f"{'layer':38s} {'stock':16s} {'twin':16s} note"]
        lines += [f"{r.name[:38]:38s} {r.stock[:16]:16s} {r.twin[:16]:16s} {r.note}" for r in self.rows]
        return "\n".join(lines)


def _frozen(p) -> bool:
    return p is None or not p.requires_grad


def _norm_mode(norm: nn.Module, backward: str) -> str:
    """A norm whose gamma trains stays exact: d(gamma) needs x_hat."""
    return backward if _frozen(norm.weight) else "exact"


def _surrogate(act: nn.Module, mode: str):
    """Hard-Swish's derivative: the true one where ``x`` is kept (exact), one bit where not."""
    if isinstance(act, nn.Hardswish):
        return None if mode == "exact" else MOBILETL_SURROGATE
    return STEP


def _fused(norm: nn.Module, act: nn.Module, backward: str, backend: str | None) -> nn.Module | None:
    """The twin of ``act(norm(x))``, or None when the pair has none."""
    if type(act) not in FUSABLE:
        return None
    mode = _norm_mode(norm, backward)
    if type(norm) is nn.GroupNorm:
        twin = GroupNormAct.from_modules(norm, act, backward=mode, surrogate=_surrogate(act, mode), backend=backend)
    elif type(norm) is nn.BatchNorm2d:
        twin = BatchNormAct.from_modules(norm, act, backward=mode, surrogate=_surrogate(act, mode))
        twin.backend = backend
    else:
        return None
    return twin.train(norm.training)


def _pairs(parent: nn.Module) -> list[tuple[str, str]]:
    """(norm, activation) child names of ``parent`` whose norm output goes only to the activation."""
    if isinstance(parent, ConvNormAct):
        return [("norm", "act")]
    if isinstance(parent, LiteResidual):
        return [("norm1", "act")]
    if type(parent) is nn.Sequential:
        names = list(parent._modules)
        return list(zip(names[:-1], names[1:]))
    return []


def _single(module: nn.Module, backward: str, bits: int) -> tuple[nn.Module | None, str]:
    """(the twin of a leaf, or None to leave it, and why)."""
    kind = type(module)
    if isinstance(module, TWINS):
        return None, "already lean"
    if kind in (nn.Conv2d, WSConv2d, nn.Linear):
        if module.weight.requires_grad:
            if kind is WSConv2d:
                return _or_reason(lambda: LeanWSConv2d.from_module(module), "keeps x; W_hat recomputed")
            return None, "trainable: keeps x, which dW needs"
        twin = FrozenConv2d if kind is not nn.Linear else FrozenLinear
        return _or_reason(lambda: twin.from_module(module, bits), f"frozen: keeps nothing ({bits}-bit weight)")
    if kind is nn.GroupNorm:
        return LeanGroupNorm.from_module(module, _norm_mode(module, backward)), "lone norm"
    if kind is nn.BatchNorm2d:
        return LeanBatchNorm2d.from_module(module, _norm_mode(module, backward)).train(module.training), "lone norm"
    if kind in FUSABLE:
        if kind is nn.Hardswish and backward == "exact":
            return None, "exact: the true Hard-Swish derivative needs its input"
        return to_mask_activation(module, MOBILETL_SURROGATE), "1-bit mask"
    if kind is nn.AvgPool2d:
        return LeanAvgPool2d.from_module(module), "keeps nothing"
    if kind is nn.MaxPool2d:
        return _or_reason(lambda: LeanMaxPool2d.from_module(module), "keeps the argmax within each window")
    if kind is nn.AdaptiveAvgPool2d and module.output_size in (1, (1, 1)):
        return None, "global pooling keeps nothing"
    if isinstance(module, MINIMAL) or isinstance(module, CONTAINERS):
        return None, "keeps what it needs"
    return None, f"no lean twin for {kind.__name__}: left stock"


def _or_reason(build, note: str) -> tuple[nn.Module | None, str]:
    try:
        return build(), note
    except ValueError as error:  # e.g. a padding mode the twin's backward cannot express
        return None, f"no lean twin: {error}"


def kernelize(model: nn.Module, *, backward: str = "exact", frozen_bits: int = 32, backend: str | None = None,
              strict: bool = False) -> nn.Module:
    """Replace every layer of ``model`` by its memory-lean twin where the method allows, in place
    (module docstring). ``frozen_bits``: 32 or 8 (int8 frozen conv / linear weights with a scale
    per output channel). ``strict``: raise a ValueError naming any layer left stock for lack of
    a twin (default: a warning). The report is :func:`kernelize_report`."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_mode(backward)
    bits = check_bits(frozen_bits)
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
    if backend is None:
        devices = {t.device.type for t in model.parameters()}
        backend = None if devices == {"cuda"} else "torch"
    if strict:  # check before changing anything
        unsupported = kernelize_modules(meta_copy(model), backward, bits, backend).unsupported
        if unsupported:
            raise ValueError("kernelize has no lean twin for: " + ", ".join(f"{r.name} ({r.stock})" for r in unsupported))
    report = kernelize_modules(model, backward, bits, backend)
    if report.unsupported:
        warnings.warn("kernelize left these layers stock (no lean twin; they keep what stock PyTorch keeps): "
                      + ", ".join(f"{r.name} ({r.stock})" for r in report.unsupported), stacklevel=2)
    model.kernelize_report = report
    return model


def meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose tensors are on the meta device (for a dry run)."""
    memo = {id(t): torch.empty_like(t, device="meta") for t in itertools.chain(model.parameters(), model.buffers())}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(memo[id(p)], requires_grad=p.requires_grad)
    return copy.deepcopy(model, memo)


def kernelize_modules(model: nn.Module, backward: str, bits: int, backend: str | None) -> KernelizeReport:
    """The surgery of :func:`kernelize` on checked arguments, without warnings; the report."""
    report = KernelizeReport(backward, bits)
    names = {m: n for n, m in model.named_modules()}
    fused = {}
    for parent in list(model.modules()):
        for norm_name, act_name in _pairs(parent):
            norm, act = parent._modules.get(norm_name), parent._modules.get(act_name)
            if norm is None or act is None or norm in fused or act in fused:
                continue
            twin = _fused(norm, act, backward, backend)
            if twin is not None:
                placeholder = nn.Identity()
                setattr(parent, norm_name, twin)
                setattr(parent, act_name, placeholder)
                fused[norm] = fused[act] = fused[twin] = fused[placeholder] = twin  # not visited again
                report.rows.append(Row(names[norm], f"{type(norm).__name__}+{type(act).__name__}",
                                       type(twin).__name__, f"{twin.backward} backward"))
    for parent in list(model.modules()):
        for child_name, child in list(parent._modules.items()):
            if child is None or child._modules or child in fused:
                continue
            twin, note = _single(child, backward, bits)
            if twin is not None:
                if hasattr(twin, "backend"):
                    twin.backend = backend
                setattr(parent, child_name, twin)
            report.rows.append(Row(names.get(child, child_name), type(child).__name__,
                                   type(twin).__name__ if twin is not None else "", note))
    return report


def kernelize_report(model: nn.Module) -> KernelizeReport:
    """The report of the last :func:`kernelize` of ``model``."""
    report = getattr(model, "kernelize_report", None)
    if not isinstance(report, KernelizeReport):
        raise ValueError("model has not been kernelized: call ondevice.kernelize(model) first")
    return report


__all__ = ["KernelizeReport", "TWINS", "kernelize", "kernelize_modules", "kernelize_report", "meta_copy"]
