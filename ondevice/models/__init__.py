"""The model zoo (design.md §4): the backbones of the TinyTL and MobileTL experiments.

All models are :class:`ondevice.blocks.ConvNet` built from :mod:`ondevice.blocks`; parameter
counts with 1000-class heads match the published ones (torchvision / the ProxylessNAS release).
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from .groupnorm import WSConv2d, num_groups, to_groupnorm
from .mobilenet_v2 import mobilenet_v2
from .mobilenet_v3 import mobilenet_v3_large, mobilenet_v3_small
from .proxylessnas import proxylessnas_mobile
from .resnet import Bottleneck, resnet50
from .tiny import proxylessnas_tiny, tiny_mbconv

ZOO: dict[str, Callable[..., nn.Module]] = {
    "mobilenet_v2": mobilenet_v2,
    "proxylessnas_mobile": proxylessnas_mobile,
    "mobilenet_v3_large": mobilenet_v3_large,
    "mobilenet_v3_small": mobilenet_v3_small,
    "resnet50": resnet50,
}


def build(name: str, **kwargs) -> nn.Module:
    """Construct the zoo model ``name`` with constructor keyword arguments ``kwargs``."""
    if name not in ZOO:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(sorted(ZOO))}")
    return ZOO[name](**kwargs)


__all__ = [
    "ZOO", "Bottleneck", "WSConv2d", "build", "mobilenet_v2", "mobilenet_v3_large",
    "mobilenet_v3_small", "num_groups", "proxylessnas_mobile", "proxylessnas_tiny", "resnet50", "tiny_mbconv",
    "to_groupnorm",
]
