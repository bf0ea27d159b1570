"""The model zoo: published parameter counts, shapes, the GroupNorm swap, block structure."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ondevice.blocks import ConvNormAct, InvertedResidual, SkipBlock, make_divisible
from ondevice.models import ZOO, WSConv2d, build, num_groups, to_groupnorm

PUBLISHED = {  # 1000-class heads, as each reference implementation reports them:
    "mobilenet_v2": 3_504_872,  # torchvision mobilenet_v2
    "proxylessnas_mobile": 4_080_512,  # the ProxylessNAS release
    "mobilenet_v3_large": 5_483_032,  # torchvision mobilenet_v3_large
    "mobilenet_v3_small": 2_542_856,  # torchvision mobilenet_v3_small
    "resnet50": 25_557_032,  # torchvision resnet50
    "resnet18": 11_689_512,  # torchvision resnet18
    "inception_v3": 27_161_264,  # torchvision inception_v3, auxiliary classifier counted (aux_logits=True)
    "efficientnet_b0": 5_288_548,  # torchvision efficientnet_b0
    "mnasnet1_0": 4_383_312,  # torchvision mnasnet1_0
    # timm's mobilenetv2_140 reports 6.1 M; the exact count is torchvision's MobileNetV2 rules
    # (make_divisible, last conv 1280 x 1.4) at width 1.4, which our mobilenet_v2 matches at 1.0
    "mobilenet_v2_140": 6_108_776,
}
INCEPTION_WITHOUT_AUX = 23_834_568  # torchvision inception_v3(aux_logits=False)
SIZE = {"inception_v3": 75}  # the smallest input Inception-V3 takes (torchvision's min_size); others 64
MOBILE = ["mobilenet_v2", "proxylessnas_mobile", "mobilenet_v3_large", "mobilenet_v3_small"]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def on_meta(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return build(name, **kwargs)


def test_zoo_names():
    assert set(ZOO) == set(PUBLISHED)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_parameter_count(name):
    assert n_params(on_meta(name)) == PUBLISHED[name]


def test_inception_without_its_auxiliary_classifier():
    assert n_params(on_meta("inception_v3", aux_logits=False)) == INCEPTION_WITHOUT_AUX


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_num_classes_changes_only_the_heads(name):
    model = on_meta(name, num_classes=10)
    heads = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == 10]
    assert model.last_linear in heads  # Inception-V3 has a second head, its auxiliary classifier
    assert n_params(model) == PUBLISHED[name] - sum(990 * (h.in_features + 1) for h in heads)


@pytest.mark.parametrize("name", ["resnet18", "inception_v3", "efficientnet_b0", "mnasnet1_0", "mobilenet_v2_140"])
def test_new_backbones_run_and_train_their_output_layer(name):
    from ondevice import methods

    torch.manual_seed(0)
    model = build(name, num_classes=7).eval()
    size = SIZE.get(name, 64)
    with torch.no_grad():
        y = model(torch.randn(1, 3, size, size + 3))
    assert y.shape == (1, 7) and torch.isfinite(y).all()
    assert methods.output_layer(model) is model.last_linear  # FT-Last trains the classifier


def test_inception_returns_its_auxiliary_logits_in_training():
    model = on_meta("inception_v3", num_classes=5).train()
    logits, aux = model(torch.empty(2, 3, 299, 299, device="meta"))  # batch 2: BatchNorm on a 1 x 1 map
    assert logits.shape == aux.shape == (2, 5)
    assert model.eval()(torch.empty(1, 3, 75, 75, device="meta")).shape == (1, 5)


@pytest.mark.parametrize("name", MOBILE)
def test_forward_shape_small_resolution(name):
    torch.manual_seed(0)
    model = build(name, num_classes=7).eval()
    with torch.no_grad():
        y = model(torch.randn(1, 3, 64, 64))
    assert y.shape == (1, 7) and torch.isfinite(y).all()


def test_resnet50_forward_shape_on_meta():
    y = on_meta("resnet50", num_classes=5)(torch.empty(1, 3, 224, 224, device="meta"))
    assert y.shape == (1, 5)


@pytest.mark.parametrize("name", MOBILE)
def test_width_mult(name):
    narrow, wide = on_meta(name, width_mult=0.5), on_meta(name, width_mult=1.4)
    assert n_params(narrow) < PUBLISHED[name] < n_params(wide)
    y = narrow(torch.empty(2, 3, 64, 64, device="meta"))
    assert y.shape == (2, 1000)
    assert narrow.stem.conv.out_channels == make_divisible((16 if "v3" in name else 32) * 0.5)
    for block in narrow.blocks:  # channel rounding keeps every width a multiple of 8
        assert block.out_channels % 8 == 0


def test_make_divisible():
    assert make_divisible(32 * 0.35) == 16
    assert make_divisible(1280 * 1.4) == 1792
    assert make_divisible(20) == 24  # rounds half up
    assert make_divisible(11) == 16  # 8 would lose more than 10 %


def test_build_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as info:
        build("mobilenet_v4")
    for name in ZOO:
        assert name in str(info.value)


def test_proxylessnas_block_structure():
    model = on_meta("proxylessnas_mobile")
    blocks = list(model.blocks)
    assert len(blocks) == 1 + 4 + 4 + 4 + 4 + 4 + 1 == 22
    skips = [i for i, b in enumerate(blocks) if isinstance(b, SkipBlock)]
    assert skips == [3, 4]
    assert all(n_params(blocks[i]) == 0 for i in skips)
    first = blocks[0]
    assert (first.in_channels, first.out_channels, first.kernel_size) == (32, 16, 3)
    assert first.expand is None and not first.use_residual
    residual = [b.use_residual for b in blocks]
    # A stage's first block changes width or stride (no residual), the others are residual.
    expected = [False] + [False, True, True, True] + [False, True, True, True] * 2 \
        + [False, True, True, True] * 2 + [False]
    assert residual == expected
    outs = [b.out_channels for b in blocks]
    assert outs == [16] + [32] * 4 + [40] * 4 + [80] * 4 + [96] * 4 + [192] * 4 + [320]
    kernels = [b.kernel_size for b in blocks if not isinstance(b, SkipBlock)]
    assert kernels == [3, 5, 3, 7, 3, 5, 5, 7, 5, 5, 5, 5, 5, 5, 5, 7, 7, 7, 7, 7]
    assert [b.stride for b in blocks].count(2) == 4
    assert model.final_conv.conv.out_channels == 1280


def test_inverted_residual_structure():
    block = InvertedResidual(16, 16, 5, 1, mid_channels=72, activation=nn.Hardswish,
                             se_channels=24)
    assert block.use_residual and block.expand_ratio == 72 / 16
    for unit in (block.expand, block.depthwise, block.project):
        assert isinstance(unit, ConvNormAct)
    assert block.depthwise.conv.groups == 72 and block.depthwise.conv.kernel_size == (5, 5)
    assert isinstance(block.project.act, nn.Identity)
    assert block.se.fc1.out_channels == 24 and block.se.fc1.bias is not None
    n1, n2, n3 = block.norm_layers()
    assert (n1, n2, n3) == (block.expand.norm, block.depthwise.norm, block.project.norm)
    x = torch.randn(2, 16, 8, 8)
    block.eval()
    assert torch.allclose(block(x), block.main_branch(x) + x)


def test_to_groupnorm_swaps_everything():
    torch.manual_seed(0)
    model = build("mobilenet_v3_small", num_classes=10)
    before = n_params(model)
    first_norm_weight = model.blocks[1].expand.norm.weight
    assert to_groupnorm(model) is model
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.bias is None:
            assert isinstance(m, WSConv2d)
        if isinstance(m, nn.GroupNorm):
            assert m.num_groups == m.num_channels // 8 and m.eps == 1e-5 and m.affine
    assert n_params(model) == before
    assert model.blocks[1].expand.norm.weight is first_norm_weight  # values carry over
    with torch.no_grad():
        y = model(torch.randn(2, 3, 64, 64))
    assert y.shape == (2, 10) and torch.isfinite(y).all()


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_to_groupnorm_on_meta(name):
    model = to_groupnorm(on_meta(name)).eval()
    assert n_params(model) == PUBLISHED[name]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(p.is_meta for p in model.parameters())
    size = SIZE.get(name, 64)
    assert model(torch.empty(1, 3, size, size, device="meta")).shape == (1, 1000)


def test_to_groupnorm_without_weight_standardization():
    model = to_groupnorm(build("proxylessnas_mobile"), weight_standardization=False)
    assert not any(isinstance(m, WSConv2d) for m in model.modules())
    assert sum(isinstance(m, nn.GroupNorm) for m in model.modules()) > 0


def test_weight_standardization_by_hand():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 3, 3, padding=1, bias=False)
    ws = WSConv2d.from_conv(conv)
    assert ws.weight is conv.weight
    w = conv.weight.detach().reshape(3, -1)
    by_hand = torch.empty_like(w)
    for o in range(3):
        row = w[o]
        mean = row.sum() / row.numel()
        var = ((row - mean) ** 2).sum() / row.numel()
        by_hand[o] = (row - mean) / (var + 1e-5) ** 0.5
    by_hand = by_hand.reshape_as(conv.weight)
    assert torch.allclose(ws.standardized_weight(), by_hand, atol=1e-6)
    x = torch.randn(2, 4, 5, 5)
    assert torch.allclose(ws(x), nn.functional.conv2d(x, by_hand, padding=1), atol=1e-5)


def test_weight_standardization_grouped_conv():
    conv = nn.Conv2d(8, 8, 3, groups=8, bias=False)  # depthwise: stats over (1, 3, 3)
    w = WSConv2d.from_conv(conv).standardized_weight()
    assert torch.allclose(w.mean(dim=(1, 2, 3)), torch.zeros(8), atol=1e-6)
    assert torch.allclose(w.var(dim=(1, 2, 3), unbiased=False), torch.ones(8), atol=1e-3)


def test_num_groups_fallback():
    assert num_groups(64) == 8
    assert num_groups(1152) == 144
    assert num_groups(36) == 4  # 36 // 8 = 4 divides 36
    assert num_groups(44) == 4  # 44 // 8 = 5 does not divide 44: largest divisor <= 5 is 4
    assert num_groups(7) == 1
    gn_model = to_groupnorm(nn.Sequential(nn.Conv2d(3, 44, 1, bias=False), nn.BatchNorm2d(44)))
    assert gn_model[1].num_groups == 4


def test_reset_classifier():
    model = on_meta("proxylessnas_mobile")
    model.reset_classifier(102)
    assert model.last_linear.out_features == 102 and model.last_linear.weight.is_meta


def test_tiny_mbconv_runs_lite_residuals_at_32_px():
    from ondevice.lite_residual import add_lite_residuals
    from ondevice.models import tiny_mbconv

    model = add_lite_residuals(to_groupnorm(tiny_mbconv(num_classes=7)))
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)  # total stride 16: last map 2x2
    assert sum(isinstance(b, InvertedResidual) for b in model.blocks) == 7
