"""ondevice.memory.estimate against ondevice.memory.measure (exact), and the paper profile."""

import random
from dataclasses import replace

import pytest
import torch
from torch import nn

from ondevice import methods
from ondevice.lite_residual import add_lite_residuals
from ondevice.memory import PROFILES as PROFILE_NAMES
from ondevice.memory import estimate, measure, memory_curve
from ondevice.models import ZOO, build, proxylessnas_mobile, to_groupnorm

NORMS = (nn.BatchNorm2d, nn.GroupNorm)


def trainable_sets(model: nn.Module) -> dict[str, set[str]]:
    names = [n for n, _ in model.named_parameters()]
    last = {n for n in names if n.startswith("classifier")}
    norms = {f"{m}.{p}" for m, mod in model.named_modules() if isinstance(mod, NORMS)
             for p, _ in mod.named_parameters(recurse=False)}
    return {
        "all trainable": set(names),
        "last layer only": last,
        "norms + last": norms | last,
        "biases only": {n for n in names if n.endswith("bias")},
        "random subset": set(random.Random(len(names)).sample(names, len(names) // 3)),
    }


def set_trainable(model: nn.Module, names: set[str]) -> None:
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)


def zoo_model(name: str) -> nn.Module:
    """A zoo model with a 10-class head; Inception-V3 without its auxiliary classifier, which in
    training mode needs 299 px (test_inception_with_its_auxiliary_classifier_is_exact)."""
    return build(name, num_classes=10, **({"aux_logits": False} if name == "inception_v3" else {}))


def zoo_sizes(name: str) -> tuple[int, int]:
    """Two odd input sizes the model takes (Inception-V3 needs 75 px)."""
    return (75, 83) if name == "inception_v3" else (33, 71)


@pytest.mark.parametrize("groupnorm", [False, True], ids=["BN", "GN+WS"])
@pytest.mark.parametrize("name", sorted(ZOO))
def test_pytorch_profile_equals_measurement_exactly(name, groupnorm):
    torch.manual_seed(0)
    model = zoo_model(name)
    if groupnorm:
        to_groupnorm(model)
    for setting, names in trainable_sets(model).items():
        set_trainable(model, names)
        for res in zoo_sizes(name):
            x = torch.randn(2, 3, res, res + 2)
            est = estimate(model, x.shape).saved_activations
            got = measure(model, x).saved_activations
            assert est == got, f"{name} {setting} at {res}px: estimate {est} != measured {got}"


def test_inception_with_its_auxiliary_classifier_is_exact():
    torch.manual_seed(0)
    model = build("inception_v3", num_classes=10).train()  # the auxiliary head runs in training mode
    set_trainable(model, trainable_sets(model)["random subset"])
    x = torch.randn(2, 3, 299, 299)  # batch 2: the head's BatchNorm sees a 1 x 1 map in training
    assert estimate(model, x.shape).saved_activations == measure(model, x).saved_activations


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_small"])
def test_eval_mode_and_frozen_statistics_are_covered(name):
    model = build(name, num_classes=10).eval()  # BatchNorm with frozen statistics, no dropout
    set_trainable(model, trainable_sets(model)["biases only"])
    x = torch.randn(3, 3, 40, 40)
    assert estimate(model, x.shape).saved_activations == measure(model, x).saved_activations


def test_saved_bytes_scale_with_batch_except_parameter_shaped_tensors():
    model = to_groupnorm(proxylessnas_mobile(num_classes=10))
    r1, r4 = (estimate(model, (b, 3, 64, 64)) for b in (1, 4))
    fixed = r1.saved_activations * 4 - r4.saved_activations  # standardized weights do not scale
    assert fixed > 0 and fixed % 3 == 0
    conv_weights = sum(m.weight.numel() * 4 for m in model.modules() if isinstance(m, nn.Conv2d)
                       and m.weight.requires_grad)
    # each WS conv keeps its standardized weight, W - mean and the per-channel std
    assert fixed // 3 >= 2 * conv_weights


def test_parameters_gradients_and_optimizer_state():
    model = build("mobilenet_v3_small", num_classes=10)
    set_trainable(model, trainable_sets(model)["last layer only"])
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    r = estimate(model, (8, 3, 64, 64), frozen_param_bits=8, optimizer="adam")
    weights = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and not m.weight.requires_grad]
    other = frozen - sum(w.numel() for w in weights)  # biases and norm parameters stay float32
    # frozen conv / linear weights: int8 + one float32 scale per output channel, as kernelize stores them
    assert r.params == 4 * trainable + sum(w.numel() + 4 * w.shape[0] for w in weights) + 4 * other
    assert estimate(model, (8, 3, 64, 64), profile="paper", frozen_param_bits=8).params == 4 * trainable + frozen
    assert r.param_grads == 4 * trainable
    tensors = sum(1 for p in model.parameters() if p.requires_grad)
    assert r.optimizer_state == 2 * 4 * trainable + 4 * tensors  # two moments and a float32 step count
    assert r.total == sum(r.at_peak.values()) and r.at_peak["gradients"] <= r.param_grads
    assert estimate(model, (8, 3, 64, 64), optimizer="momentum").optimizer_state == 4 * trainable


