"""MobileTL mode: what the blocks compute, what trains, what stays frozen, and what is kept."""

import copy

import pytest
import torch
from torch import nn

from ondevice import methods
from ondevice.blocks import (FrozenStatsBatchNorm2d, InvertedResidual, is_mobiletl,
                             to_mobiletl)
from ondevice.data import loaders
from ondevice.mask_activations import (MOBILETL_SURROGATE, MaskHardswish, MaskReLU, MaskReLU6)
from ondevice.memory import estimate, measure
from ondevice.models import (mobilenet_v2, mobilenet_v3_large, mobilenet_v3_small,
                             proxylessnas_mobile, resnet50, tiny_mbconv, to_groupnorm)
from ondevice.train import fit


def trained(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def warm_statistics(module, x):
    """Give every BatchNorm non-trivial running statistics (a few forward passes)."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    module.train()
    with torch.no_grad():
        for i in range(3):
            module(x * (1 + i) + i)


BLOCKS = {
    "v2": lambda: InvertedResidual(16, 16, 3, 1, 6),
    "v2 stride 2": lambda: InvertedResidual(16, 24, 3, 2, 6),
    "v3 hswish se": lambda: InvertedResidual(16, 16, 5, 1, mid_channels=40, activation=nn.Hardswish,
                                             se_channels=16),
    "expand 1": lambda: InvertedResidual(16, 8, 3, 1, 1, activation=nn.ReLU),
}


@pytest.mark.parametrize("kind", sorted(BLOCKS))
def test_converted_block_computes_the_eval_mode_block(kind):
    torch.manual_seed(0)
    block, x = BLOCKS[kind](), torch.randn(4, 16, 10, 10)
    warm_statistics(block, x)
    reference = copy.deepcopy(block).eval()
    converted = to_mobiletl(copy.deepcopy(block)).eval()
    assert is_mobiletl(converted) and not is_mobiletl(reference)
    assert torch.allclose(converted(x), reference(x), rtol=1e-5, atol=1e-5)
    norm1, norm2, norm3 = converted.norm_layers()
    assert all(isinstance(n, FrozenStatsBatchNorm2d) for n in (norm1, norm2) if n is not None)
    assert type(norm3) is nn.BatchNorm2d
    acts = {type(u.act) for u in (converted.expand, converted.depthwise) if u is not None}
    assert acts <= {MaskReLU, MaskReLU6, MaskHardswish} and len(acts) == 1


def test_block_trainable_set_shift_only_norms_1_and_2():
    block = to_mobiletl(BLOCKS["v3 hswish se"]().requires_grad_(False))
    frozen = {n for n, p in block.named_parameters() if not p.requires_grad}
    assert frozen == {"expand.norm.weight", "depthwise.norm.weight"}
    assert {"expand.norm.bias", "depthwise.norm.bias", "project.norm.weight", "se.fc1.weight"} <= trained(block)
    assert block.depthwise.act.surrogate == MOBILETL_SURROGATE


def test_frozen_statistics_norm_shares_and_never_updates_its_statistics():
    bn = nn.BatchNorm2d(6)
    warm_statistics(bn, torch.randn(8, 6, 4, 4))
    frozen = FrozenStatsBatchNorm2d.from_batchnorm(bn).train()
    assert frozen.weight is bn.weight and frozen.running_var is bn.running_var
    before = bn.running_mean.clone()
    x = torch.randn(8, 6, 4, 4) * 3 + 2
    y = frozen(x)
    assert torch.equal(bn.running_mean, before)
    assert torch.allclose(y, bn.eval()(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("gamma_trains", [False, True])
@pytest.mark.parametrize("x_needs_grad", [False, True])
def test_frozen_statistics_norm_keeps_only_what_its_rule_says(gamma_trains, x_needs_grad):
    norm = FrozenStatsBatchNorm2d(6)
    norm.weight.requires_grad_(gamma_trains)
    x = torch.randn(3, 6, 5, 5, requires_grad=x_needs_grad)
    got = measure(norm, x).saved_activations
    for profile in ("pytorch", "masked"):
        assert estimate(norm, x.shape, profile=profile, input_requires_grad=x_needs_grad).saved_activations == got
    # shift only: a per-channel vector at most, never the activation
    assert got == 6 * 4 * x_needs_grad + gamma_trains * (x.numel() * 4 + 6 * 4)


def test_mobiletl_trainable_set_on_mobilenet_v3_large():
    model = methods.apply(mobilenet_v3_large(num_classes=10), "mobiletl", k_blocks=5)
    names = [n for n, _ in model.named_parameters()]
    top = {n for n in names if n.split(".")[:2] in [["blocks", str(i)] for i in range(10, 15)]}
    frozen_norms = {n for n in top if n.endswith(("expand.norm.weight", "depthwise.norm.weight"))}
    expected = (top - frozen_norms) | {"final_conv.conv.weight", "final_conv.norm.bias"} | \
        {n for n in names if n.startswith("classifier.")}
    assert trained(model) == expected
    assert len(frozen_norms) == 10 and not any(n.startswith(("stem.", "blocks.9.")) for n in trained(model))
    assert isinstance(model.final_conv.act, MaskHardswish) and isinstance(model.classifier[1], nn.Hardswish)
    assert [is_mobiletl(b) for b in model.blocks] == [False] * 10 + [True] * 5


def test_k_blocks_zero_trains_the_head_only_and_skip_blocks_are_allowed():
    model = methods.apply(mobilenet_v2(num_classes=10), "mobiletl", k_blocks=0)
    assert {n.split(".")[0] for n in trained(model)} == {"final_conv", "classifier"}
    proxyless = methods.apply(proxylessnas_mobile(num_classes=10), "mobiletl", k_blocks=22)
    assert all(is_mobiletl(b) for b in proxyless.blocks if isinstance(b, InvertedResidual))


@pytest.mark.parametrize("k", [-1, 16, 2.0, True, "5"])
def test_bad_k_blocks_names_the_argument_and_the_range(k):
    with pytest.raises(ValueError, match=r"k_blocks must be an int from 0 to 15 \(the number of blocks"):
        methods.apply(mobilenet_v3_large(num_classes=10), "mobiletl", k_blocks=k)


def test_unsupported_networks_are_rejected_before_anything_changes():
    model = to_groupnorm(mobilenet_v2(num_classes=10))
    before = [type(m) for m in model.modules()]
    with pytest.raises(TypeError, match="BatchNorm2d norms"):
        methods.mobiletl(model, k_blocks=3)
    assert [type(m) for m in model.modules()] == before
    bn_model = mobilenet_v2(num_classes=10)
    with pytest.raises(ValueError, match="surrogate must be"):
        methods.mobiletl(bn_model, k_blocks=3, surrogate="sign")
    assert all(p.requires_grad for p in bn_model.parameters()) and not any(map(is_mobiletl, bn_model.blocks))
    with pytest.raises(TypeError, match="include Bottleneck"):
        methods.mobiletl(resnet50(num_classes=10), k_blocks=2)
    with pytest.raises(ValueError, match="valid methods: ft_full.*tinytl_lb, mobiletl"):
        methods.apply(model, "mobile_tl")


def test_frozen_statistics_stay_frozen_under_fit():
    torch.manual_seed(0)
    model = tiny_mbconv(num_classes=24)
    train, _ = loaders("source", n_train=4, n_test=1, resolution=32, batch_size=16)
    warm_statistics(model, next(iter(train))[0])
    methods.apply(model, "mobiletl", k_blocks=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, train, epochs=1, lr=1e-2, progress=False)
    after = model.state_dict()
    trainable = trained(model)
    moved = {k for k in before if k not in trainable and not torch.equal(before[k], after[k])}
    # only the fully trained norms (norm 3 of the two top blocks) update their statistics;
    # every other buffer and every frozen parameter is bit-identical
    assert moved == {f"blocks.{i}.project.norm.{s}" for i in (5, 6)
                     for s in ("running_mean", "running_var", "num_batches_tracked")}
    assert all(not torch.equal(before[k], after[k]) for k in trainable)


@pytest.mark.parametrize("build", [mobilenet_v2, mobilenet_v3_small, proxylessnas_mobile], ids=lambda b: b.__name__)
def test_pytorch_profile_equals_measurement_in_mobiletl_mode(build):
    torch.manual_seed(0)
    model = build(num_classes=10)
    for k in (1, 4):
        methods.apply(model, "mobiletl", k_blocks=k)
        for res in (32, 48):
            x = torch.randn(2, 3, res, res)
            got = measure(model, x).saved_activations
            assert estimate(model, x.shape).saved_activations == got, (k, res)
            if build is not mobilenet_v3_small:  # no squeeze-excite, no stock Hard-Swish: all ours
                assert estimate(model, x.shape, profile="masked").saved_activations == got, (k, res)


def test_paper_profile_charges_one_bit_for_every_mask_activation():
    block = to_mobiletl(BLOCKS["v3 hswish se"]())
    r = estimate(block, (2, 16, 8, 8), profile="paper")
    rows = {l.name: l.saved for l in r.layers}
    assert rows["expand.act"] == rows["depthwise.act"] == 2 * 40 * 8 * 8 / 8
    assert rows["expand.norm"] == rows["depthwise.norm"] == 0 and rows["project.norm"] == 2 * 16 * 64 * 4
