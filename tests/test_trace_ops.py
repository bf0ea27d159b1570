"""The function rules (ondevice/memory/op_rules.py) against measurement, one or more functions per
rule: a module without a rule calls the function on two operands made by convolutions, trainable
or frozen in turn (so either, or both, need a gradient), and estimate() must equal measure()."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ondevice.memory import estimate, measure
from ondevice.memory.shapes import SAVED_RULES

# name -> f(module, a, b), with a: (N, 4, 7, 9) and b: (N, 4, 1, 1) activations; module.w: a
# (4, 4, 3, 3) weight, module.v: a (4,) vector (both parameters)
CASES = {
    "add, sub, cat, views": lambda m, a, b: torch.cat([a + b, (a - 1).permute(0, 1, 3, 2).flatten(2).view_as(a)], 1),
    "chunk, stack, clone, mean, sum": lambda m, a, b: torch.stack(a.chunk(2, 1), 0).clone().mean(0) + a.sum(1, True),
    "interpolate, pixel_shuffle, constant pad": lambda m, a, b: F.pad(F.interpolate(a, scale_factor=2, mode="bilinear"),
                                                                       (1, 0, 0, 1)).sum() + F.pixel_shuffle(a, 2).sum(),
    "sigmoid, tanh, softmax, exp": lambda m, a, b: torch.sigmoid(a) + torch.tanh(b) + a.softmax(1) + b.exp(),
    "relu, sqrt, rsqrt": lambda m, a, b: F.relu(a) + (a * a + 1).sqrt() + (b * b + 1).rsqrt(),
    "relu_, sigmoid_": lambda m, a, b: F.relu_(a * 2) + (b + 1).sigmoid_(),
    "relu6, hardtanh, hardswish": lambda m, a, b: F.relu6(a) + F.hardtanh(a, -1, 1) + F.hardswish(b),
    "hardsigmoid, silu, gelu": lambda m, a, b: F.hardsigmoid(a) + F.silu(b) + F.gelu(a),
    "leaky_relu, elu, abs, clamp": lambda m, a, b: F.leaky_relu(a, 0.1) + F.elu(b) + a.abs() + a.clamp(-1, 1),
    "pow, var": lambda m, a, b: a ** 2 + a.var((2, 3), keepdim=True),
    "in place: relu6, hardtanh, hardswish, hardsigmoid": lambda m, a, b: (
        F.relu6(a * 1, inplace=True) + F.hardtanh(a * 1, inplace=True) + F.hardswish(a * 1, inplace=True)
        + F.hardsigmoid(b * 1, inplace=True)),
    "in place: silu, relu, leaky_relu, elu": lambda m, a, b: (
        F.silu(a * 1, inplace=True) + F.relu(a * 1, inplace=True) + F.leaky_relu(a * 1, 0.2, inplace=True)
        + F.elu(b * 1, inplace=True)),
    "mul, matmul": lambda m, a, b: (a * b).sum() + (a @ a.transpose(2, 3)).sum(),
    "mul_": lambda m, a, b: (a * 1).mul_(b),
    "div": lambda m, a, b: a / (b * b + 1),
    "div_": lambda m, a, b: (a * 1).div_(b * b + 1),
    "c / x": lambda m, a, b: 1 / (a * a + 1),
    "maximum, where": lambda m, a, b: torch.maximum(a, b) + torch.where(a > 0, a, b),
    "amax, std": lambda m, a, b: a.amax((2, 3)) + a.std((2, 3)),
    "max and min over a dim": lambda m, a, b: a.max(1).values + a.min(2)[0].sum(),
    "avg_pool, adaptive_avg_pool": lambda m, a, b: F.avg_pool2d(a, 2).sum() + F.adaptive_avg_pool2d(a, 3).sum()
    + F.adaptive_avg_pool2d(a, 1).sum(),
    "max_pool, adaptive_max_pool": lambda m, a, b: F.max_pool2d(a, 2).sum() + F.adaptive_max_pool2d(a, (2, 3)).sum()
    + F.max_pool2d(a, 3, 2, return_indices=True)[0].sum(),
    "reflect, replicate, circular pad": lambda m, a, b: F.pad(a, (1, 1, 2, 0), mode="reflect").sum()
    + F.pad(a, (1, 1, 1, 1), mode="replicate").sum() + F.pad(a, (1, 1, 1, 1), mode="circular").sum(),
    "dropout, dropout2d (training)": lambda m, a, b: F.dropout(a, 0.3, True).sum() + F.dropout2d(a, 0.5, True).sum(),
    "conv2d with a computed weight, conv_transpose2d": lambda m, a, b: F.conv2d(a, m.w * 2, padding=1).sum()
    + F.conv_transpose2d(a, m.w, stride=2).sum(),
    "linear with a parameter and with a computed weight": lambda m, a, b: F.linear(b.flatten(1), m.w[:, :, 0, 0])
    + F.linear(b.flatten(1), m.w[:, :, 1, 1] + 1),
    "batch_norm (training, eval), group_norm, layer_norm": lambda m, a, b: (
        F.batch_norm(a, torch.zeros(4), torch.ones(4), m.v, m.v, True).sum()
        + F.batch_norm(a, torch.zeros(4), torch.ones(4), m.v, None, False).sum()
        + F.group_norm(a, 2, m.v).sum() + F.layer_norm(a, (9,)).sum()),
}


class Calls(nn.Module):
    """Two operands from convolutions, then the function under test (this module has no rule)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.conv_a, self.conv_b = nn.Conv2d(3, 4, 3), nn.Conv2d(3, 4, 1)
        self.w, self.v = nn.Parameter(torch.randn(4, 4, 3, 3)), nn.Parameter(torch.rand(4) + 0.5)

    def forward(self, x):
        return self.fn(self, self.conv_a(x), self.conv_b(x).mean((2, 3), keepdim=True))


@pytest.mark.parametrize("case", list(CASES))
def test_function_rules_equal_measurement(case):
    for trainable in ("conv_a", "conv_b", "both", "weights"):
        torch.manual_seed(0)
        net = Calls(CASES[case]).train()
        for n, p in net.named_parameters():
            p.requires_grad_(trainable == "both" or n.startswith(trainable) or (trainable == "weights" and "conv" not in n))
        for shape in ((2, 3, 9, 11), (3, 3, 9, 11)):
            est = estimate(net, shape)
            got = measure(net, torch.randn(shape)).saved_activations
            assert est.saved_activations == got, f"{case}, {trainable} trains, {shape}"
            assert all(layer.how == "derived" for layer in est.layers), [l.stored for l in est.layers]


def test_every_function_rule_is_exercised_above():
    exercised = set()
    import ondevice.memory.shapes as shapes

    original = shapes.SAVED_RULES.copy()

    class Spy(dict):
        def __getitem__(self, func):
            exercised.add(original[func])
            return original[func]

    try:
        shapes.SAVED_RULES = Spy(original)  # own_calls reads the rules through this name
        for fn in CASES.values():
            net = Calls(fn)
            estimate(net, (2, 3, 9, 11))
    finally:
        shapes.SAVED_RULES = original
    assert exercised == set(SAVED_RULES.values())
