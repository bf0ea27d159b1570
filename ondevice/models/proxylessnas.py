"""ProxylessNAS-Mobile (Cai, Zhu, Han, ICLR 2019, Fig. 4 "GPU/CPU/Mobile" architectures).

The searched mobile network used as TinyTL's backbone (chapter 2, ``book/02_tinytl``): 4,080,512 parameters with
a 1000-class head, ReLU6 everywhere.

How the exact count is reached (all other choices give a different total):

- every conv is bias-free and followed by BatchNorm (stem, MBConv convs, feature mix layer);
- the first block (32 -> 16, k3, expand 1) has *no* expansion conv: depthwise 3x3 on 32 channels
  then a 1x1 projection (an expand conv 32 -> 32 would add 32*32 + 64 = 1,088 parameters);
- the expanded width is ``round(in * expand)`` with no rounding to a multiple of 8 (every width
  in this table happens to be a multiple of 8 anyway);
- "skip" blocks are identities with no parameters;
- the feature mix layer is 1x1 conv 320 -> 1280 (no bias) + BN + ReLU6;
- the classifier is a single ``Linear(1280, classes)`` *with* bias (1,281,000 parameters).
"""

from __future__ import annotations

from torch import nn

from ..blocks import ConvNet, ConvNormAct, InvertedResidual, SkipBlock, make_divisible

SKIP = None
# (output channels, first stride, per-block (kernel, expand ratio) or SKIP)
STAGES = [
    (16, 1, [(3, 1)]),
    (32, 2, [(5, 3), (3, 3), SKIP, SKIP]),
    (40, 2, [(7, 3), (3, 3), (5, 3), (5, 3)]),
    (80, 2, [(7, 6), (5, 3), (5, 3), (5, 3)]),
    (96, 1, [(5, 6), (5, 3), (5, 3), (5, 3)]),
    (192, 2, [(7, 6), (7, 6), (7, 3), (7, 3)]),
    (320, 1, [(7, 6)]),
]


def proxylessnas_mobile(width_mult: float = 1.0, num_classes: int = 1000, *, stages=STAGES,
                        last_channels: int | None = None) -> ConvNet:
    """ProxylessNAS-Mobile: 3x3 s2 stem -> 32, 22 blocks (2 of them skips), 1x1 conv -> 1280.

    ``stages`` (default :data:`STAGES`) and ``last_channels`` (default 1280, or 1280 x width for
    widths above 1) let smaller variants keep the same block pattern (``models.tiny``).
    """
    in_ch = make_divisible(32 * width_mult)
    stem = ConvNormAct(3, in_ch, 3, 2)
    blocks = []
    for channels, first_stride, choices in stages:
        out_ch = make_divisible(channels * width_mult)
        for i, choice in enumerate(choices):
            if choice is SKIP:
                assert in_ch == out_ch and i > 0, "a skip block must be shape-preserving"
                blocks.append(SkipBlock(in_ch))
                continue
            kernel, expand = choice
            blocks.append(InvertedResidual(in_ch, out_ch, kernel, first_stride if i == 0 else 1,
                                           expand))
            in_ch = out_ch
    last = last_channels or (make_divisible(1280 * width_mult) if width_mult > 1.0 else 1280)
    return ConvNet(stem, blocks, ConvNormAct(in_ch, last, 1),
                   nn.Sequential(nn.Linear(last, num_classes)))
