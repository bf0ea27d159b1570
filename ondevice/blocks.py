"""Building blocks shared by the model zoo (chapter 1, "Whole networks"; chapters 2 and 3).

Every model in :mod:`ondevice.models` is a :class:`ConvNet`: a stem, a flat ``blocks`` sequence,
an optional final 1x1 conv, global average pooling and a classifier. Every conv that is followed
by a norm lives in a :class:`ConvNormAct`, so code that needs "the norm after this conv" (TinyTL's
GroupNorm swap, MobileTL's shift-only norms) finds it as ``unit.norm``.

Activations are not in place (``inplace=False``): each layer's output is its own tensor, which
keeps the memory accounting (what autograd saves) unambiguous and lets later chapters wrap or
replace any layer without autograd version-counter surprises.

MobileTL mode (chapter 3) is a conversion, not a block class: :func:`to_mobiletl` replaces an
:class:`InvertedResidual`'s norms 1 and 2 with :class:`FrozenStatsBatchNorm2d` (shift-only) and
its activations with 1-bit mask activations (:mod:`ondevice.mask_activations`), in place.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from kernels.affine_act import frozen_scale_shift

Activation = Optional[Callable[[], nn.Module]]


def make_divisible(value: float, divisor: int = 8, min_value: Optional[int] = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` without going below 90 % of it.

    This is the channel rounding of the MobileNetV2 / V3 reference implementations, e.g.
    ``make_divisible(32 * 0.35) == 16`` and ``make_divisible(1280 * 1.4) == 1792``.
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:  # never remove more than 10 % of the channels
        rounded += divisor
    return rounded


class ConvNormAct(nn.Module):
    """``conv`` (bias-free, "same" padding) -> ``norm`` (BatchNorm2d) -> ``act``.

    ``activation`` is a module class or factory (``nn.ReLU6``, ``nn.Hardswish``, ...); ``None``
    gives ``nn.Identity`` so that ``unit.act`` always exists.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        activation: Activation = nn.ReLU6,
    ):
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2,
            groups=groups, bias=False,
        )
        self.norm = nn.BatchNorm2d(out_channels)
        self.act = nn.Identity() if activation is None else activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation as in MobileNetV3 (Howard et al. 2019, §5.3).

    Global average pool -> 1x1 conv ``fc1`` (with bias) -> ReLU -> 1x1 conv ``fc2`` (with bias)
    -> Hard-sigmoid gate; the input is multiplied channel-wise by the gate.
    """

    def __init__(self, channels: int, squeeze_channels: int,
                 activation: Activation = nn.ReLU, gate: Activation = nn.Hardsigmoid):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.act = activation()
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.gate = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))
        return x * scale


class InvertedResidual(nn.Module):
    """The inverted residual block (MBConv) of MobileNetV2, ProxylessNAS and MobileNetV3.

    Sub-modules, in forward order (each a :class:`ConvNormAct` except ``se``):

    - ``expand``: 1x1 conv ``in -> mid`` + norm + act; ``None`` when ``mid == in`` (expand ratio 1);
    - ``depthwise``: kxk depthwise conv (stride ``stride``) + norm + act;
    - ``se``: :class:`SqueezeExcite` on the ``mid`` channels, or ``None``;
    - ``project``: 1x1 conv ``mid -> out`` + norm, no activation (``project.act`` is Identity).

    The output is ``shortcut(x) + main_branch(x)`` when ``use_residual`` (stride 1 and
    ``in == out``), else ``main_branch(x)``.

    MobileTL's numbering of the norm layers (see :meth:`norm_layers`): **norm 1** =
    ``expand.norm``, **norm 2** = ``depthwise.norm`` (both followed by an activation; MobileTL
    trains only their shift), **norm 3** = ``project.norm`` (trained fully). A block without an
    expansion conv has no norm 1.

    The expanded width is ``mid_channels`` if given (MobileNetV3 tables list it), otherwise
    ``round(in_channels * expand_ratio)``; ``expand_ratio`` is then ``mid / in``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        expand_ratio: float = 6.0,
        *,
        mid_channels: Optional[int] = None,
        activation: Activation = nn.ReLU6,
        se_channels: Optional[int] = None,
    ):
        super().__init__()
        if mid_channels is None:
            mid_channels = int(round(in_channels * expand_ratio))
        self.in_channels, self.out_channels = in_channels, out_channels
        self.mid_channels = mid_channels
        self.kernel_size, self.stride = kernel_size, stride
        self.expand_ratio = mid_channels / in_channels
        self.use_residual = stride == 1 and in_channels == out_channels

        self.expand = (None if mid_channels == in_channels
                       else ConvNormAct(in_channels, mid_channels, 1, activation=activation))
        self.depthwise = ConvNormAct(mid_channels, mid_channels, kernel_size, stride,
                                     groups=mid_channels, activation=activation)
        self.se = None if se_channels is None else SqueezeExcite(mid_channels, se_channels)
        self.project = ConvNormAct(mid_channels, out_channels, 1, activation=None)

        self.lite = None  # TinyTL's LiteResidual branch, set by ondevice.lite_residual

    def main_branch(self, x: torch.Tensor) -> torch.Tensor:
        """The MBConv path without the shortcut (where TinyTL's lite residual is added next to)."""
        out = x if self.expand is None else self.expand(x)
        out = self.depthwise(out)
        if self.se is not None:
            out = self.se(out)
        return self.project(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.main_branch(x)
        if self.lite is not None:  # TinyTL: shortcut(x) + MBConv(x) + LiteResidual(x)
            out = out + self.lite(x, out.shape[-2:])
        return out + x if self.use_residual else out

    def norm_layers(self) -> tuple[Optional[nn.Module], nn.Module, nn.Module]:
        """MobileTL's (norm 1, norm 2, norm 3); norm 1 is ``None`` without an expansion conv."""
        return (None if self.expand is None else self.expand.norm,
                self.depthwise.norm, self.project.norm)


class FrozenStatsBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d that always normalises with its running statistics, in training mode too:
    MobileTL's norms 1 and 2 (Chiang et al., AAAI 2023, §3; chapter 3, "Shift-only normalization").

    With frozen statistics the norm is an affine map, ``y = x * scale + shift`` with
    ``scale = gamma / sqrt(running_var + eps)`` and ``shift = beta - running_mean * scale``. The
    forward is written as exactly that map in plain torch, so autograd keeps what the math
    needs and no more: with gamma frozen, only the per-channel ``scale`` (``C`` values, for
    ``dx = dy * scale``; ``d(beta) = sum(dy)`` needs nothing); if gamma trains, also ``x`` and
    ``1 / sqrt(running_var + eps)``. Stock BatchNorm in eval mode keeps the full input ``x``
    whenever it has a backward. The running statistics are never updated (``train()`` has no
    effect on this module). Outputs equal ``nn.BatchNorm2d`` in eval mode up to float rounding.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = frozen_scale_shift(self.weight, self.bias, self.running_mean, self.running_var, self.eps)
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm2d) -> "FrozenStatsBatchNorm2d":
        """A frozen-statistics norm that shares ``bn``'s parameters and running statistics."""
        if not (isinstance(bn, nn.BatchNorm2d) and bn.affine and bn.track_running_stats):
            raise TypeError(f"needs an affine nn.BatchNorm2d with running statistics, got {bn!r}")
        if isinstance(bn, cls):
            return bn
        new = cls(bn.num_features, bn.eps, bn.momentum, device="meta")
        new.weight, new.bias = bn.weight, bn.bias
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            setattr(new, name, getattr(bn, name))
        new.train(bn.training)
        return new


