"""ResNet-18 and ResNet-50 (He et al., CVPR 2016, Table 1), torchvision's variant ("ResNet v1.5").

Bottleneck blocks put the stride on the 3x3 conv. 1000-class heads: ResNet-18 11,689,512
parameters, ResNet-50 25,557,032 (torchvision's counts).
"""

from __future__ import annotations

import torch
from torch import nn

from ..blocks import ConvNet, ConvNormAct


class ResidualBlock(nn.Module):
    """A block whose output is ``act(branch(x) + shortcut(x))``; ``downsample`` (1x1 conv + norm)
    is the shortcut when the shape changes, else the identity."""

    expansion = 1
    use_residual = True  # identity or projection shortcut, always added

    def _shortcut(self, in_channels: int, out_channels: int, stride: int) -> None:
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.downsample = (None if stride == 1 and in_channels == out_channels
                           else ConvNormAct(in_channels, out_channels, 1, stride, activation=None))
        self.act = nn.ReLU()

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.act(self.branch(x) + shortcut)


class Bottleneck(ResidualBlock):
    """1x1 ``conv1`` -> 3x3 ``conv2`` (stride) -> 1x1 ``conv3`` (4x width, no act), plus the
    shortcut, then ReLU."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1):
        super().__init__()
        self.conv1 = ConvNormAct(in_channels, width, 1, activation=nn.ReLU)
        self.conv2 = ConvNormAct(width, width, 3, stride, activation=nn.ReLU)
        self.conv3 = ConvNormAct(width, width * self.expansion, 1, activation=None)
        self._shortcut(in_channels, width * self.expansion, stride)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.conv2(self.conv1(x)))


class BasicBlock(ResidualBlock):
    """3x3 ``conv1`` (stride) -> 3x3 ``conv2`` (no act), plus the shortcut, then ReLU (ResNet-18/34)."""

    def __init__(self, in_channels: int, width: int, stride: int = 1):
        super().__init__()
        self.conv1 = ConvNormAct(in_channels, width, 3, stride, activation=nn.ReLU)
        self.conv2 = ConvNormAct(width, width, 3, activation=None)
        self._shortcut(in_channels, width, stride)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


def _resnet(block: type[ResidualBlock], repeats: list[int], num_classes: int) -> ConvNet:
    """7x7 s2 stem + 3x3 s2 max pool, four stages of ``block`` (widths 64..512), Linear. The
    blocks form one flat ``blocks`` sequence (torchvision groups them in layer1..4; the
    parameters are the same)."""
    stem = nn.Sequential(ConvNormAct(3, 64, 7, 2, activation=nn.ReLU),
                         nn.MaxPool2d(3, stride=2, padding=1))
    blocks, in_ch = [], 64
    for width, n, stride in zip((64, 128, 256, 512), repeats, (1, 2, 2, 2)):
        for i in range(n):
            blocks.append(block(in_ch, width, stride if i == 0 else 1))
            in_ch = width * block.expansion
    return ConvNet(stem, blocks, None, nn.Sequential(nn.Linear(in_ch, num_classes)))


def resnet18(num_classes: int = 1000) -> ConvNet:
    """ResNet-18: 2-2-2-2 basic blocks."""
    return _resnet(BasicBlock, [2, 2, 2, 2], num_classes)


def resnet50(num_classes: int = 1000) -> ConvNet:
    """ResNet-50: 3-4-6-3 bottlenecks."""
    return _resnet(Bottleneck, [3, 4, 6, 3], num_classes)
