"""EfficientNet-B0 (Tan and Le, ICML 2019, Table 1), as in torchvision (``efficientnet_b0``).

MBConv blocks: inverted residual blocks with SiLU, squeeze-excitation (a quarter of the block's
input channels, SiLU inside, a sigmoid gate) and stochastic depth on the residual branch, its
probability rising linearly from 0 to 0.2 over the 16 blocks. 1000-class head: 5,288,548
parameters (torchvision's count).
"""

from __future__ import annotations

import torch
from torch import nn

from ..blocks import ConvNet, ConvNormAct, InvertedResidual, SqueezeExcite, make_divisible

# (expand ratio, kernel, first stride, output channels, repeats): Table 1's stages 2-8
STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
          (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]


class StochasticDepth(nn.Module):
    """Drop the residual branch of a whole sample with probability ``p`` in training (Huang et
    al., ECCV 2016), scaling the survivors by 1 / (1 - p); the identity in eval mode."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = 1.0 - self.p
        noise = torch.empty([x.shape[0]] + [1] * (x.dim() - 1), dtype=x.dtype, device=x.device)
        return x * noise.bernoulli_(keep).div_(keep)


class MBConv(InvertedResidual):
    """EfficientNet's block: an :class:`~ondevice.blocks.InvertedResidual` with SiLU, a
    sigmoid-gated squeeze-excite and stochastic depth (``drop_path``) before the shortcut add."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, expand_ratio: float,
                 drop_probability: float):
        mid = make_divisible(in_channels * expand_ratio)
        squeeze = max(1, in_channels // 4)
        super().__init__(in_channels, out_channels, kernel_size, stride, mid_channels=mid,
                         activation=nn.SiLU, se_channels=squeeze)
        self.se = SqueezeExcite(mid, squeeze, activation=nn.SiLU, gate=nn.Sigmoid)
        self.drop_path = StochasticDepth(drop_probability)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.main_branch(x)
        if self.lite is not None:  # TinyTL: shortcut(x) + MBConv(x) + LiteResidual(x)
            out = out + self.lite(x, out.shape[-2:])
        return self.drop_path(out) + x if self.use_residual else out


def efficientnet_b0(num_classes: int = 1000, dropout: float = 0.2, drop_path: float = 0.2) -> ConvNet:
    """EfficientNet-B0: 3x3 s2 stem -> 32, 16 MBConv blocks (:data:`STAGES`), 1x1 conv -> 1280
    (SiLU), Dropout + Linear."""
    total = sum(n for *_, n in STAGES)
    blocks, in_ch = [], 32
    for expand, kernel, stride, out_ch, repeats in STAGES:
        for i in range(repeats):
            blocks.append(MBConv(in_ch, out_ch, kernel, stride if i == 0 else 1, expand,
                                 drop_path * len(blocks) / total))
            in_ch = out_ch
    return ConvNet(ConvNormAct(3, 32, 3, 2, activation=nn.SiLU), blocks,
                   ConvNormAct(in_ch, 4 * in_ch, 1, activation=nn.SiLU),
                   nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * in_ch, num_classes)))