def _mobiletl_unit(unit: "ConvNormAct", what: str) -> None:
    if not isinstance(unit.norm, nn.BatchNorm2d):
        raise TypeError(
            f"MobileTL mode needs BatchNorm2d norms (it freezes their running statistics); "
            f"{what} has {type(unit.norm).__name__}: apply it to a network without to_groupnorm")


def to_mobiletl(module: nn.Module, surrogate=None) -> nn.Module:
    """Put an inverted residual block (or a conv-norm-activation unit) in MobileTL mode, in
    place, and return it (Chiang et al., AAAI 2023, Fig. 2; chapter 3).

    For an :class:`InvertedResidual`: norms 1 and 2 (``expand.norm``, ``depthwise.norm``, see
    :meth:`InvertedResidual.norm_layers`) become :class:`FrozenStatsBatchNorm2d` sharing their
    parameters and statistics, and only their shift (``bias``) trains; norm 3 (``project.norm``)
    trains fully (scale, shift, and statistics in training mode); every conv weight trains, the
    squeeze-excite module included; the activations after norms 1 and 2 become 1-bit mask
    activations (:mod:`ondevice.mask_activations`; ``surrogate`` for Hard-Swish, default
    :data:`~ondevice.mask_activations.MOBILETL_SURROGATE`, our choice). The forward pass equals
    the block's forward with norms 1 and 2 in eval mode.

    For a :class:`ConvNormAct` with an activation (e.g. a network's final 1x1 conv): the same
    treatment as norm 1 (conv weight trains, shift-only frozen-statistics norm, mask activation).

    The block's forward (the class) is unchanged: only its sub-modules are replaced. Blocks with
    GroupNorm or with a TinyTL lite residual branch are rejected.
    """
    from .mask_activations import MOBILETL_SURROGATE, check_surrogate, to_mask_activation

    surrogate = check_surrogate(MOBILETL_SURROGATE if surrogate is None else surrogate)
    if isinstance(module, InvertedResidual):
        if module.lite is not None:
            raise ValueError("this block has a TinyTL lite residual branch; MobileTL mode applies "
                             "to plain inverted residual blocks")
        units = [u for u in (module.expand, module.depthwise) if u is not None]
        for u, what in zip(units, ("the expansion conv", "the depthwise conv")[-len(units):]):
            _mobiletl_unit(u, what)
        _mobiletl_unit(module.project, "the projection conv")
        module.requires_grad_(True)
    elif isinstance(module, ConvNormAct) and not isinstance(module.act, nn.Identity):
        _mobiletl_unit(module, "this unit")
        units = [module]
        module.conv.requires_grad_(True)
    else:
        raise TypeError(f"to_mobiletl needs an InvertedResidual or a ConvNormAct with an "
                        f"activation, got {type(module).__name__}")
    for u in units:
        u.act = to_mask_activation(u.act, surrogate)
        u.norm = FrozenStatsBatchNorm2d.from_batchnorm(u.norm)
        u.norm.weight.requires_grad_(False)
        u.norm.bias.requires_grad_(True)
    return module


