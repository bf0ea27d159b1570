"""TinyTL's normalisation swap (Cai et al., NeurIPS 2020, §3.3; chapter 2, "GroupNorm vs
BatchNorm at small batch", ``book/02_tinytl/03_groupnorm``).

BatchNorm needs large batches; on device the batch is small (8 in TinyTL), so TinyTL replaces
every BatchNorm with GroupNorm (8 channels per group) and standardises the weights of every
bias-free conv (weight standardization, Qiao et al. 2019).
"""

from __future__ import annotations

import torch
from torch import nn


def standardize(weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Weight standardization: ``(w - mean) / sqrt(var + eps)`` per output channel, over
    ``(in / groups, kh, kw)``, biased variance."""
    var, mean = torch.var_mean(weight, dim=(1, 2, 3), keepdim=True, unbiased=False)
    return (weight - mean) / torch.sqrt(var + eps)


class WSConv2d(nn.Conv2d):
    """Conv2d whose forward uses the weight standardised per output channel (:func:`standardize`).
    The stored parameter ``weight`` stays the raw one."""

    eps = 1e-5

    def standardized_weight(self) -> torch.Tensor:
        return standardize(self.weight, self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.standardized_weight(), self.bias)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> "WSConv2d":
        """A WSConv2d with ``conv``'s hyper-parameters that shares its weight (and bias)."""
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                  conv.padding, conv.dilation, conv.groups, conv.bias is not None,
                  conv.padding_mode, device="meta")
        new.weight = conv.weight
        new.bias = conv.bias
        return new


def num_groups(channels: int, channels_per_group: int = 8) -> int:
    """``channels // channels_per_group`` groups; if that does not divide ``channels``, the
    largest group count below it that does (GroupNorm needs equal groups), at least 1."""
    groups = max(1, channels // channels_per_group)
    while channels % groups:
        groups -= 1
    return groups


def _groupnorm_from(bn: nn.BatchNorm2d, channels_per_group: int) -> nn.GroupNorm:
    c = bn.num_features
    tensors = [*bn.parameters(), *bn.buffers()]
    gn = nn.GroupNorm(num_groups(c, channels_per_group), c, eps=1e-5, affine=True,
                      device=tensors[0].device if tensors else None)
    if bn.affine:  # share the affine parameters: values (and requires_grad) carry over
        gn.weight, gn.bias = bn.weight, bn.bias
    return gn


def to_groupnorm(model: nn.Module, channels_per_group: int = 8,
                 weight_standardization: bool = True) -> nn.Module:
    """In place: every BatchNorm2d -> GroupNorm, every bias-free Conv2d -> :class:`WSConv2d`.

    Parameter tensors are reused, not copied, so values carry over and the meta device works.
    Running statistics are dropped (GroupNorm has none). Returns ``model``.
    """
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(parent, name, _groupnorm_from(child, channels_per_group))
            elif weight_standardization and type(child) is nn.Conv2d and child.bias is None:
                # exact type: subclasses (e.g. an existing WSConv2d) are left alone
                setattr(parent, name, WSConv2d.from_conv(child))
    return model
