"""Transfer-learning methods: what trains (TinyTL Table 2's rows; chapters 2 and 3).

Each method freezes the model, then switches ``requires_grad`` on for its parameters (and
inserts modules where it needs them), in place; ``apply(model, name)`` looks a method up by
name. The memory engine reads ``requires_grad``, so every method is covered by
:func:`ondevice.memory.estimate` and :func:`ondevice.memory.measure`.

- ``ft_full``: everything. ``ft_last``: the output layer only.
- ``ft_norm_last``: the norms' scale and shift + the output layer.
- ``tinytl_b``: every bias (the norms' shifts, biased convs/linears) + the output layer.
- ``tinytl_l``: the lite residual branches (inserted if missing) + the output layer.
- ``tinytl_lb``: both; the branches' final-norm shift stays frozen, as in TinyTL.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from .blocks import InvertedResidual
from .lite_residual import add_lite_residuals

NORMS = (nn.BatchNorm2d, nn.GroupNorm)
METHODS: dict[str, Callable[..., nn.Module]] = {}


def method(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    METHODS[fn.__name__] = fn
    return fn


def output_layer(model: nn.Module) -> nn.Linear:
    """The layer that FT-Last trains: the last ``nn.Linear`` of the model."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear output layer")
    return linears[-1]


def _start(model: nn.Module) -> nn.Module:
    model.requires_grad_(False)
    output_layer(model).requires_grad_(True)
    return model


def _lite_branches(model: nn.Module) -> list[nn.Module]:
    """The lite branches of ``model``'s inverted residual blocks (any module set as ``.lite``,
    a :class:`LiteResidual` by default), inserted first if the model has none."""
    def found():
        return [b.lite for b in model.modules() if isinstance(b, InvertedResidual) and b.lite is not None]

    if not found():
        add_lite_residuals(model)
    return found()


@method
def ft_full(model: nn.Module) -> nn.Module:
    """Fine-tune everything (the memory baseline)."""
    return model.requires_grad_(True)


@method
def ft_last(model: nn.Module) -> nn.Module:
    """Train only the output layer (a frozen feature extractor)."""
    return _start(model)


@method
def ft_norm_last(model: nn.Module) -> nn.Module:
    """Train the norm layers' scale and shift, and the output layer."""
    _start(model)
    for m in model.modules():
        if isinstance(m, NORMS):
            m.requires_grad_(True)
    return model


@method
def tinytl_b(model: nn.Module) -> nn.Module:
    """TinyTL-B: train every bias (norm shifts included) and the output layer."""
    _start(model)
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            p.requires_grad_(True)
    return model


@method
def tinytl_l(model: nn.Module) -> nn.Module:
    """TinyTL-L: train the lite residual branches (inserted if missing) and the output layer."""
    branches = _lite_branches(model)
    _start(model)
    for b in branches:
        b.requires_grad_(True)
    return model


@method
def tinytl_lb(model: nn.Module) -> nn.Module:
    """TinyTL-L+B: lite residual branches + every bias + the output layer; each branch's
    final-norm shift stays frozen (TinyTL's choice: the main branch's bias already trains)."""
    branches = _lite_branches(model)
    tinytl_b(model)
    for b in branches:
        b.requires_grad_(True)
        if getattr(b, "final_norm", None) is not None:
            b.final_norm.bias.requires_grad_(False)
    return model


def apply(model: nn.Module, name: str, **options) -> nn.Module:
    """Apply the method called ``name`` to ``model`` in place and return it."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}")
    return METHODS[name](model, **options)
