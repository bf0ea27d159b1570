"""MnasNet-1.0 (Tan et al., CVPR 2019, Fig. 7 "MnasNet-A1"'s torchvision variant, ``mnasnet1_0``).

A 3x3 s2 stem, a depthwise-separable block (32 -> 16), six stacks of inverted residual blocks
with ReLU and no squeeze-excite, a 1x1 conv to 1280 and a Linear; 1000-class head: 4,383,312
parameters (torchvision's count).
"""

from __future__ import annotations

from torch import nn

from ..blocks import ConvNet, ConvNormAct, InvertedResidual

# (output channels, kernel, first stride, expand ratio, repeats), after the separable block
STACKS = [(24, 3, 2, 3, 3), (40, 5, 2, 3, 3), (80, 5, 2, 6, 3), (96, 3, 1, 6, 2), (192, 5, 2, 6, 4),
          (320, 3, 1, 6, 1)]


def mnasnet1_0(num_classes: int = 1000, dropout: float = 0.2) -> ConvNet:
    """MnasNet-1.0: the separable block is an inverted residual block of expand ratio 1 (no
    expansion conv; same layers and parameters as torchvision's), then :data:`STACKS`."""
    blocks, in_ch = [InvertedResidual(32, 16, 3, 1, 1, activation=nn.ReLU)], 16
    for out_ch, kernel, stride, expand, repeats in STACKS:
        for i in range(repeats):
            blocks.append(InvertedResidual(in_ch, out_ch, kernel, stride if i == 0 else 1, expand,
                                           activation=nn.ReLU))
            in_ch = out_ch
    return ConvNet(ConvNormAct(3, 32, 3, 2, activation=nn.ReLU), blocks,
                   ConvNormAct(in_ch, 1280, 1, activation=nn.ReLU),
                   nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes)))