def test_the_total_is_the_step_peak_by_category_in_every_zoo_model():
    for name in ZOO:
        size = zoo_sizes(name)[0]
        r = estimate(zoo_model(name), (2, 3, size, size), optimizer="adam")
        assert r.total == sum(r.at_peak.values()) and r.peak == r.at_peak["saved activations"] + r.at_peak["temporaries"]
        assert r.at_peak["parameters"] >= r.params and r.peak_at.startswith(("forward", "backward", "loss", "optimizer"))
        assert sum(l.saved for l in r.layers) == r.saved_activations, name


def test_per_layer_table_names_what_is_kept_and_sharing():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    r = estimate(model, (2, 3, 10, 10))
    rows = {l.name: l for l in r.layers}
    assert rows["1"].saved == 2 * 8 * 8 * 8 * 4  # ReLU keeps its output...
    assert rows["2"].saved == 0 and "shared with 1" in rows["2"].stored[0]  # ...the conv's input
    assert rows["2"].input_shape == (2, 8, 8, 8)
    assert "ReLU" in r.table()


def test_a_module_without_a_rule_is_traced_through_its_own_calls():
    class Mystery(nn.Module):  # no rule registered: its forward's calls are its rule
        def forward(self, x):
            return x * torch.sigmoid(x)

    net = nn.Sequential(nn.Conv2d(3, 4, 1), Mystery())
    x = torch.randn(2, 3, 8, 8)
    r = estimate(net, x.shape)
    assert r.saved_activations == measure(net, x).saved_activations
    rows = {l.name: l for l in r.layers}
    assert rows["1"].how == "derived" and any("sigmoid output" in s for s in rows["1"].stored)


@pytest.mark.parametrize("kwargs, match", [
    ({"profile": "exact"}, r"profile must be one of \('pytorch', 'paper', 'masked'\)"),
    ({"optimizer": "rmsprop"}, "optimizer must be one of"),
    ({"frozen_param_bits": 7}, r"frozen_param_bits must be one of \(32, 16, 8, 4\)"),
])
def test_bad_options_name_the_argument_and_the_allowed_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        estimate(nn.Conv2d(3, 4, 1), (1, 3, 8, 8), **kwargs)


def test_bad_input_shape_is_rejected():  # every other bad input: tests/test_trace_inputs.py
    with pytest.raises(ValueError, match="input_shape"):
        estimate(nn.Conv2d(3, 4, 1), (0, 3, 8, 8))


@pytest.mark.parametrize("sample_shape", [None, 5, "3x8x8"])
def test_memory_curve_names_a_sample_shape_that_is_not_a_tuple(sample_shape):
    with pytest.raises(TypeError, match=r"sample_shape must be a tuple \(channels, height, width\)"):
        memory_curve(nn.Conv2d(3, 4, 1), sample_shape)


# TinyTL Table 2 (ProxylessNAS-Mobile, 224 px, batch 8, 102-class head, frozen weights 8-bit), MB.
TABLE2 = {"FT-Full": 391, "FT-Norm+Last": 192, "FT-Last": 31, "TinyTL-B": 32}


def tinytl_network():
    """The network TinyTL profiles every method on: lite residuals inserted, then GN + WS."""
    return to_groupnorm(add_lite_residuals(proxylessnas_mobile(num_classes=102)))


