"""Bring your own network (issue 17): ``estimate(profile="pytorch").saved_activations`` equals
``measure()`` to the byte on networks written the way readers write them, none registered with
the memory engine (``test_byon_networks.py``): random trainable subsets, training and eval mode,
odd input sizes, two batch sizes. What the engine measured instead of derived is named."""

import copy
import random
import warnings

import pytest
import torch
import torch.nn.functional as F
from test_byon_networks import NETWORKS
from torch import nn

from ondevice import kernelize
from ondevice.memory import estimate, measure

SHAPES = [(2, 3, 17, 23), (3, 3, 20, 19)]  # odd sizes, two batches (per-sample vs fixed bytes)
MEASURED = {  # network -> the layers the report must name "measured, no rule"
    "attention head (measured)": {"attn"},  # nn.MultiheadAttention: no rule for its function
    "LSTM head (measured)": {"rnn"},  # nn.LSTM: no rule for its function
    "custom autograd, data-dependent (measured)": {"(model)"},  # a custom autograd function in its forward
}


def trainable_subsets(net: nn.Module):
    names = [n for n, _ in net.named_parameters()]
    yield set(names)
    for seed in (1, 2):
        yield set(random.Random(seed).sample(names, max(1, len(names) * seed // 3)))


@pytest.mark.parametrize("name", list(NETWORKS))
def test_estimate_equals_measurement_on_readers_networks(name):
    for training in (True, False):
        for subset in trainable_subsets(NETWORKS[name]()):
            torch.manual_seed(0)
            net = NETWORKS[name]().train(training)
            for n, p in net.named_parameters():
                p.requires_grad_(n in subset)
            for shape in SHAPES:
                est = estimate(net, shape).saved_activations
                got = measure(net, torch.randn(shape)).saved_activations
                assert est == got, f"{name}, training={training}, {len(subset)} trainable, {shape}: {est} != {got}"


@pytest.mark.parametrize("name", list(NETWORKS))
def test_the_report_names_what_was_measured(name):
    report = estimate(NETWORKS[name](), SHAPES[0])
    measured = {layer.name for layer in report.layers if layer.how == "measured, no rule"}
    assert measured == MEASURED.get(name, set())
    for layer in report.layers:
        assert layer.how in ("derived", "measured, no rule")


@pytest.mark.parametrize("name", ["DenseNet (cat of a list)", "ShuffleNet (chunk, shuffle)", "squeeze-excite gating",
                                  "in-place activations", "LSTM head (measured)"])
@pytest.mark.parametrize("backward", ["exact", "detached"])
def test_masked_profile_equals_measurement_of_the_kernelized_network(name, backward):
    torch.manual_seed(0)
    net = NETWORKS[name]()
    names = [n for n, _ in net.named_parameters()]
    subset = set(random.Random(3).sample(names, len(names) // 2))
    for n, p in net.named_parameters():
        p.requires_grad_(n in subset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kernelize names the layers it leaves stock
        lean = kernelize(copy.deepcopy(net), backward=backward)
    est = estimate(net, SHAPES[0], profile="masked", backward=backward).saved_activations
    assert est == measure(lean, torch.randn(SHAPES[0])).saved_activations


def test_estimate_leaves_the_network_as_it_was():
    torch.manual_seed(0)
    nets = [NETWORKS[n]() for n in ("LSTM head (measured)", "global pool (tensor method)", "dropout, ReLU subclass")]
    x = torch.randn(SHAPES[0])
    for net in nets:
        net.eval()
        before = net(x)
        params = {n: (p, p.detach().clone()) for n, p in net.named_parameters()}
        buffers = {n: b.clone() for n, b in net.named_buffers()}
        net.train()
        estimate(net, SHAPES[0])
        assert all(m.training for m in net.modules())  # modes kept
        for n, p in net.named_parameters():
            assert p is params[n][0] and torch.equal(p, params[n][1])
        for n, b in net.named_buffers():  # BatchNorm statistics untouched in training mode
            assert torch.equal(b, buffers[n])
        net.eval()
        assert torch.equal(net(x), before)  # an LSTM's cached weight list points at its weights again


def test_dropout_after_an_activation_in_training_mode():
    # issue 17: the trace ran in eval mode, where dropout returns its input, so the next layer's
    # kept input was taken for the ReLU's output (counted once): an undercount
    net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Dropout(0.5), nn.Conv2d(8, 2, 1)).train()
    x = torch.randn(2, 3, 4, 4)
    report = estimate(net, x.shape)
    assert report.saved_activations == measure(net, x).saved_activations
    rows = {layer.name: layer for layer in report.layers}
    relu_output = 2 * 8 * 4 * 4 * 4
    assert rows["1"].saved == rows["2"].saved == rows["3"].saved == relu_output  # output, mask, dropped output
    in_eval = relu_output + 2 * 3 * 4 * 4 * 4  # the first conv's input and the ReLU output, kept once
    assert estimate(net.eval(), x.shape).saved_activations == measure(net, x).saved_activations == in_eval


@pytest.mark.parametrize("act", [nn.ReLU6(inplace=True), nn.Hardtanh(inplace=True), nn.SiLU(inplace=True),
                                 nn.Hardswish(inplace=True), nn.ReLU(inplace=True), nn.LeakyReLU(inplace=True)])
def test_in_place_activations_keep_what_autograd_keeps(act):
    # issue 17: in place, ReLU6 / Hardtanh / SiLU / Hardswish keep a copy of their input
    net = nn.Sequential(nn.Conv2d(3, 4, 3), act, nn.Conv2d(4, 2, 1))
    x = torch.randn(2, 3, 9, 11)
    assert estimate(net, x.shape).saved_activations == measure(net, x).saved_activations


def test_a_function_without_a_rule_is_measured_and_named():
    class Shuffle(nn.Module):
        def forward(self, x):
            return F.pixel_unshuffle(F.relu(x), 2)  # pixel_unshuffle has no rule: run on real tensors

    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), Shuffle(), nn.Conv2d(16, 2, 1))
    x = torch.randn(2, 3, 10, 14)
    report = estimate(net, x.shape)
    assert report.saved_activations == measure(net, x).saved_activations
    row = next(layer for layer in report.layers if layer.name == "1")
    assert row.how == "measured, no rule" and any("pixel_unshuffle" in s for s in row.stored)
