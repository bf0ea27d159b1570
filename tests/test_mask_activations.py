"""Mask activations: stock forward, exact (ReLU, ReLU6) or stated-surrogate (Hard-Swish) backward,
a packed mask as the only saved tensor; the L2-optimal Hard-Swish surrogate is optimal."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ondevice.mask_activations as ma
from kernels.activations import STEP, Surrogate, derivative
from ondevice.mask_activations import (HARDSWISH_L2, MOBILETL_SURROGATE, MaskHardsigmoid, MaskHardswish, MaskReLU,
                                       MaskReLU6, best_levels, l2_optimal_surrogate,
                                       surrogate_error, to_mask_activation)
from ondevice.memory import SavedTensorLog, estimate, measure

STOCK = {MaskReLU: nn.ReLU, MaskReLU6: nn.ReLU6, MaskHardswish: nn.Hardswish, MaskHardsigmoid: nn.Hardsigmoid}


def inputs(shape=(3, 5, 7, 9), seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(shape, generator=g) * 4
    z.view(-1)[:6] = torch.tensor([0.0, 6.0, -3.0, 3.0, 1e-8, -1e-8])  # kinks and knots
    return z


@pytest.mark.parametrize("cls", [MaskReLU, MaskReLU6, MaskHardsigmoid])
def test_relu_relu6_and_hardsigmoid_equal_stock_forward_and_backward_exactly(cls):
    z = inputs()
    dy = torch.randn_like(z)
    a, b = z.clone().requires_grad_(), z.clone().requires_grad_()
    ya, yb = cls()(a), STOCK[cls]()(b)
    assert torch.equal(ya, yb)
    ya.backward(dy)
    yb.backward(dy)
    assert torch.equal(a.grad, b.grad)


@pytest.mark.parametrize("surrogate", [STEP, HARDSWISH_L2, Surrogate(-1.0, 0.1, 0.9)],
                         ids=["step", "l2", "custom"])
def test_hardswish_forward_is_stock_and_backward_is_the_stated_surrogate(surrogate):
    z = inputs().requires_grad_()
    dy = torch.randn_like(z)
    y = MaskHardswish(surrogate)(z)
    assert torch.equal(y, F.hardswish(z.detach()))
    y.backward(dy)
    level = torch.where(z.detach() > surrogate.threshold, surrogate.high, surrogate.low)
    assert torch.allclose(z.grad, dy * level, rtol=0, atol=1e-7)
    assert not torch.allclose(z.grad, dy * derivative(z.detach(), "hardswish"), atol=1e-3)  # approximate


@pytest.mark.parametrize("shape", [(2, 3, 5, 5), (1, 7, 3, 3), (4, 32)], ids=str)
@pytest.mark.parametrize("cls", [MaskReLU, MaskReLU6, MaskHardswish, MaskHardsigmoid])
def test_the_only_saved_tensor_is_the_packed_mask(cls, shape):
    z = torch.randn(shape, requires_grad=True)
    with SavedTensorLog() as log:
        cls()(z)
    n = math.prod(shape)
    assert [(s.dtype, s.shape) for s in log.saved] == [(torch.int32, (-(-n // 32),))]
    assert log.nbytes == 4 * math.ceil(n / 32)  # numel / 8 bytes, rounded up to int32 words


@pytest.mark.parametrize("cls", [MaskReLU6, MaskHardswish])
def test_memory_engine_counts_what_the_mask_activations_keep(cls):
    net = nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), cls())
    x = torch.randn(3, 3, 9, 9)  # 3 * 5 * 7 * 7 = 735 elements: 23 words, not a multiple of 32
    got = measure(net, x).saved_activations
    for profile in ("pytorch", "masked"):
        r = estimate(net, x.shape, profile=profile)
        assert r.saved_activations == got
        assert {l.name: l.saved for l in r.layers}["2"] == 4 * 23
    if cls is MaskReLU6:  # exact from one bit: the kernelized stock network keeps the same bytes,
        # the packed mask now in the row of the fused BatchNorm + activation
        stock = nn.Sequential(*[STOCK.get(type(m), lambda: m)() if type(m) in STOCK else m for m in net])
        masked = estimate(stock, x.shape, profile="masked")
        assert masked.saved_activations == got
        assert any("1-bit mask" in note for l in masked.layers if l.name == "1" for note in l.stored)


def test_no_gradient_needed_saves_nothing_and_runs_the_stock_forward():
    z = torch.randn(2, 3, 4, 4)
    with SavedTensorLog() as log:
        y = MaskHardswish()(z)
        with torch.no_grad():
            MaskReLU6()(z.requires_grad_())
    assert log.nbytes == 0 and torch.equal(y, F.hardswish(z))


def test_cpu_tensors_use_the_torch_twin_even_under_the_triton_interpreter(monkeypatch):
    seen = []
    real = ma.act.packed_mask

    def spy(z, *args):
        seen.append(z.device.type)
        return real(z, *args)

    monkeypatch.setattr(ma.act, "packed_mask", spy)
    monkeypatch.setattr(ma, "pack_bits", None)  # the Triton dispatch must not be reached on CPU
    MaskReLU()(torch.randn(4, requires_grad=True))
    assert seen == ["cpu"]


def test_conversion_from_stock_modules():
    assert type(to_mask_activation(nn.ReLU6())) is MaskReLU6
    assert to_mask_activation(nn.Hardswish(), "step").surrogate == STEP
    assert to_mask_activation(nn.Hardswish()).surrogate == MOBILETL_SURROGATE == STEP  # our choice
    assert to_mask_activation(MaskHardswish("step"), "l2").surrogate == HARDSWISH_L2
    with pytest.raises(TypeError, match=r"no 1-bit mask activation for GELU; supported: nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid"):
        to_mask_activation(nn.GELU())
    with pytest.raises(ValueError, match=r"surrogate must be a kernels.activations.Surrogate or one of \('step', 'l2'\)"):
        MaskHardswish("sign")


# ---- the L2-optimal surrogate --------------------------------------------------------------


@pytest.mark.parametrize("mean, std", [(0.0, 1.0), (0.7, 2.0), (-1.5, 0.5)])
def test_closed_form_error_matches_monte_carlo(mean, std):
    g = torch.Generator().manual_seed(0)
    x = mean + std * torch.randn(2_000_000, generator=g, dtype=torch.float64)
    h = derivative(x, "hardswish")
    for s in (STEP, Surrogate(0.3, 0.2, 0.8), l2_optimal_surrogate(mean, std)):
        mc = ((h - torch.where(x > s.threshold, s.high, s.low)) ** 2).mean().item()
        assert surrogate_error(s, mean, std) == pytest.approx(mc, rel=3e-3, abs=1e-5)


@pytest.mark.parametrize("mean, std", [(0.0, 1.0), (0.7, 2.0), (-1.5, 0.5)])
def test_l2_surrogate_is_optimal(mean, std):
    best = l2_optimal_surrogate(mean, std)
    e = surrogate_error(best, mean, std)
    for dt in (-0.05, 0.05):
        for da in (-0.02, 0.0, 0.02):
            for db in (-0.02, 0.0, 0.02):
                other = Surrogate(best.threshold + dt, best.low + da, best.high + db)
                assert surrogate_error(other, mean, std) > e
    for da, db in ((0.01, 0), (-0.01, 0), (0, 0.01), (0, -0.01)):
        assert surrogate_error(Surrogate(best.threshold, best.low + da, best.high + db), mean, std) > e
    # levels are conditional means, and the boundary sits where h' is halfway between them
    assert best_levels(best.threshold, mean, std) == best
    if -3 < best.threshold < 3:
        assert (2 * best.threshold + 3) / 6 == pytest.approx((best.low + best.high) / 2, abs=1e-6)


def test_standard_normal_optimum_is_symmetric_and_beats_the_step():
    s = HARDSWISH_L2
    assert s.threshold == pytest.approx(0.0, abs=1e-6)  # h' - 1/2 is odd
    assert s.low + s.high == pytest.approx(1.0, abs=1e-6)
    assert surrogate_error(s) < surrogate_error(STEP) / 2


@pytest.mark.parametrize("kwargs, match", [({"std": 0.0}, "std must be"), ({"mean": math.nan}, "mean must be")])
def test_bad_distribution_is_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        l2_optimal_surrogate(**kwargs)
