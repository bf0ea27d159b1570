"""A tiny inverted-residual network for experiments that must train on a CPU in seconds.

Seven MobileNetV2-style blocks (widths 16-64) with total stride 16, so that at 32 px the last
feature map is 2x2: the smallest on which TinyTL's lite residual branches (2x2 pooling) run.
The zoo's networks have stride 32 and need 64 px. Used by chapter 2's training experiments.
"""

from __future__ import annotations

from torch import nn

from ..blocks import ConvNet, ConvNormAct, InvertedResidual

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
