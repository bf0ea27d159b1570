"""Frozen-statistics norm + activation (affine_act): Triton in the interpreter against torch
autograd and its twin; the mask it keeps; bad input."""

import hypothesis.strategies as st
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings

from kernels import affine_act, affine_act_forward_reference, pack_bits_reference
from kernels.activations import ACTIVATIONS, STEP, Surrogate, backward_from_mask, mask_bits
from kernels.affine_act import affine_act_forward
from kernels.runtime import device_for_tests

DEVICE = device_for_tests()  # cpu (Triton's interpreter) unless KERNELS_TEST_DEVICE says otherwise

TORCH_ACT = {"relu": F.relu, "relu6": F.relu6, "hardswish": F.hardswish, "hardsigmoid": F.hardsigmoid}
KINKS = (-0.5, 0.0, 6.0)  # mask flips: relu / relu6 kinks, hardswish thresholds used below


def inputs(shape, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * 3 + 1).to(dtype)
    scale = torch.rand(shape[1], generator=g) + 0.5
    shift = torch.randn(shape[1], generator=g)
    dy = torch.randn(shape, generator=g).to(dtype)
    return x.to(DEVICE), scale.to(DEVICE), shift.to(DEVICE), dy.to(DEVICE)


def z_of(x, scale, shift):
    return x.double() * scale.double().view(1, -1, 1, 1) + shift.double().view(1, -1, 1, 1)


def grads_of(x, scale, shift, dy, **kw):
    x, shift = x.clone().requires_grad_(True), shift.clone().requires_grad_(True)
    y = affine_act(x, scale, shift, **kw)
    dx, dshift = torch.autograd.grad(y, (x, shift), dy)
    return y.detach(), dx, dshift


@settings(max_examples=10, deadline=None)
@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 7), st.integers(1, 9)),
       activation=st.sampled_from(ACTIVATIONS), surrogate=st.sampled_from([STEP, Surrogate(-0.5, 0.1, 0.9)]),
       seed=st.integers(0, 2**16))
def test_triton_twin_and_autograd_agree(shape, activation, surrogate, seed):
    x, scale, shift, dy = inputs(shape, seed)
    assume(not any(bool(((z_of(x, scale, shift) - k).abs() < 1e-4).any()) for k in KINKS))
    y, dx, dshift = grads_of(x, scale, shift, dy, activation=activation, surrogate=surrogate, backend="triton")
    y_twin, dx_twin, dshift_twin = grads_of(x, scale, shift, dy, activation=activation, surrogate=surrogate,
                                           backend="torch")
    torch.testing.assert_close(y, y_twin)
    torch.testing.assert_close(dx, dx_twin)
    torch.testing.assert_close(dshift, dshift_twin, atol=1e-5, rtol=1e-5)
    # against torch: the forward always; the backward where one bit is exact (relu, relu6),
    # and for hardswish the surrogate's two levels chosen by the mask
    xr, sr = x.clone().requires_grad_(True), shift.clone().requires_grad_(True)
    z = xr * scale.view(1, -1, 1, 1) + sr.view(1, -1, 1, 1)
    y_ref = TORCH_ACT[activation](z)
    torch.testing.assert_close(y, y_ref.detach())
    if activation != "hardswish":
        dx_ref, dshift_ref = torch.autograd.grad(y_ref, (xr, sr), dy)
    else:
        dz = backward_from_mask(dy, mask_bits(z.detach(), activation, surrogate), activation, surrogate)
        dx_ref, dshift_ref = dz * scale.view(1, -1, 1, 1), dz.sum(dim=(0, 2, 3))
    torch.testing.assert_close(dx, dx_ref)
    torch.testing.assert_close(dshift, dshift_ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 2, 4, 4), (3, 1, 1, 11)])
