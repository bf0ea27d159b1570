"""MobileNetV2 (Sandler et al., CVPR 2018, Table 2), with torchvision's channel rounding.

1000-class heads: 3,504,872 parameters at width 1.0 (torchvision's count), 6,108,776 at width 1.4
(TinyTL's Table 3 backbone; the same rounding; timm's ``mobilenetv2_140`` reports 6.1 M).
"""

from __future__ import annotations

from torch import nn

from ..blocks import ConvNet, ConvNormAct, InvertedResidual, make_divisible

# Table 2 of the paper: (expand ratio t, output channels c, repeats n, first stride s).
SETTINGS = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


def mobilenet_v2(width_mult: float = 1.0, num_classes: int = 1000, dropout: float = 0.2) -> ConvNet:
    """MobileNetV2: 3x3 s2 stem, 17 inverted residual blocks (ReLU6), 1x1 conv -> 1280, Linear.

    Channels are ``make_divisible(c * width_mult, 8)``; the last conv keeps 1280 channels for
    ``width_mult <= 1`` and widens with it above 1 (as in the reference implementation).
    """
    in_ch = make_divisible(32 * width_mult)
    blocks = []
    for t, c, n, s in SETTINGS:
        out_ch = make_divisible(c * width_mult)
        for i in range(n):
            blocks.append(InvertedResidual(in_ch, out_ch, 3, s if i == 0 else 1, t))
            in_ch = out_ch
    last = make_divisible(1280 * max(1.0, width_mult))
    return ConvNet(
        stem=ConvNormAct(3, make_divisible(32 * width_mult), 3, 2),
        blocks=blocks,
        final_conv=ConvNormAct(in_ch, last, 1),
        classifier=nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes)),
    )


def mobilenet_v2_140(num_classes: int = 1000, dropout: float = 0.2) -> ConvNet:
    """MobileNetV2 at width 1.4 (last conv 1792 channels), a backbone of TinyTL's Table 3."""
    return mobilenet_v2(1.4, num_classes, dropout)