TABLE2_METHODS = {"FT-Full": "ft_full", "FT-Norm+Last": "ft_norm_last", "FT-Last": "ft_last",
                  "TinyTL-B": "tinytl_b"}


def test_paper_profile_reproduces_tinytl_table2(capsys):
    model = tinytl_network()
    errors = {}
    for method, name in TABLE2_METHODS.items():
        methods.apply(model, name)
        mb = estimate(model, (8, 3, 224, 224), profile="paper", frozen_param_bits=8).mb()
        errors[method] = mb / TABLE2[method] - 1
        with capsys.disabled():
            print(f"\n  {method:13s} paper profile {mb:6.1f} MB, TinyTL Table 2 {TABLE2[method]:4d} MB, "
                  f"error {100 * errors[method]:+.1f}%", end="")
    assert all(abs(e) <= 0.05 for e in errors.values()), errors


# TinyTL Table 3, FT-Full rows (MB). Our choices, as the paper does not state them: the plain
# networks (BatchNorm, no lite residual), batch 8, a 102-class head as in Table 2, each at the
# resolution it was designed for: 224 px, Inception-V3 299 px; its auxiliary classifier is part
# of the network (torchvision's default), trained in training mode.
TABLE3 = {"inception_v3": (850, 299), "resnet50": (802, 224), "mobilenet_v2_140": (644, 224)}


def test_paper_profile_reproduces_tinytl_table3_ft_full(capsys):
    errors = {}
    for name, (paper_mb, res) in TABLE3.items():
        with torch.device("meta"):  # shapes only
            model = methods.ft_full(build(name, num_classes=102))
        mb = estimate(model, (8, 3, res, res), profile="paper", frozen_param_bits=8).mb()
        errors[name] = mb / paper_mb - 1
        with capsys.disabled():
            print(f"\n  {name:17s} {res} px: paper profile {mb:6.1f} MB, TinyTL Table 3 {paper_mb} MB, "
                  f"error {100 * errors[name]:+.1f}%", end="")
    assert all(abs(e) <= 0.05 for e in errors.values()), errors


def test_paper_profile_ft_last_needs_no_backward_below_the_head():
    model = methods.apply(tinytl_network(), "ft_last")
    r = estimate(model, (1, 3, 224, 224), profile="paper", frozen_param_bits=8)
    head_input = 1280 * 4  # the classifier keeps its input; no 1-bit ReLU masks are charged
    assert r.saved_activations == head_input


def test_pytorch_profile_is_exact_with_lite_residuals():
    model = tinytl_network()
    sets = trainable_sets(model)
    lite = {n for n, _ in model.named_parameters() if ".lite." in n}
    for names in (lite | sets["last layer only"], lite | sets["biases only"], sets["all trainable"]):
        set_trainable(model, names)
        x = torch.randn(2, 3, 64, 64)
        assert estimate(model, x.shape).saved_activations == measure(model, x).saved_activations


def test_masked_profile_keeps_one_bit_activations_and_nothing_for_frozen_layers():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU6(), nn.Conv2d(8, 4, 1),
                        nn.AvgPool2d(2))
    shape = (2, 3, 10, 10)
    act = 2 * 8 * 8 * 8  # elements of the ReLU6's input
    net[0].requires_grad_(False)  # frozen stem: nothing below needs its input
    net[1].eval().weight.requires_grad_(False)  # MobileTL's shift-only norm: frozen statistics
    r = estimate(net, shape, profile="masked")
    # the shift's gradient flows through ReLU6 (1 bit) and the affine norm (nothing); the
    # trainable last conv keeps its input (the ReLU6 output)
    assert r.saved_activations == 4 * act + act // 8
    net[1].bias.requires_grad_(False)  # nothing below the last conv trains: no mask either
    assert estimate(net, shape, profile="masked").saved_activations == 4 * act
    net[1].bias.requires_grad_(True)
    assert estimate(net, shape, profile="pytorch").saved_activations == 4 * act * 3 + 4 * 2 * 4 * 8 * 8
    rows = {l.name: l for l in r.layers}  # BatchNorm + ReLU6 are fused (kernelize): the mask is row "1"
    assert rows["1"].saved == act // 8 and "1-bit mask" in rows["1"].stored[0]


