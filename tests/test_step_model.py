"""The real peak of a training step (ondevice.memory.measure_step, the counting allocator) against
the step model of the estimate; determinism; budget mode; the workspace rules one by one."""

import copy
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ondevice import kernelize, methods
from ondevice.lite_residual import add_lite_residuals
from ondevice.memory import CATEGORIES, StepOutOfMemory, estimate, measure_step
from ondevice.memory.allocator import Recording
from ondevice.memory.trace import trace
from ondevice.memory.workspace import workspace
from ondevice.models import mobilenet_v2, mobilenet_v3_small, proxylessnas_tiny, resnet50, tiny_mbconv, to_groupnorm

NETWORKS = {  # small enough to step in well under a second each
    "tiny MBConv (BN)": (lambda: tiny_mbconv(10), 32),
    "ProxylessNAS-tiny (GN+WS, lite)": (lambda: add_lite_residuals(to_groupnorm(proxylessnas_tiny(num_classes=10))), 32),
    "MobileNetV3-Small": (lambda: mobilenet_v3_small(num_classes=10), 64),
    "MobileNetV2": (lambda: mobilenet_v2(num_classes=10), 64),
}
CASES = [(n, m, v) for n in NETWORKS for m in ("ft_full", "tinytl_b", "tinytl_lb", "ft_last")
         for v in ("stock", "exact", "detached")]
TOLERANCE = 0.05  # on these tiny inputs (1-4 px maps at the end) weight-sized oneDNN scratch is the rest


def configured(network, method, variant):
    torch.manual_seed(0)
    build, resolution = NETWORKS[network]
    model = methods.apply(build(), method)
    if variant != "stock":
        model = kernelize(model, backward=variant)
    return model, (4, 3, resolution, resolution)


def step(model, shape, optimizer="adam", **kw):
    x, target = torch.randn(shape), torch.randint(0, 10, (shape[0],))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params) if optimizer == "adam" else torch.optim.SGD(params, lr=0.1)
    return measure_step(model, x, target, opt, **kw)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the estimate reads the thread count too (which convolution PyTorch picks)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("network, method, variant", CASES, ids=["-".join(c) for c in CASES])
def test_the_estimate_predicts_the_measured_step_peak(network, method, variant):
    model, shape = configured(network, method, variant)
    measured = step(model, shape)
    predicted = estimate(model, shape, optimizer="adam")
    assert abs(predicted.total / measured.peak - 1) <= TOLERANCE, (predicted.total, measured.peak)
    assert measured.peak == sum(measured.at_peak.values()) and set(measured.at_peak) == set(CATEGORIES)
    for name in ("parameters", "optimizer state", "other"):  # alive throughout: exact
        assert predicted.at_peak[name] == measured.at_peak[name], name


def test_within_a_few_bytes_where_no_workspace_rule_is_approximate():
    # a bias-only step on MobileNetV2 and a last-layer step on ResNet-50, stock and kernelized: what is
    # left are scalars the model does not count (the loss, counters), a few bytes
    for build, method in ((lambda: mobilenet_v2(num_classes=10), "tinytl_b"), (lambda: resnet50(num_classes=10), "ft_last")):
        for variant in ("stock", "exact", "detached"):
            torch.manual_seed(0)
            model = methods.apply(build(), method)
            if variant != "stock":
                model = kernelize(model, backward=variant)
            measured, predicted = step(model, (4, 3, 64, 64)), estimate(model, (4, 3, 64, 64), optimizer="adam")
            assert abs(predicted.total - measured.peak) <= 64, (method, variant)
            assert predicted.peak_at == measured.layer
            assert all(abs(predicted.at_peak[c] - measured.at_peak[c]) <= 64 for c in CATEGORIES)


def test_the_measurement_is_deterministic_in_fresh_processes():
    code = ("import torch; torch.set_num_threads(1); from ondevice import methods; "
            "from ondevice.models import tiny_mbconv; from ondevice.memory import measure_step; "
            "torch.manual_seed(0); m = methods.apply(tiny_mbconv(10), 'tinytl_lb'); "
            "o = torch.optim.Adam([p for p in m.parameters() if p.requires_grad]); "
            "print(measure_step(m, torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)), o).peak)")
    peaks = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
             for _ in range(2)}
    assert len(peaks) == 1 and int(peaks.pop()) > 0