def is_mobiletl(module: nn.Module) -> bool:
    """Whether :func:`to_mobiletl` has converted ``module`` (its norms 1 and 2 are frozen-statistics)."""
    if isinstance(module, InvertedResidual):
        return all(isinstance(n, FrozenStatsBatchNorm2d) for n in module.norm_layers()[:2] if n is not None)
    return isinstance(module, ConvNormAct) and isinstance(module.norm, FrozenStatsBatchNorm2d)


class LiteResidual(nn.Module):
    """TinyTL's lite residual branch (Cai et al., NeurIPS 2020, §3.2; chapter 2, "The
    lite residual module, built in steps", ``book/02_tinytl/02_lite_residual``).

    Runs next to an inverted residual block on the block's input ``x``, at half resolution and
    without the 6x expansion, so its activations are small: ``pool`` (2x2 average) -> ``conv1``
    (k x k, groups 2, the block's stride, ``mid`` channels) -> ``norm1`` -> ``act`` (ReLU) ->
    ``conv2`` (1x1 to the block's output channels) -> ``final_norm`` (gamma starts at 0, so the
    branch starts as a no-op) -> bilinear upsampling to the block's output size.
    """

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int, kernel_size: int,
                 stride: int, groups: int = 2, downsample: int = 2, groupnorm: bool = False):
        super().__init__()
        conv = nn.Conv2d
        if groupnorm:  # match a network already converted by ondevice.models.to_groupnorm
            from .models.groupnorm import WSConv2d, num_groups

            conv = WSConv2d

            def norm(c):
                return nn.GroupNorm(num_groups(c), c)
        else:
            norm = nn.BatchNorm2d
        self.pool = nn.AvgPool2d(downsample, downsample)
        self.conv1 = conv(in_channels, mid_channels, kernel_size, stride, kernel_size // 2,
                          groups=groups, bias=False)
        self.norm1 = norm(mid_channels)
        self.act = nn.ReLU()
        self.conv2 = conv(mid_channels, out_channels, 1, bias=False)
        self.final_norm = norm(out_channels)
        init_weights(self)
        nn.init.zeros_(self.final_norm.weight)

    def forward(self, x: torch.Tensor, size) -> torch.Tensor:
        if min(x.shape[-2:]) < self.pool.kernel_size:
            raise ValueError(
                f"a lite residual branch got a {x.shape[-2]}x{x.shape[-1]} feature map; it needs at "
                f"least {self.pool.kernel_size}x{self.pool.kernel_size} (input resolution >= 64 "
                f"for the zoo's stride-32 networks)")
        out = self.final_norm(self.conv2(self.act(self.norm1(self.conv1(self.pool(x))))))
        return F.interpolate(out, size=tuple(size), mode="bilinear", align_corners=False)