@pytest.mark.parametrize("name", sorted(ZOO))
def test_masked_profile_never_keeps_more_than_stock_pytorch(name):
    model = to_groupnorm(zoo_model(name))
    size = zoo_sizes(name)[1]
    for names in trainable_sets(model).values():
        set_trainable(model, names)
        masked, stock = (estimate(model, (2, 3, size, size), profile=p) for p in ("masked", "pytorch"))
        assert masked.saved_activations <= stock.saved_activations
        assert masked.peak <= stock.peak


def test_masked_batchnorm_with_frozen_statistics_keeps_x_when_gamma_trains():
    net = nn.Sequential(nn.Conv2d(3, 6, 1).requires_grad_(False), nn.BatchNorm2d(6)).eval()
    net[1].bias.requires_grad_(False)
    assert estimate(net, (2, 3, 8, 8), profile="masked").saved_activations == 2 * 6 * 8 * 8 * 4
    net[1].weight.requires_grad_(False)
    net[1].bias.requires_grad_(True)  # shift only: an affine map, d(beta) = sum(dy)
    assert estimate(net, (2, 3, 8, 8), profile="masked").saved_activations == 0


@pytest.mark.parametrize("norm", [nn.BatchNorm2d(8), nn.GroupNorm(2, 8)])
def test_masked_norm_with_only_its_shift_training_keeps_nothing(norm):
    net = nn.Sequential(nn.Conv2d(3, 8, 1).requires_grad_(False), norm)
    norm.weight.requires_grad_(False)
    assert estimate(net, (2, 3, 8, 8), profile="masked").saved_activations == 0
    assert estimate(net, (2, 3, 8, 8)).saved_activations == measure(net, torch.randn(2, 3, 8, 8)).saved_activations > 0


@pytest.mark.parametrize("norm", [nn.BatchNorm2d(6), nn.GroupNorm(3, 6)])
def test_norm_statistics_take_the_input_dtype_on_cpu(norm):
    x = torch.randn(2, 6, 8, 8, dtype=torch.bfloat16)
    norm = norm.to(torch.bfloat16)
    assert estimate(norm, x.shape, dtype=torch.bfloat16, input_requires_grad=True).saved_activations \
        == measure(norm, x.requires_grad_()).saved_activations


@pytest.mark.parametrize("layer", [nn.AdaptiveAvgPool2d(2), nn.BatchNorm2d(3, affine=False), nn.ReLU6()])
def test_an_input_that_needs_a_gradient_is_modelled(layer):
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    assert estimate(layer, x.shape, input_requires_grad=True).saved_activations \
        == measure(layer, x).saved_activations > 0


def test_paper_profile_table_names_layer_types_and_shapes():
    model = build("mobilenet_v2", num_classes=10)
    rows = estimate(model, (4, 3, 64, 64), profile="paper").layers
    assert rows[0].type == "Conv2d" and rows[0].input_shape == (4, 3, 64, 64)
    assert sum(r.saved for r in rows) == pytest.approx(estimate(model, (4, 3, 64, 64), profile="paper").saved_activations, abs=len(rows))


def test_estimate_creates_no_reference_cycles():
    import gc

    model = methods.apply(tinytl_network(), "tinytl_lb")
    estimate(model, (8, 3, 96, 96))
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for profile in PROFILE_NAMES:
            estimate(model, (2, 3, 128, 128), profile=profile)
        assert gc.collect() == 0, "cyclic garbage makes interactive updates pause"
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


@pytest.mark.parametrize("profile", ["pytorch", "masked", "paper"])
def test_memory_curve_equals_estimate_and_finds_the_largest_batch(profile):
    model = methods.apply(tinytl_network(), "tinytl_lb")
    curve = memory_curve(model, (3, 96, 96), profile=profile, frozen_param_bits=8, optimizer="adam")
    for b in (1, 2, 7, 32):
        full = estimate(model, (b, 3, 96, 96), profile=profile, frozen_param_bits=8, optimizer="adam")
        assert curve.total(b) == full.total
        assert curve.report(b) == replace(full, layers=[])
    budget = (curve.total(11) + curve.total(12)) / 2
    assert curve.largest_batch(budget) == 11
    assert curve.largest_batch(curve.total(1) - 1) == 0
    assert curve.largest_batch(1e15, max_batch=64) == 64
