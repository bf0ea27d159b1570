"""TinyTL's lite residual branch and its insertion."""

import pytest
import torch
from torch import nn

from ondevice.blocks import InvertedResidual, LiteResidual
from ondevice.lite_residual import add_lite_residuals
from ondevice.models import WSConv2d, build, mobilenet_v2, proxylessnas_mobile, to_groupnorm


@pytest.mark.parametrize("name", ["proxylessnas_mobile", "mobilenet_v2"])
@pytest.mark.parametrize("groupnorm", [False, True])
def test_insertion_leaves_outputs_unchanged(name, groupnorm):
    torch.manual_seed(0)
    model = build(name, num_classes=10)
    if groupnorm:
        to_groupnorm(model)
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    before = model(x)
    add_lite_residuals(model)
    assert torch.equal(model(x), before)  # final norm's gamma is 0: the branch adds exactly 0


def test_every_block_but_the_first_gets_a_branch_with_the_reference_kernels():
    model = add_lite_residuals(proxylessnas_mobile())
    blocks = [b for b in model.blocks if isinstance(b, InvertedResidual)]
    assert blocks[0].lite is None
    kernels = [b.lite.conv1.kernel_size[0] for b in blocks[1:]]
    assert len(kernels) == 19  # 22 blocks - the first - 2 skip blocks
    assert kernels == [5] * 15 + [3] * 4  # 3 once the nominal half-resolution map is below 5
    for b in blocks[1:]:
        lite = b.lite
        assert (lite.conv1.in_channels, lite.conv2.out_channels) == (b.in_channels, b.out_channels)
        assert lite.conv1.groups == 2 and lite.conv1.stride[0] == b.stride
        assert lite.conv1.out_channels % 8 == 0
        assert torch.count_nonzero(lite.final_norm.weight) == 0


def test_branch_shapes_follow_the_block_at_odd_resolutions():
    model = add_lite_residuals(mobilenet_v2(num_classes=5))
    out = model(torch.randn(2, 3, 75, 75))  # odd sizes: upsampling restores the block's size
    assert out.shape == (2, 5)


def test_groupnorm_networks_get_groupnorm_branches():
    model = add_lite_residuals(to_groupnorm(proxylessnas_mobile()))
    lite = model.blocks[1].lite
    assert isinstance(lite.norm1, nn.GroupNorm) and isinstance(lite.conv1, WSConv2d)
    assert lite.norm1.num_groups == lite.norm1.num_channels // 8


def test_branch_alone_matches_its_definition():
    torch.manual_seed(0)
    lite = LiteResidual(16, 24, 16, 5, 2).eval()
    nn.init.ones_(lite.final_norm.weight)
    x = torch.randn(2, 16, 20, 20)
    ref = lite.final_norm(lite.conv2(torch.relu(lite.norm1(lite.conv1(nn.functional.avg_pool2d(x, 2))))))
    ref = nn.functional.interpolate(ref, size=(10, 10), mode="bilinear", align_corners=False)
    assert torch.allclose(lite(x, (10, 10)), ref)


def test_bad_models_are_rejected_clearly():
    with pytest.raises(TypeError, match="ConvNet"):
        add_lite_residuals(nn.Sequential(nn.Conv2d(3, 3, 1)))
    with pytest.raises(ValueError, match="no inverted residual blocks"):
        add_lite_residuals(build("resnet50"))
    model = add_lite_residuals(proxylessnas_mobile())
    with pytest.raises(ValueError, match="already has lite residual"):
        add_lite_residuals(model)


def test_too_small_feature_maps_get_a_clear_error():
    model = add_lite_residuals(mobilenet_v2(num_classes=5))
    with pytest.raises(ValueError, match="needs at least 2x2"):
        model(torch.randn(2, 3, 32, 32))