class SkipBlock(nn.Module):
    """ProxylessNAS's "skip" choice: the block is only its identity shortcut (no parameters).

    It keeps the block attributes of :class:`InvertedResidual` so code can iterate over
    ``model.blocks`` uniformly; ``use_residual`` is True (the output is the shortcut) and
    ``kernel_size`` / ``expand_ratio`` are 0.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.in_channels = self.out_channels = self.mid_channels = channels
        self.stride, self.kernel_size, self.expand_ratio = 1, 0, 0.0
        self.use_residual = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class ConvNet(nn.Module):
    """stem -> ``blocks`` (flat nn.Sequential) -> ``final_conv`` -> global avg pool -> classifier.

    ``final_conv`` may be ``None`` (ResNet). ``classifier`` is an nn.Sequential whose last module
    is the output :class:`nn.Linear` (:attr:`last_linear`). "Fine-tune the top K blocks" is
    ``model.blocks[-K:]``.
    """

    def __init__(self, stem: nn.Module, blocks: list[nn.Module],
                 final_conv: Optional[nn.Module], classifier: nn.Sequential):
        super().__init__()
        self.stem = stem
        self.blocks = nn.Sequential(*blocks)
        self.final_conv = final_conv
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = classifier
        init_weights(self)

    @property
    def last_linear(self) -> nn.Linear:
        return self.classifier[-1]

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the output Linear with a fresh one with ``num_classes`` outputs (transfer)."""
        old = self.last_linear
        new = nn.Linear(old.in_features, num_classes, device=old.weight.device,
                        dtype=old.weight.dtype)
        init_weights(new)
        self.classifier[-1] = new

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:  # not self.blocks(x): that call would hold the stem's output to the end
            x = block(x)
        if self.final_conv is not None:
            x = self.final_conv(x)
        return torch.flatten(self.pool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x))


def init_weights(module: nn.Module) -> None:
    """Reference initialisation: convs Kaiming-normal (fan out), norms 1 / 0, Linear N(0, 0.01)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
