"""What the fused kernels keep for backward: the memory engine's rules equal the measurement
(saved-tensor hooks), and the savings against eager GroupNorm + activation."""

import pytest
import torch
from torch import nn

from kernels import FrozenNormAct, GroupNormAct
from kernels.activations import STEP
from ondevice.memory import estimate, measure

CONFIGS = {  # GroupNormAct arguments
    "exact relu6": dict(activation="relu6", backward="exact"),
    "detached relu": dict(activation="relu", backward="detached"),
    "exact hardswish, true derivative": dict(activation="hardswish", backward="exact", surrogate=None),
    "exact hardswish, step": dict(activation="hardswish", backward="exact", surrogate=STEP),
    "detached hardswish, step": dict(activation="hardswish", backward="detached", surrogate=STEP),
}


def net(config, backend):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), GroupNormAct(4, 16, backend=backend, **config),
                         nn.Conv2d(16, 8, 1), FrozenNormAct(8, activation=config["activation"], backend=backend),
                         nn.Conv2d(8, 4, 1))


def trainable_settings(model, detached):
    names = [n for n, _ in model.named_parameters()]
    frozen_scales = {"3.weight"} | ({"1.weight"} if detached else set())  # they cannot train
    return {
        "all that can train": set(names) - frozen_scales,
        "biases only": {n for n in names if n.endswith("bias")},
        "norm shifts only": {"1.bias", "3.bias"},
        "last conv only": {"4.weight", "4.bias"},
        "first conv frozen": set(names) - frozen_scales - {"0.weight", "0.bias"},
    }


FUSED = ("GroupNormAct", "FrozenNormAct")
# Settings where every conv with a backward trains its weight: there stock PyTorch keeps what the
# masked profile assumes (with a frozen weight a stock conv still keeps x; a masked one nothing).
CONVS_AGREE = ("all that can train", "last conv only", "first conv frozen")


@pytest.mark.parametrize("config", CONFIGS, ids=list(CONFIGS))
def test_pytorch_and_masked_profiles_equal_measurement(config):
    model = net(CONFIGS[config], backend="torch")
    for setting, names in trainable_settings(model, CONFIGS[config]["backward"] == "detached").items():
        for n, p in model.named_parameters():
            p.requires_grad_(n in names)
        for shape in ((2, 3, 7, 5), (3, 3, 4, 4)):
            measured = measure(model, torch.randn(shape)).saved_activations
            reports = {p: estimate(model, shape, profile=p) for p in ("pytorch", "masked")}
            assert reports["pytorch"].saved_activations == measured, f"{config}, {setting}, {shape}"
            if setting in CONVS_AGREE:
                assert reports["masked"].saved_activations == measured, f"{config}, {setting}, {shape}"
            fused = {p: [(l.name, l.saved) for l in r.layers if l.type in FUSED] for p, r in reports.items()}
            assert fused["pytorch"] == fused["masked"], f"{config}, {setting}: one rule serves both profiles"


def test_triton_and_twin_keep_the_same_tensors_and_half_precision_keeps_float32_statistics():
    for backend in ("triton", "torch"):
        model = net(CONFIGS["exact relu6"], backend)
        x = torch.randn(1, 3, 5, 6)
        assert measure(model, x).saved_activations == estimate(model, x.shape, profile="masked").saved_activations
    model = net(CONFIGS["exact relu6"], "torch").half()
    x = torch.randn(2, 3, 6, 6).half()
    m = measure(model, x)
    assert m.saved_activations == estimate(model, x.shape, profile="masked", dtype=torch.float16).saved_activations
    assert sum(1 for s in m.saved if s.dtype == torch.float32 and s.shape == (2, 4)) == 2  # mean and rstd


def saved_bytes(module, x, *, train_gamma):
    module[0].weight.requires_grad_(train_gamma)
    return measure(module, x.clone().requires_grad_(True)).saved_activations  # a middle layer: x needs a gradient


@pytest.mark.parametrize("activation", ["relu6", "hardswish"])
def test_exact_keeps_at_most_052_and_detached_at_most_one_60th_of_eager(activation):
    x = torch.randn(2, 16, 16, 16)  # float32, 8 channels per group
    act = nn.ReLU6() if activation == "relu6" else nn.Hardswish()
    eager = saved_bytes(nn.Sequential(nn.GroupNorm(2, 16), act), x, train_gamma=True)
    exact = saved_bytes(nn.Sequential(GroupNormAct(2, 16, activation=activation, backend="torch")), x, train_gamma=True)
    detached = saved_bytes(nn.Sequential(GroupNormAct(2, 16, activation=activation, backward="detached",
                                                      backend="torch")), x, train_gamma=False)
    assert eager == 2 * x.numel() * 4 + 2 * 2 * 2 * 4  # x and the activation input; mean and rstd
    assert exact <= 0.52 * eager
    assert detached <= eager / 60


@pytest.mark.parametrize("gamma_trains", [False, True])
def test_paper_profile_counts_the_fused_modules_like_the_pair_they_replace(gamma_trains):
    torch.manual_seed(0)
    conv, gn, act = nn.Conv2d(3, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.ReLU6()
    bn = nn.BatchNorm2d(16).eval()
    gn.weight.requires_grad_(gamma_trains)
    pair = nn.Sequential(conv, gn, act, nn.Conv2d(16, 16, 1), bn, nn.ReLU6())
    fused = nn.Sequential(conv, GroupNormAct.from_modules(gn, act), pair[3], FrozenNormAct.from_batchnorm(bn, pair[5]))
    bn.weight.requires_grad_(False)  # as from_batchnorm leaves it, in both models
    a = estimate(pair, (2, 3, 8, 8), profile="paper").saved_activations
    b = estimate(fused, (2, 3, 8, 8), profile="paper").saved_activations
    assert a == b > 0
