"""GroupNormAct and FrozenNormAct: drop-in equivalents of a norm layer followed by an activation."""

import pytest
import torch
from torch import nn

from kernels import FrozenNormAct, GroupNormAct
from kernels.norm_act import activation_module, activation_name


def grads(module, x, dy):
    x = x.clone().requires_grad_(True)
    params = [p for p in module.parameters() if p.requires_grad]
    y = module(x)
    return [y.detach(), *torch.autograd.grad(y, [x, *params], dy)]


@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_group_norm_act_from_modules_equals_the_pair_and_shares_parameters(activation):
    torch.manual_seed(0)
    gn, act = nn.GroupNorm(2, 8), activation_module(activation)
    nn.init.uniform_(gn.weight, 0.5, 1.5), nn.init.normal_(gn.bias)
    fused = GroupNormAct.from_modules(gn, act, backend="triton")
    assert fused.weight is gn.weight and fused.bias is gn.bias
    assert fused.state_dict().keys() == gn.state_dict().keys()
    x, dy = torch.randn(2, 8, 5, 3) * 2, torch.randn(2, 8, 5, 3)
    for a, b in zip(grads(fused, x, dy), grads(nn.Sequential(gn, act), x, dy)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_group_norm_act_without_affine_and_repr():
    m = GroupNormAct(4, 8, affine=False, activation="hardswish", surrogate=None)
    assert m.weight is None and list(m.parameters()) == []
    x = torch.randn(1, 8, 3, 3)
    torch.testing.assert_close(m(x), nn.functional.hardswish(nn.functional.group_norm(x, 4)))
    assert "activation='hardswish'" in repr(m) and "backward='exact'" in repr(m)


def test_frozen_norm_act_from_batchnorm_equals_eval_batchnorm_and_trains_the_shift():
    torch.manual_seed(1)
    bn = nn.BatchNorm2d(6)
    with torch.no_grad():
        bn.running_mean.normal_(), bn.running_var.uniform_(0.5, 2.0), bn.weight.uniform_(0.5, 1.5), bn.bias.normal_()
    bn.eval()
    fused = FrozenNormAct.from_batchnorm(bn, nn.ReLU6(), backend="triton")
    assert not bn.weight.requires_grad and fused.bias is bn.bias and fused.running_var is bn.running_var
    x, dy = torch.randn(2, 6, 4, 5) * 2, torch.randn(2, 6, 4, 5)
    for a, b in zip(grads(fused, x, dy), grads(nn.Sequential(bn, nn.ReLU6()), x, dy)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    fused.train()  # statistics stay frozen in training mode too
    torch.testing.assert_close(fused(x), nn.ReLU6()(bn(x)))


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="act must be one of nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, got GELU"):
        activation_name(nn.GELU())
    with pytest.raises(TypeError, match="norm must be an nn.GroupNorm"):
        GroupNormAct.from_modules(nn.BatchNorm2d(4), nn.ReLU())
    with pytest.raises(ValueError, match="num_groups=3 must divide num_channels=8"):
        GroupNormAct(3, 8)
    with pytest.raises(ValueError, match="bn must track running statistics"):
        FrozenNormAct.from_batchnorm(nn.BatchNorm2d(4, track_running_stats=False), nn.ReLU())
    frozen = FrozenNormAct(4)
    frozen.weight.requires_grad_(True)
    with pytest.raises(ValueError, match="FrozenNormAct's weight must not require a gradient"):
        frozen(torch.randn(1, 4, 2, 2))
    with pytest.raises(ValueError, match="surrogate=None"):
        FrozenNormAct(4, activation="hardswish", surrogate=None)
