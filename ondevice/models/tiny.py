"""Small networks for experiments that must train on a CPU (chapters 2, 3 and 5).

The zoo's networks have total stride 32, so TinyTL's lite residual branches (2x2 pooling) need
inputs of at least 64 px. These have total stride 16: at 32 px the last feature map is 2x2, the
smallest on which the branches run.

- :func:`tiny_mbconv`: seven MobileNetV2-style blocks (widths 16-64); chapter 2's experiments.
- :func:`proxylessnas_tiny`: ProxylessNAS-Mobile's block pattern reduced: the first two blocks
  of every stage (12 blocks, with their kernel sizes and expand ratios), a reduced width, the
  stride of the 192-channel stage removed and a narrower final conv; the backbone the book
  pretrains and ships (:mod:`ondevice.pretrained`). (With all 22 blocks, GroupNorm + weight
  standardization at this width did not train in our CPU budget: the loss stayed at chance for
  10 epochs with Adam at 1e-3 and 3e-3; two blocks per stage train.)
"""

from __future__ import annotations

from torch import nn

from ..blocks import ConvNet, ConvNormAct, InvertedResidual
from .proxylessnas import STAGES, proxylessnas_mobile

BLOCKS = [  # in, out, kernel, stride, expand ratio
    (16, 16, 3, 1, 1), (16, 24, 3, 2, 4), (24, 24, 3, 1, 4), (24, 40, 5, 2, 4),
    (40, 40, 5, 1, 4), (40, 64, 3, 2, 4), (64, 64, 3, 1, 4),
]


def tiny_mbconv(num_classes: int = 10) -> ConvNet:
    """3x3 s2 stem -> 16, seven inverted residual blocks, 1x1 conv -> 256, Linear (BatchNorm;
    ``to_groupnorm`` converts it like the zoo's models)."""
    blocks = [InvertedResidual(i, o, k, s, t) for i, o, k, s, t in BLOCKS]
    return ConvNet(ConvNormAct(3, 16, 3, 2), blocks, ConvNormAct(64, 256, 1),
                   nn.Sequential(nn.Linear(256, num_classes)))


# ProxylessNAS-Mobile's stages, two blocks each, the 192-channel stage at stride 1: stride 16.
TINY_STAGES = [(c, 1 if c == 192 else s, blocks[:2]) for c, s, blocks in STAGES]


def proxylessnas_tiny(num_classes: int = 24, width_mult: float = 0.35, last_channels: int = 256) -> ConvNet:
    """ProxylessNAS-Mobile's stages with two blocks each (12 blocks) at ``width_mult``, total
    stride 16, 1x1 conv -> ``last_channels``, Linear (BatchNorm, ReLU6; ``to_groupnorm``
    converts it)."""
    return proxylessnas_mobile(width_mult, num_classes, stages=TINY_STAGES, last_channels=last_channels)
