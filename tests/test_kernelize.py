"""ondevice.kernelize on the book's networks: what the kernelized model keeps equals the masked
estimate to the byte, for every method, both backward modes and both frozen-weight storages;
exact mode changes no output and no gradient; the twins one by one."""

import copy
import functools
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ondevice import kernelize, kernelize_report, methods
from ondevice.lean import (BatchNormAct, FrozenConv2d, FrozenLinear, LeanAvgPool2d, LeanBatchNorm2d, LeanGroupNorm,
                           LeanMaxPool2d, LeanWSConv2d, dequantize, quantize)
from ondevice.lite_residual import add_lite_residuals
from ondevice.memory import estimate, measure
from ondevice.models import WSConv2d, mobilenet_v2, mobilenet_v3_large, proxylessnas_mobile, to_groupnorm

NETWORKS = {  # TinyTL's backbone as the paper profiles it, and MobileTL's two
    "ProxylessNAS GN+WS+lite": lambda: add_lite_residuals(to_groupnorm(proxylessnas_mobile(num_classes=10))),
    "MobileNetV2": lambda: mobilenet_v2(num_classes=10),
    "MobileNetV3-Large": lambda: mobilenet_v3_large(num_classes=10),
}
METHODS = {"FT-Full": ("ft_full", {}), "FT-Last": ("ft_last", {}), "FT-Norm+Last": ("ft_norm_last", {}),
           "TinyTL-B": ("tinytl_b", {}), "TinyTL-L": ("tinytl_l", {}), "TinyTL-L+B": ("tinytl_lb", {}),
           "MobileTL K=5": ("mobiletl", {"k_blocks": 5})}
CASES = [(n, m) for n in NETWORKS for m in METHODS if not (m.startswith("MobileTL") and "GN" in n)]
SHAPE = (2, 3, 64, 64)  # the smallest input the lite branches of a stride-32 network accept


@functools.lru_cache(maxsize=None)
def stock(network: str, method: str) -> nn.Module:
    torch.manual_seed(0)
    name, options = METHODS[method]
    model = methods.apply(NETWORKS[network](), name, **options)
    for m in model.modules():  # dropout off, so that two forward passes can be compared
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    return model


def stored_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


@pytest.mark.parametrize("network, method", CASES, ids=[f"{n}-{m}" for n, m in CASES])
def test_kept_bytes_and_parameters_equal_the_masked_estimate(network, method):
    model = stock(network, method)
    x = torch.randn(SHAPE)
    for backward in ("exact", "detached"):
        for bits in (32, 8):
            lean = kernelize(copy.deepcopy(model), backward=backward, frozen_bits=bits, strict=True)
            measured = measure(lean, x).saved_activations
            report = estimate(model, SHAPE, profile="masked", backward=backward, frozen_param_bits=bits)
            assert measured == report.saved_activations, (backward, bits)
            assert estimate(lean, SHAPE, profile="pytorch").saved_activations == measured  # the twins' rules
            assert report.params == stored_bytes(lean), (backward, bits)  # int8 + scales, as charged


@pytest.mark.parametrize("network, method", CASES, ids=[f"{n}-{m}" for n, m in CASES])
def test_exact_mode_changes_no_output_no_gradient_and_no_adam_step(network, method):
    model = copy.deepcopy(stock(network, method))
    lean = kernelize(copy.deepcopy(model), backward="exact")
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    results = []
    for net in (model, lean):
        trainable = [p for p in net.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(trainable, lr=1e-2)
        out = net(x)
        loss = out.square().mean()
        loss.backward()
        grads = [p.grad.clone() for p in trainable]
        optimizer.step()
        results.append((out.detach(), grads, [p.detach().clone() for p in trainable]))
    (out_a, grads_a, after_a), (out_b, grads_b, after_b) = results
    torch.testing.assert_close(out_b, out_a, rtol=1e-4, atol=1e-5)
    scale = max(g.abs().max() for g in grads_a)  # gradients compared on the scale of the largest
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4 * scale)
    # Adam's first step is lr * g / (|g| + eps): it turns the rounding noise of a gradient that is
    # mathematically zero (a shift that the next norm removes: ~1e-9 here) into a step of up to lr.
    # Compared where the gradient is above that noise, the steps agree to 0.1% of lr.
    for a, b, g in zip(after_a, after_b, grads_a):
        above_noise = g.abs() > 1e-5 * scale
        torch.testing.assert_close(b[above_noise], a[above_noise], rtol=0, atol=1e-5)


