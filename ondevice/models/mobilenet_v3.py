"""MobileNetV3-Large and -Small (Howard et al., ICCV 2019, Tables 1 and 2), as in torchvision.

1000-class heads at width 1.0: Large 5,483,032 parameters, Small 2,542,856.
"""

from __future__ import annotations

from torch import nn

from ..blocks import ConvNet, ConvNormAct, InvertedResidual, make_divisible

RE, HS = nn.ReLU, nn.Hardswish
# (kernel, expanded channels, output channels, squeeze-excite, activation, stride)
LARGE = [
    (3, 16, 16, False, RE, 1),
    (3, 64, 24, False, RE, 2),
    (3, 72, 24, False, RE, 1),
    (5, 72, 40, True, RE, 2),
    (5, 120, 40, True, RE, 1),
    (5, 120, 40, True, RE, 1),
    (3, 240, 80, False, HS, 2),
    (3, 200, 80, False, HS, 1),
    (3, 184, 80, False, HS, 1),
    (3, 184, 80, False, HS, 1),
    (3, 480, 112, True, HS, 1),
    (3, 672, 112, True, HS, 1),
    (5, 672, 160, True, HS, 2),
    (5, 960, 160, True, HS, 1),
    (5, 960, 160, True, HS, 1),
]
SMALL = [
    (3, 16, 16, True, RE, 2),
    (3, 72, 24, False, RE, 2),
    (3, 88, 24, False, RE, 1),
    (5, 96, 40, True, HS, 2),
    (5, 240, 40, True, HS, 1),
    (5, 240, 40, True, HS, 1),
    (5, 120, 48, True, HS, 1),
    (5, 144, 48, True, HS, 1),
    (5, 288, 96, True, HS, 2),
    (5, 576, 96, True, HS, 1),
    (5, 576, 96, True, HS, 1),
]


def _mobilenet_v3(table, head_channels: int, width_mult: float, num_classes: int,
                  dropout: float) -> ConvNet:
    """Stem 3x3 s2 -> 16 (Hard-Swish), the table's blocks, 1x1 conv -> 6x last width (Hard-Swish),
    pool, then Linear -> Hard-Swish -> Dropout -> Linear. Widths are ``make_divisible(c * w, 8)``;
    SE squeezes to ``make_divisible(expanded // 4, 8)``."""
    def adjust(channels: int) -> int:
        return make_divisible(channels * width_mult)

    in_ch = adjust(16)
    stem = ConvNormAct(3, in_ch, 3, 2, activation=HS)
    blocks = []
    for kernel, expanded, out, use_se, act, stride in table:
        mid, out_ch = adjust(expanded), adjust(out)
        se = make_divisible(mid // 4) if use_se else None
        blocks.append(InvertedResidual(in_ch, out_ch, kernel, stride, mid_channels=mid,
                                       activation=act, se_channels=se))
        in_ch = out_ch
    last_conv = 6 * in_ch
    head = adjust(head_channels)
    classifier = nn.Sequential(nn.Linear(last_conv, head), nn.Hardswish(), nn.Dropout(dropout),
                               nn.Linear(head, num_classes))
    return ConvNet(stem, blocks, ConvNormAct(in_ch, last_conv, 1, activation=HS), classifier)


def mobilenet_v3_large(width_mult: float = 1.0, num_classes: int = 1000,
                       dropout: float = 0.2) -> ConvNet:
    """MobileNetV3-Large (paper Table 1): 15 blocks, head 960 -> 1280 -> classes."""
    return _mobilenet_v3(LARGE, 1280, width_mult, num_classes, dropout)


def mobilenet_v3_small(width_mult: float = 1.0, num_classes: int = 1000,
                       dropout: float = 0.2) -> ConvNet:
    """MobileNetV3-Small (paper Table 2): 11 blocks, head 576 -> 1024 -> classes."""
    return _mobilenet_v3(SMALL, 1024, width_mult, num_classes, dropout)
