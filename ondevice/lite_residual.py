"""Inserting TinyTL's lite residual branches into a network (chapter 2, "The lite residual module,
built in steps", ``book/02_tinytl/02_lite_residual``).

Every inverted residual block except the first gets a :class:`~ondevice.blocks.LiteResidual`
branch on its input. As in TinyTL's reference code, the branch's kernel size is chosen from a
nominal resolution that starts at 128 and is halved by each block's stride: the branch runs at
half of it, with kernel 5, or the largest odd kernel that fits (3 in the late stages).

The branch pools 2x2, so every feature map it sees must be at least 2x2: for the zoo's stride-32
networks the input resolution must be at least 64 px (a clear error says so otherwise).
"""

from __future__ import annotations

from torch import nn

from .blocks import ConvNet, InvertedResidual, LiteResidual, make_divisible


def add_lite_residuals(model: ConvNet, *, max_kernel_size: int = 5, expand: float = 1.0,
                       groups: int = 2, downsample: int = 2) -> ConvNet:
    """Give every inverted residual block but the first a lite residual branch, in place.

    The branch's final norm starts with gamma = 0, so the network's outputs do not change.
    Norms and convs follow the network: GroupNorm + weight standardization when the network
    already uses GroupNorm (``to_groupnorm``), BatchNorm otherwise. Returns ``model``.
    """
    if not isinstance(model, ConvNet):
        raise TypeError(f"model must be an ondevice ConvNet (the zoo's models), got {type(model).__name__}")
    blocks = [b for b in model.blocks if isinstance(b, InvertedResidual)]
    if not blocks:
        raise ValueError("model has no inverted residual blocks to add lite residuals to")
    if any(b.lite is not None for b in blocks):
        raise ValueError("model already has lite residual branches")
    groupnorm = any(isinstance(m, nn.GroupNorm) for m in model.modules())
    device = next(model.parameters()).device
    resolution = 128
    for block in blocks[1:]:
        branch_resolution = max(1, resolution // downsample)
        resolution //= block.stride
        kernel = max_kernel_size
        while kernel > 1 and branch_resolution < kernel:
            kernel -= 2
        block.lite = LiteResidual(block.in_channels, block.out_channels,
                                  make_divisible(block.in_channels * expand), kernel, block.stride,
                                  groups=groups, downsample=downsample,
                                  groupnorm=groupnorm).to(device)
    return model
