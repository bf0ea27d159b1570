"""The shared activation definitions agree with torch's autograd where they claim to be exact."""

import pytest
import torch

from kernels.activations import (ACTIVATIONS, STEP, Surrogate, backward_from_mask, derivative,
                                 forward, mask_bits)

TORCH = {"relu": torch.relu, "relu6": torch.nn.functional.relu6, "hardswish": torch.nn.functional.hardswish,
         "hardsigmoid": torch.nn.functional.hardsigmoid}


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_forward_and_true_derivative_equal_autograd(activation):
    z = torch.cat([torch.linspace(-8, 8, 1601), torch.tensor([-3.0, 0.0, 3.0, 6.0])]).requires_grad_(True)
    y = TORCH[activation](z)
    y.backward(torch.ones_like(y))
    assert torch.equal(forward(z.detach(), activation), y.detach())
    if activation == "hardswish":
        assert torch.allclose(derivative(z.detach(), activation), z.grad, atol=1e-6)
    else:  # at the kinks torch's derivative is 0, as the mask's
        assert torch.equal(derivative(z.detach(), activation), z.grad)


@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_one_bit_is_exact_for_relu_and_relu6(activation):
    z, dy = torch.randn(4, 8, 5, 5) * 4, torch.randn(4, 8, 5, 5)
    assert torch.equal(backward_from_mask(dy, mask_bits(z, activation), activation), dy * derivative(z, activation))


def test_hardswish_surrogate_uses_its_threshold_and_levels():
    z = torch.tensor([-5.0, -0.5, 0.0, 0.5, 5.0])
    s = Surrogate(threshold=-0.5, low=0.1, high=0.9)
    assert mask_bits(z, "hardswish", s).tolist() == [False, False, True, True, True]
    assert backward_from_mask(torch.ones(5), mask_bits(z, "hardswish", s), "hardswish", s).tolist() == \
        pytest.approx([0.1, 0.1, 0.9, 0.9, 0.9])
    assert backward_from_mask(torch.ones(5), mask_bits(z, "hardswish"), "hardswish", STEP).tolist() == [0, 0, 0, 1, 1]


def test_unknown_activation_is_named():
    with pytest.raises(ValueError, match="activation must be one of"):
        forward(torch.ones(1), "gelu")
