"""ondevice.methods: exactly which parameters each method trains."""

import pytest
from torch import nn

from ondevice import methods
from ondevice.models import mobilenet_v3_small, proxylessnas_mobile, to_groupnorm


def trained(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def net():
    return to_groupnorm(proxylessnas_mobile(num_classes=10))


def test_ft_full_and_ft_last():
    model = methods.apply(net(), "ft_full")
    assert trained(model) == {n for n, _ in model.named_parameters()}
    assert trained(methods.apply(model, "ft_last")) == {"classifier.0.weight", "classifier.0.bias"}


def test_ft_norm_last_trains_scale_and_shift_of_every_norm():
    model = methods.apply(net(), "ft_norm_last")
    norms = {f"{m}.{p}" for m, mod in model.named_modules() if isinstance(mod, nn.GroupNorm)
             for p in ("weight", "bias")}
    assert trained(model) == norms | {"classifier.0.weight", "classifier.0.bias"}


def test_tinytl_b_trains_biases_only():
    model = methods.apply(mobilenet_v3_small(num_classes=10), "tinytl_b")
    names = trained(model)
    assert names - {"classifier.3.weight"} == {n for n, _ in model.named_parameters() if n.endswith("bias")}
    assert any(".se." in n for n in names)  # squeeze-excite convs have biases: they train


def test_tinytl_l_inserts_branches_and_trains_only_them_and_the_head():
    model = methods.apply(net(), "tinytl_l")
    names = trained(model)
    assert names and all(".lite." in n or n.startswith("classifier") for n in names)
    assert sum(".lite." in n for n in names) == 19 * 6  # 19 branches x (2 conv + 2x2 norm) params


def test_tinytl_lb_keeps_the_branch_final_shift_frozen():
    model = methods.apply(net(), "tinytl_lb")
    names = trained(model)
    assert not any(n.endswith("lite.final_norm.bias") for n in names)
    assert any(n.endswith("lite.final_norm.weight") for n in names)
    assert {n for n, _ in model.named_parameters() if n.endswith("bias") and ".lite." not in n} <= names


def test_unknown_method_lists_valid_ones():
    with pytest.raises(ValueError, match="valid methods: ft_full, ft_last, ft_norm_last, tinytl_b"):
        methods.apply(net(), "tinytl_x")
