"""The model zoo (chapter 1, "Whole networks", ``book/01_memory/03_networks``): the backbones of
the TinyTL and MobileTL experiments, and the other backbones of TinyTL's Table 3 (Inception-V3,
ResNet-50, MobileNetV2-1.4) and of common use (ResNet-18, EfficientNet-B0, MnasNet-1.0).

All models are :class:`ondevice.blocks.ConvNet` built from :mod:`ondevice.blocks`; parameter
counts with 1000-class heads match the published ones (torchvision / the ProxylessNAS release;
``tests/test_models.py`` names each).
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from .efficientnet import efficientnet_b0
from .groupnorm import WSConv2d, num_groups, to_groupnorm
from .inception import inception_v3
from .mnasnet import mnasnet1_0
from .mobilenet_v2 import mobilenet_v2, mobilenet_v2_140
from .mobilenet_v3 import mobilenet_v3_large, mobilenet_v3_small
from .proxylessnas import proxylessnas_mobile
from .resnet import BasicBlock, Bottleneck, ResidualBlock, resnet18, resnet50
from .tiny import proxylessnas_tiny, tiny_mbconv

ZOO: dict[str, Callable[..., nn.Module]] = {
    "mobilenet_v2": mobilenet_v2,
    "proxylessnas_mobile": proxylessnas_mobile,
    "mobilenet_v3_large": mobilenet_v3_large,
    "mobilenet_v3_small": mobilenet_v3_small,
    "resnet50": resnet50,
    "resnet18": resnet18,
    "inception_v3": inception_v3,
    "efficientnet_b0": efficientnet_b0,
    "mnasnet1_0": mnasnet1_0,
    "mobilenet_v2_140": mobilenet_v2_140,
}


def build(name: str, **kwargs) -> nn.Module:
    """Construct the zoo model ``name`` with constructor keyword arguments ``kwargs``."""
    if name not in ZOO:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(sorted(ZOO))}")
    return ZOO[name](**kwargs)


__all__ = [
    "ZOO", "BasicBlock", "Bottleneck", "ResidualBlock", "WSConv2d", "build", "efficientnet_b0", "inception_v3",
    "mnasnet1_0", "mobilenet_v2", "mobilenet_v2_140", "mobilenet_v3_large", "mobilenet_v3_small", "num_groups",
    "proxylessnas_mobile", "proxylessnas_tiny", "resnet18", "resnet50", "tiny_mbconv", "to_groupnorm",
]
