"""ResNet-50 (He et al., CVPR 2016, Table 1), torchvision's variant ("ResNet v1.5").

Bottleneck blocks put the stride on the 3x3 conv. 1000-class head: 25,557,032 parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from ..blocks import ConvNet, ConvNormAct


class Bottleneck(nn.Module):
    """1x1 ``conv1`` -> 3x3 ``conv2`` (stride) -> 1x1 ``conv3`` (4x width, no act), plus the
    shortcut (``downsample`` = 1x1 conv + norm when the shape changes, else identity), then ReLU.
    """

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1):
        super().__init__()
        out_channels = width * self.expansion
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.use_residual = True  # identity or projection shortcut, always added
        self.conv1 = ConvNormAct(in_channels, width, 1, activation=nn.ReLU)
        self.conv2 = ConvNormAct(width, width, 3, stride, activation=nn.ReLU)
        self.conv3 = ConvNormAct(width, out_channels, 1, activation=None)
        self.downsample = (None if stride == 1 and in_channels == out_channels
                           else ConvNormAct(in_channels, out_channels, 1, stride, activation=None))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.act(self.conv3(self.conv2(self.conv1(x))) + shortcut)


def resnet50(num_classes: int = 1000) -> ConvNet:
    """ResNet-50: 7x7 s2 stem + 3x3 s2 max pool, 3-4-6-3 bottlenecks (widths 64..512), Linear.

    The 16 bottlenecks form one flat ``blocks`` sequence (torchvision groups them in layer1..4;
    the parameters are the same).
    """
    stem = nn.Sequential(ConvNormAct(3, 64, 7, 2, activation=nn.ReLU),
                         nn.MaxPool2d(3, stride=2, padding=1))
    blocks, in_ch = [], 64
    for width, repeats, stride in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]:
        for i in range(repeats):
            blocks.append(Bottleneck(in_ch, width, stride if i == 0 else 1))
            in_ch = width * Bottleneck.expansion
    return ConvNet(stem, blocks, None, nn.Sequential(nn.Linear(in_ch, num_classes)))
