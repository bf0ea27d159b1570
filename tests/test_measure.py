"""ondevice.memory.measure: saved-tensor bytes, each storage once, parameters left out."""

import gc
import weakref

import pytest
import torch

from ondevice.memory import SavedTensorLog, measure


def mlp(d=6, h=10, o=3):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(d, h), torch.nn.ReLU(), torch.nn.Linear(h, o))


@pytest.mark.parametrize("batch", [1, 5])
def test_mlp_all_trainable_counts_shared_storage_once(batch):
    model, x = mlp(), torch.randn(batch, 6)
    m = measure(model, x)
    # x for dW1; ReLU output for ReLU backward and, the same storage, for dW2.
    assert m.saved_activations == 4 * batch * (6 + 10)
    assert sorted(s.shape for s in m.saved) == sorted([(batch, 6), (batch, 10)])


def test_frozen_weight_trainable_bias_keeps_relu_output_only():
    model, x = mlp(), torch.randn(4, 6)
    model[0].weight.requires_grad_(False)
    assert measure(model, x).saved_activations == 4 * 4 * 10


def test_everything_frozen_saves_nothing():
    model, x = mlp(), torch.randn(4, 6)
    model.requires_grad_(False)
    assert measure(model, x).saved_activations == 0


def test_parameters_and_buffers_are_not_counted():
    # Linear's input gradient needs W (a parameter): saved, but not an activation.
    lin = torch.nn.Linear(8, 8, bias=False).requires_grad_(False)
    x = torch.randn(2, 8, requires_grad=True)
    with SavedTensorLog() as log:
        lin(x)
    assert log.nbytes == 8 * 8 * 4  # without exclusion the weight is what is saved
    assert measure(lin, x).saved_activations == 0


def test_conv_saves_input_for_weight_gradient():
    conv = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False)
    x = torch.randn(2, 3, 9, 7)
    assert measure(conv, x).saved_activations == x.numel() * 4
    conv.weight.requires_grad_(False)
    assert measure(conv, x).saved_activations == 0


def test_float16_uses_two_bytes_per_element():
    lin = torch.nn.Linear(4, 4).half()
    x = torch.randn(3, 4).half()
    assert measure(lin, x).saved_activations == 3 * 4 * 2


def test_view_of_a_larger_tensor_counts_the_whole_storage():
    base = torch.randn(10, 4)
    lin = torch.nn.Linear(4, 2)
    # The view shares the 10x4 storage, which is what stays allocated.
    assert measure(lin, base[:3]).saved_activations == 10 * 4 * 4


def test_bad_arguments_name_themselves():
    with pytest.raises(TypeError, match="model"):
        measure(lambda t: t, torch.ones(1))
    with pytest.raises(TypeError, match="inputs"):
        measure(torch.nn.ReLU(), [1.0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA peak memory needs a GPU")
def test_cuda_peak_is_reported():
    model, x = mlp().cuda(), torch.randn(64, 6, device="cuda")
    m = measure(model, x)
    assert m.cuda_peak is not None and m.cuda_peak >= m.saved_activations


class _Spy(torch.nn.Module):
    """ReLU that remembers a weak reference to each output (which autograd saves for backward)."""

    def __init__(self):
        super().__init__()
        self.outputs = []

    def forward(self, x):
        y = torch.relu(x)
        self.outputs.append(weakref.ref(y))
        return y


def test_measure_leaves_no_reference_cycle_behind():
    # The saved-tensor hooks must not keep the graph alive: with the garbage collector off, every
    # activation of the three measured forward passes is freed as soon as measure returns.
    spy = _Spy()
    model = torch.nn.Sequential(torch.nn.Linear(6, 32), spy, torch.nn.Linear(32, 3))
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            assert measure(model, torch.randn(4, 6)).saved_activations > 0
        assert len(spy.outputs) == 3 and all(ref() is None for ref in spy.outputs)
    finally:
        gc.enable()