@pytest.mark.parametrize("network", NETWORKS)
def test_detached_mode_keeps_the_forward_and_the_gradients_above_every_detached_norm(network):
    model = stock(network, "TinyTL-B")
    lean = kernelize(copy.deepcopy(model), backward="detached")
    x = torch.randn(SHAPE)
    outputs = [net(x) for net in (model, lean)]
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-4, atol=1e-5)
    grads = [torch.autograd.grad(o.square().mean(), [p for p in net.parameters() if p.requires_grad])
             for o, net in zip(outputs, (model, lean))]
    torch.testing.assert_close(grads[1][-1], grads[0][-1])  # the classifier's bias: no norm above it
    assert any(not torch.allclose(a, b, rtol=1e-2, atol=1e-6) for a, b in zip(*grads))  # detached by design


def test_kernelize_is_in_place_shares_trainable_parameters_and_reports_every_leaf():
    model = stock("ProxylessNAS GN+WS+lite", "TinyTL-L+B")
    lean = copy.deepcopy(model)
    before = {n: p for n, p in lean.named_parameters() if p.requires_grad}
    assert kernelize(lean) is lean
    assert {n: p for n, p in lean.named_parameters() if p.requires_grad} == before  # the same objects
    report = kernelize_report(lean)
    assert report.unsupported == [] and report.backward == "exact" and report.frozen_bits == 32
    twins = {r.twin for r in report.rows}
    assert {"FrozenConv2d", "GroupNormAct", "LeanGroupNorm", "LeanWSConv2d", "LeanAvgPool2d"} <= twins
    assert "FrozenConv2d" in report.table()
    assert kernelize(lean) is lean and kernelize_report(lean).rows  # idempotent: twins are left as they are


def test_unsupported_layers_are_named_never_silently_left():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.Conv2d(4, 2, 1))
    with pytest.warns(UserWarning, match=r"left these layers stock .*1 \(GELU\)"):
        kernelize(copy.deepcopy(net))
    with pytest.raises(ValueError, match=r"no lean twin for: 1 \(GELU\)"):
        kernelize(net, strict=True)
    assert type(net[0]) is nn.Conv2d  # strict checks before it changes anything
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kernelize(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))  # nothing unsupported: no warning


@pytest.mark.parametrize("kwargs, error, match", [
    ({"backward": "approx"}, ValueError, r"backward must be one of \('exact', 'detached'\)"),
    ({"frozen_bits": 4}, ValueError, r"frozen_bits must be one of \(32, 8\)"),
    ({"backend": "cuda"}, ValueError, r"backend must be one of \('triton', 'torch'\) or None"),
])
def test_bad_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        kernelize(nn.Sequential(nn.Conv2d(3, 4, 3)), **kwargs)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        kernelize("resnet")
    with pytest.raises(ValueError, match="has not been kernelized"):
        kernelize_report(nn.Linear(2, 2))


def test_int8_weights_are_within_half_a_step_and_stored_as_int8_plus_scales():
    torch.manual_seed(0)
    w = torch.randn(16, 8, 3, 3) * torch.logspace(-2, 1, 16).view(16, 1, 1, 1)  # very different channels
    q, scale = quantize(w)
    assert q.dtype == torch.int8 and scale.shape == (16, 1, 1, 1) and int(q.abs().max()) == 127
    error = (dequantize(q, scale, torch.float32) - w).abs()
    assert bool((error <= scale / 2 + 1e-7 * w.abs()).all())  # round to nearest: at most half a step
    conv = nn.Conv2d(8, 16, 3, padding=1).requires_grad_(False)
    conv.weight.copy_(w)
    twin = FrozenConv2d.from_module(conv, bits=8)
    assert twin.weight.dtype == torch.int8 and twin.weight_scale.dtype == torch.float32
    assert stored_bytes(twin) == w.numel() + 4 * 16 + 4 * 16  # int8 weight, float32 scales and bias
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    y = twin(x)
    torch.testing.assert_close(y, F.conv2d(x, dequantize(q, scale, torch.float32), conv.bias, padding=1))
    assert measure(twin, x).saved_activations == 0


def test_frozen_layers_keep_nothing_and_give_stock_gradients():
    torch.manual_seed(0)
    for stock_layer, shape in ((nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2), (2, 4, 9, 9)),
                               (WSConv2d(4, 6, 3, padding=1, bias=False), (2, 4, 7, 7)),
                               (nn.Linear(5, 3), (4, 5))):
        stock_layer.weight.requires_grad_(False)
        twin = (FrozenLinear if isinstance(stock_layer, nn.Linear) else FrozenConv2d).from_module(stock_layer)
        x = torch.randn(shape, requires_grad=True)
        params = [p for p in stock_layer.parameters() if p.requires_grad]
        grads = [torch.autograd.grad(layer(x).square().sum(), [x, *params]) for layer in (stock_layer, twin)]
        for a, b in zip(*grads):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
        assert measure(twin, x).saved_activations == 0
        if not isinstance(stock_layer, nn.Linear):  # a stock frozen Linear keeps nothing either
            assert measure(stock_layer, x).saved_activations >= x.numel() * 4  # x (and a WS conv its W_hat)
    with pytest.raises(ValueError, match="must stay frozen"):
        twin.weight.requires_grad_(True)
        twin(torch.randn(4, 5))