def test_the_categories_add_up_over_the_timeline():
    model, shape = configured("tiny MBConv (BN)", "tinytl_b", "stock")
    r = step(model, shape)
    index, series = r.timeline
    totals = np.sum([series[c] for c in CATEGORIES], axis=0)
    assert totals.max() == r.peak and set(r.phases) == {"forward", "backward", "optimizer"}
    assert series["gradients"][0] == 0 and series["gradients"][-1] > 0  # zero_grad(set_to_none) before the step
    assert r.phase in ("forward", "backward", "optimizer") and r.layer


def test_budget_mode_fails_like_a_full_device_and_names_the_layer():
    model, shape = configured("tiny MBConv (BN)", "ft_full", "stock")
    peak = step(copy.deepcopy(model), shape).peak
    assert step(copy.deepcopy(model), shape, budget=peak).peak == peak  # exactly enough: it runs
    with pytest.raises(StepOutOfMemory, match=r"out of memory at (forward|backward): .* does not fit the budget") as error:
        step(model, shape, budget=peak - 1)
    assert error.value.requested > 0 and error.value.in_use + error.value.requested > peak - 1
    with pytest.raises(StepOutOfMemory, match="before the step"):
        step(model, shape, budget=1000)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"steps": 1}, ValueError, "steps must be an int >= 2"),
    ({"budget": -5}, ValueError, "budget must be a number of bytes > 0"),
    ({"budget": True}, ValueError, "budget must be"),
])
def test_bad_arguments_are_named(kwargs, error, match):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    with pytest.raises(error, match=match):
        measure_step(model, torch.randn(2, 3, 8, 8), torch.zeros(2, dtype=torch.long),
                     torch.optim.SGD(model[0].parameters(), lr=0.1), **kwargs)
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer"):
        measure_step(model, torch.randn(2, 3, 8, 8), torch.zeros(2), "adam")


def _peak(fn) -> int:
    with Recording() as log:
        fn()
    return int(np.cumsum(log.bytes).max()) if len(log.bytes) else 0


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("cin, cout, k, stride, groups, size, batch", [
    (48, 48, 5, 2, 48, 56, 4), (48, 48, 3, 1, 48, 28, 4), (16, 48, 1, 1, 1, 56, 4), (48, 16, 1, 1, 1, 56, 16),
    (144, 24, 1, 1, 1, 28, 4), (3, 32, 3, 2, 1, 64, 2), (18, 18, 3, 1, 18, 20, 4), (20, 36, 1, 1, 1, 20, 4),
])
def test_the_convolution_scratch_rules_match_the_allocator(cin, cout, k, stride, groups, size, batch, threads):
    # forward and backward (input and weight gradients) of one convolution, alone, against its rule
    torch.set_num_threads(threads)
    conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
    image = cin < 16  # a first layer: its input (an image) needs no gradient
    call = next(c for c in trace(nn.Sequential(conv), (1, cin, size, size), input_requires_grad=not image).walk()
                if c.module is conv)
    x = torch.randn(batch, cin, size, size)
    y = F.conv2d(x, conv.weight.detach(), None, stride, k // 2, 1, groups)
    dy = torch.randn_like(y)
    for backward in (False, True):
        predicted = workspace(call, backward).bytes(batch, threads)
        if backward:
            measured = _peak(lambda: torch.ops.aten.convolution_backward(
                dy, x, conv.weight.detach(), None, [stride] * 2, [k // 2] * 2, [1, 1], False, [0, 0], groups,
                [not image, True, False])) - (0 if image else x.numel() * 4) - conv.weight.numel() * 4
        else:
            measured = _peak(lambda: F.conv2d(x, conv.weight.detach(), None, stride, k // 2, 1, groups)) - y.numel() * 4
        assert abs(predicted - measured) <= 0.05 * measured + 512, (backward, predicted, measured)
