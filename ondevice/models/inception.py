"""Inception-V3 (Szegedy et al., CVPR 2016, Table 1 and Figs. 5-7), as in torchvision.

Every conv is a :class:`BasicConv2d` (bias-free conv, BatchNorm with eps 0.001, in-place ReLU
called as a function, as torchvision writes it). The stem takes 299 px to 35 x 35; three
``InceptionA`` blocks (Fig. 5), a grid reduction, four ``InceptionC`` blocks (Fig. 6, the 7x7
factorised into 1x7 and 7x1), a grid reduction and two ``InceptionE`` blocks (Fig. 7) follow,
then global pooling, dropout and the classifier. Inputs must be at least 75 x 75.

The auxiliary classifier (``aux_logits=True``, the default as in torchvision) sits on the 17 x 17
grid and runs only in training mode, where the model returns ``(logits, aux_logits)``. With it,
a 1000-class head has 27,161,264 parameters (torchvision's count); without, 23,834,568.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..blocks import ConvNet, init_weights

AUX_AFTER = 7  # the auxiliary classifier reads the output of blocks[7] (Mixed_6e, 17 x 17)


class BasicConv2d(nn.Module):
    """conv (no bias) -> BatchNorm (eps 0.001) -> ReLU in place (``F.relu(..., inplace=True)``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False)
        self.norm = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)), inplace=True)


def _factorised(channels: list[int], kernels: list[tuple[int, int]]) -> nn.Sequential:
    """A chain of convs ``channels[0] -> channels[1] -> ...``; each kernel padded to keep the size."""
    return nn.Sequential(*[BasicConv2d(i, o, k, padding=(k[0] // 2, k[1] // 2))
                           for i, o, k in zip(channels, channels[1:], kernels)])


class InceptionA(nn.Module):
    """Fig. 5: 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | 3x3 avg pool -> 1x1, concatenated."""

    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, 1)
        self.branch5x5 = _factorised([in_channels, 48, 64], [(1, 1), (5, 5)])
        self.branch3x3dbl = _factorised([in_channels, 64, 96, 96], [(1, 1), (3, 3), (3, 3)])
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1))
        return torch.cat([self.branch1x1(x), self.branch5x5(x), self.branch3x3dbl(x), pool], 1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17: 3x3 s2 | 1x1 -> 3x3 -> 3x3 s2 | 3x3 s2 max pool."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2)
        self.branch3x3dbl = nn.Sequential(BasicConv2d(in_channels, 64, 1), BasicConv2d(64, 96, 3, padding=1),
                                          BasicConv2d(96, 96, 3, stride=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch3x3(x), self.branch3x3dbl(x), F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    """Fig. 6: 1x1 | 1x1 -> 1x7 -> 7x1 | 1x1 -> (7x1 -> 1x7) twice | avg pool -> 1x1."""

    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7 = _factorised([in_channels, c, c, 192], [(1, 1), (1, 7), (7, 1)])
        self.branch7x7dbl = _factorised([in_channels, c, c, c, c, 192], [(1, 1), (7, 1), (1, 7), (7, 1), (1, 7)])
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1))
        return torch.cat([self.branch1x1(x), self.branch7x7(x), self.branch7x7dbl(x), pool], 1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8: 1x1 -> 3x3 s2 | 1x1 -> 1x7 -> 7x1 -> 3x3 s2 | 3x3 s2 max pool."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = nn.Sequential(BasicConv2d(in_channels, 192, 1), BasicConv2d(192, 320, 3, stride=2))
        self.branch7x7x3 = nn.Sequential(_factorised([in_channels, 192, 192, 192], [(1, 1), (1, 7), (7, 1)]),
                                         BasicConv2d(192, 192, 3, stride=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch3x3(x), self.branch7x7x3(x), F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    """Fig. 7: 1x1 | 1x1 -> (1x3 and 3x1) | 1x1 -> 3x3 -> (1x3 and 3x1) | avg pool -> 1x1."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1)
        self.branch3x3_2a, self.branch3x3_2b = BasicConv2d(384, 384, (1, 3), padding=(0, 1)), \
            BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _factorised([in_channels, 448, 384], [(1, 1), (3, 3)])
        self.branch3x3dbl_3a, self.branch3x3dbl_3b = BasicConv2d(384, 384, (1, 3), padding=(0, 1)), \
            BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3_1(x)
        b = self.branch3x3dbl_1(x)
        pool = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1))
        return torch.cat([self.branch1x1(x), torch.cat([self.branch3x3_2a(a), self.branch3x3_2b(a)], 1),
                          torch.cat([self.branch3x3dbl_3a(b), self.branch3x3dbl_3b(b)], 1), pool], 1)


class InceptionAux(nn.Module):
    """The auxiliary classifier: 5x5 s3 avg pool -> 1x1 (128) -> 5x5 (768) -> global pool -> Linear."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.conv0, self.conv1 = BasicConv2d(in_channels, 128, 1), BasicConv2d(128, 768, 5)
        self.fc = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.conv0(F.avg_pool2d(x, 5, stride=3)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class InceptionV3(ConvNet):
    """A :class:`~ondevice.blocks.ConvNet` (stem, 11 Inception blocks, no final conv, pooling,
    Dropout + Linear) with the auxiliary classifier ``aux`` on ``blocks[AUX_AFTER]``."""

    def __init__(self, num_classes: int = 1000, aux_logits: bool = True, dropout: float = 0.5):
        stem = nn.Sequential(BasicConv2d(3, 32, 3, stride=2), BasicConv2d(32, 32, 3), BasicConv2d(32, 64, 3, padding=1),
                             nn.MaxPool2d(3, stride=2), BasicConv2d(64, 80, 1), BasicConv2d(80, 192, 3),
                             nn.MaxPool2d(3, stride=2))
        blocks = [InceptionA(192, 32), InceptionA(256, 64), InceptionA(288, 64), InceptionB(288),
                  InceptionC(768, 128), InceptionC(768, 160), InceptionC(768, 160), InceptionC(768, 192),
                  InceptionD(768), InceptionE(1280), InceptionE(2048)]
        super().__init__(stem, blocks, None, nn.Sequential(nn.Dropout(dropout), nn.Linear(2048, num_classes)))
        classifier = self.classifier
        del self.classifier  # registered again after aux: the classifier stays the model's last Linear
        self.aux = InceptionAux(768, num_classes) if aux_logits else None
        self.classifier = classifier
        if self.aux is not None:
            init_weights(self.aux)

    def forward(self, x: torch.Tensor):
        if self.aux is None or not self.training:
            return super().forward(x)
        x = self.stem(x)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == AUX_AFTER:
                aux = self.aux(x)
        return self.classifier(torch.flatten(self.pool(x), 1)), aux


def inception_v3(num_classes: int = 1000, aux_logits: bool = True, dropout: float = 0.5) -> InceptionV3:
    """Inception-V3 (module docstring); ``aux_logits=False`` leaves out the auxiliary classifier."""
    return InceptionV3(num_classes, aux_logits, dropout)