def test_trainable_ws_conv_keeps_only_its_input_and_gives_the_stock_weight_gradient():
    torch.manual_seed(0)
    conv = WSConv2d(4, 6, 3, padding=1, groups=2, bias=True)
    twin = LeanWSConv2d.from_module(conv)
    x = torch.randn(2, 4, 7, 7, requires_grad=True)
    grads = [torch.autograd.grad(layer(x).square().sum(), [x, conv.weight, conv.bias]) for layer in (conv, twin)]
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4 * a.abs().max())
    assert measure(twin, x).saved_activations == x.numel() * 4  # x; stock also keeps W_hat, W - mean, std
    assert measure(conv, x).saved_activations > x.numel() * 4


@pytest.mark.parametrize("mode", ["exact", "detached"])
@pytest.mark.parametrize("norm", ["group", "batch", "batch eval"])
def test_lean_norms_equal_stock_where_exact_and_keep_what_their_table_says(norm, mode):
    torch.manual_seed(0)
    stock_norm = nn.GroupNorm(2, 8) if norm == "group" else nn.BatchNorm2d(8)
    with torch.no_grad():
        stock_norm.weight.uniform_(0.5, 1.5), stock_norm.bias.normal_()
    if norm == "batch eval":
        stock_norm.running_mean.normal_(), stock_norm.running_var.uniform_(0.5, 2)
        stock_norm.eval()
    stock_norm.weight.requires_grad_(mode == "exact")
    twin = (LeanGroupNorm if norm == "group" else LeanBatchNorm2d).from_module(copy.deepcopy(stock_norm), mode)
    x = torch.randn(4, 8, 5, 5, requires_grad=True)
    ys = [layer(x) for layer in (stock_norm, twin)]
    torch.testing.assert_close(ys[1], ys[0], rtol=1e-5, atol=1e-5)
    if norm != "group":
        torch.testing.assert_close(twin.running_mean, stock_norm.running_mean)  # updated alike in training mode
    grads = [torch.autograd.grad(y.square().sum(), [x, layer.bias]) for y, layer in zip(ys, (stock_norm, twin))]
    torch.testing.assert_close(grads[1][1], grads[0][1], rtol=1e-4, atol=1e-4)  # d(beta) never changes
    if mode == "exact" or norm == "batch eval":  # frozen statistics: the detached gradient is the exact one
        torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-4, atol=1e-4)
    saved = measure(twin, x).saved_activations
    assert saved == estimate(twin, x.shape, input_requires_grad=True).saved_activations
    if mode == "detached":  # gamma frozen: the statistics or the scale, nothing of x's size
        assert saved < x.numel() * 4
    x.requires_grad_(False)
    twin.weight.requires_grad_(False)
    assert measure(twin, x).saved_activations == 0  # only the shift trains: d(beta) = sum(dy)


@pytest.mark.parametrize("activation", [nn.ReLU6, nn.Hardswish, nn.Hardsigmoid])
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_act_equals_stock_in_exact_mode(activation, training):
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(6).train(training)
    with torch.no_grad():
        bn.bias.normal_(), bn.running_var.uniform_(0.5, 2)
    bn.weight.requires_grad_(False)
    twin = BatchNormAct.from_modules(copy.deepcopy(bn), activation())  # exact: Hard-Swish's true derivative
    x = torch.randn(3, 6, 4, 4, requires_grad=True)
    pair = nn.Sequential(bn, activation())
    ys = [m(x) for m in (pair, twin)]
    torch.testing.assert_close(ys[1], ys[0])
    grads = [torch.autograd.grad(y.square().sum(), [x, b]) for y, b in zip(ys, (bn.bias, twin.bias))]
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    assert measure(twin, x).saved_activations == estimate(twin, x.shape, input_requires_grad=True).saved_activations


def test_pools_keep_nothing_or_a_one_byte_argmax_and_give_stock_gradients():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 11, requires_grad=True)
    for stock_pool, twin_class, kept in ((nn.AvgPool2d(3, 2, 1, ceil_mode=True), LeanAvgPool2d, 0),
                                         (nn.MaxPool2d(3, 2, 1), LeanMaxPool2d, 1),
                                         (nn.MaxPool2d((2, 3), 2, 1, dilation=(2, 1)), LeanMaxPool2d, 1)):
        twin = twin_class.from_module(stock_pool)
        ys = [p(x) for p in (stock_pool, twin)]
        torch.testing.assert_close(ys[1], ys[0])
        dy = torch.randn_like(ys[0])
        grads = [torch.autograd.grad(y, x, dy)[0] for y in ys]
        torch.testing.assert_close(grads[1], grads[0])
        saved = measure(twin, x).saved_activations
        assert saved == kept * ys[0].numel() == estimate(twin, x.shape, input_requires_grad=True).saved_activations
