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

Methods in :data:`METHODS` only choose what trains (and insert lite branches), so they apply to
every network of the zoo, BatchNorm or GroupNorm. :data:`BLOCK_METHODS` holds the methods that
rebuild modules and need BatchNorm inverted residual blocks:

- ``mobiletl``: MobileTL (Chiang et al., AAAI 2023): the top ``k_blocks`` blocks in MobileTL
  mode (:func:`ondevice.blocks.to_mobiletl`), the final 1x1 conv likewise, and the classifier.

``apply`` finds a method in either registry.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from .blocks import ConvNet, InvertedResidual, SkipBlock, to_mobiletl
from .lite_residual import add_lite_residuals

NORMS = (nn.BatchNorm2d, nn.GroupNorm)
METHODS: dict[str, Callable[..., nn.Module]] = {}  # choose what trains; any zoo network
BLOCK_METHODS: dict[str, Callable[..., nn.Module]] = {}  # rebuild blocks; BatchNorm IRB networks


def method(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    METHODS[fn.__name__] = fn
    return fn


def block_method(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    BLOCK_METHODS[fn.__name__] = fn
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


@block_method
def mobiletl(model: nn.Module, k_blocks: int = 5, surrogate=None) -> nn.Module:
    """MobileTL (Chiang et al., AAAI 2023, §3): fine-tune only the top ``k_blocks`` blocks, each
    in MobileTL mode, plus the final 1x1 conv and the classifier; everything below is frozen,
    so the backward pass stops at the lowest fine-tuned block (chapter 3, "Top-K blocks").

    - ``model.blocks[-k_blocks:]``: :func:`~ondevice.blocks.to_mobiletl` (conv weights train;
      norms 1 and 2 shift-only with frozen statistics; norm 3 fully; 1-bit mask activations,
      ``surrogate`` for Hard-Swish, default our choice
      :data:`~ondevice.mask_activations.MOBILETL_SURROGATE`). Skip blocks have nothing to train.
    - ``model.final_conv`` (if any): **our choice**, the paper only says it fine-tunes "a few top
      blocks (close to output)". It trains like norm 1 of a block: conv weight, the shift of its
      frozen-statistics norm, a mask activation. The gradient must pass through it to reach the
      blocks anyway; training its weight keeps its (narrow) input; freezing its norm's scale
      avoids keeping its 4-6x wider output, as MobileTL does inside the blocks.
    - ``model.classifier``: every parameter trains; its modules stay stock (MobileNetV3's
      Hard-Swish there sees 1280 values per sample: nothing to save).

    ``k_blocks`` may be 0 (final conv and classifier only) up to ``len(model.blocks)``. The
    blocks are converted in place and stay converted: apply other methods to a fresh model.
    """
    if not isinstance(model, ConvNet):
        raise TypeError(f"mobiletl needs an ondevice ConvNet (the zoo's models), got {type(model).__name__}")
    n = len(model.blocks)
    if isinstance(k_blocks, bool) or not isinstance(k_blocks, int) or not 0 <= k_blocks <= n:
        raise ValueError(f"k_blocks must be an int from 0 to {n} (the number of blocks of this "
                         f"model), got {k_blocks!r}")
    top = list(model.blocks)[n - k_blocks:]
    wrong = [type(b).__name__ for b in top if not isinstance(b, (InvertedResidual, SkipBlock))]
    if wrong:
        raise TypeError(f"mobiletl fine-tunes inverted residual blocks; the top {k_blocks} blocks "
                        f"include {', '.join(sorted(set(wrong)))}")
    norms = [norm for b in top if isinstance(b, InvertedResidual) for norm in b.norm_layers()]
    if model.final_conv is not None:
        norms.append(getattr(model.final_conv, "norm", None))
    for norm in norms:  # check everything before changing anything
        if norm is not None and not isinstance(norm, nn.BatchNorm2d):
            raise TypeError(f"mobiletl needs BatchNorm2d norms (it freezes their running "
                            f"statistics), got {type(norm).__name__}")
    if any(isinstance(b, InvertedResidual) and b.lite is not None for b in top):
        raise ValueError("mobiletl needs blocks without TinyTL lite residual branches")
    from .mask_activations import check_surrogate  # imports kernels: only when MobileTL is used

    surrogate = None if surrogate is None else check_surrogate(surrogate)
    _start(model)
    for b in top:
        if isinstance(b, InvertedResidual):
            to_mobiletl(b, surrogate)
    if model.final_conv is not None:
        to_mobiletl(model.final_conv, surrogate)
    model.classifier.requires_grad_(True)
    return model


def apply(model: nn.Module, name: str, **options) -> nn.Module:
    """Apply the method called ``name`` (in :data:`METHODS` or :data:`BLOCK_METHODS`) to
    ``model`` in place and return it; ``options`` go to the method (``k_blocks=`` for mobiletl)."""
    found = METHODS.get(name) or BLOCK_METHODS.get(name)
    if found is None:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join([*METHODS, *BLOCK_METHODS])}")
    return found(model, **options)