def test_mask_words_are_pack_bits_of_the_mask(shape):
    x, scale, shift, _ = inputs(shape, seed=2)
    _, words = affine_act_forward(x, scale, shift, activation="relu6", surrogate=STEP, write_mask=True,
                                  backend="triton")
    z = x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)
    assert torch.equal(words, pack_bits_reference(mask_bits(z, "relu6")))
    _, twin_words = affine_act_forward_reference(x, scale, shift, activation="relu6", surrogate=STEP, write_mask=True)
    assert torch.equal(words, twin_words)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_agrees_with_the_twin(dtype):
    x, scale, shift, dy = inputs((2, 4, 5, 5), seed=3, dtype=dtype)
    got = grads_of(x, scale, shift, dy, activation="relu6", backend="triton")
    twin = grads_of(x, scale, shift, dy, activation="relu6", backend="torch")
    assert got[0].dtype == got[1].dtype == dtype and got[2].dtype == torch.float32
    for a, b in zip(got, twin):
        torch.testing.assert_close(a, b)


def test_only_the_shift_training_needs_no_scale_and_nan_passes_through():
    x, scale, shift, dy = inputs((2, 3, 4, 4), seed=4)
    x[1, 2, 0, 0] = float("nan")
    s = shift.clone().requires_grad_(True)
    y = affine_act(x, scale, s, "relu", backend="triton")
    (dshift,) = torch.autograd.grad(y, (s,), dy)
    assert y[1, 2, 0, 0].isnan() and int(y.isnan().sum()) == 1
    z = x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)
    torch.testing.assert_close(dshift, (dy * (z > 0)).sum(dim=(0, 2, 3)))


def test_expanded_scale_and_strided_shift_give_the_twins_values_and_gradients():
    x, _, _, dy = inputs((2, 3, 4, 5), seed=5)
    results = {}
    for backend in ("triton", "torch"):
        shift0 = torch.randn(6, generator=torch.Generator().manual_seed(2)).to(DEVICE).requires_grad_(True)
        xs = x.clone().requires_grad_(True)
        y = affine_act(xs, torch.tensor([1.5], device=DEVICE).expand(3), shift0[::2], "relu6", backend=backend)
        results[backend] = [y.detach(), *torch.autograd.grad(y, (xs, shift0), dy)]
    for a, b in zip(results["triton"], results["torch"]):
        torch.testing.assert_close(a, b)
    shift = torch.randn(6, generator=torch.Generator().manual_seed(2)).to(DEVICE)[::2]
    torch.testing.assert_close(results["triton"][0], F.relu6(x * 1.5 + shift.view(1, 3, 1, 1)))


def test_double_backward_says_the_function_is_once_differentiable():
    x, scale, shift, dy = inputs((1, 3, 2, 2), seed=6)
    x = x.requires_grad_(True)
    (dx,) = torch.autograd.grad(affine_act(x, scale, shift, backend="triton"), x, dy, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        dx.sum().backward()


def test_true_hardswish_derivative_error_names_only_what_affine_act_takes():
    with pytest.raises(ValueError, match="surrogate=None") as error:
        affine_act(torch.randn(1, 3, 2, 2), torch.ones(3), torch.zeros(3), "hardswish", surrogate=None)
    message = str(error.value)  # affine_act has no backward= argument: the message must not ask for one
    assert "or use backward='exact'" not in message and "kernels.group_norm_act(..., backward='exact')" in message


X = torch.randn(2, 3, 4, 4)
ONES = torch.ones(3)


@pytest.mark.parametrize("call, error, message", [
    (lambda: affine_act(X.int(), ONES, ONES), TypeError, "x must have dtype"),
    (lambda: affine_act(X, None, ONES), TypeError, r"scale must be a torch.Tensor of shape \(3,\)"),
    (lambda: affine_act(X, ONES, torch.ones(4)), ValueError, r"shift must have shape \(3,\)"),
    (lambda: affine_act(X, ONES, ONES, "tanh"), ValueError, "activation must be one of"),
    (lambda: affine_act(X, ONES, ONES, "hardswish", surrogate=None), ValueError, "surrogate=None"),
    (lambda: affine_act(X, ONES.clone().requires_grad_(True), ONES), ValueError,
     "scale must not require a gradient"),
    (lambda: affine_act(X.transpose(2, 3), ONES, ONES), ValueError, "x must be contiguous"),
])
def test_bad_input_names_the_argument(call, error, message):
    with pytest.raises(error, match=message):
        call()
