"""Fused GroupNorm + activation (Triton in the interpreter on CPU) against torch autograd and
against its torch twin; the mask layout; numerics; bad input."""

import hypothesis.strategies as st
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings

from kernels import group_norm_act, pack_bits_reference
from kernels.activations import ACTIVATIONS, STEP, Surrogate, mask_bits
from kernels.group_norm_act import group_norm_act_forward, group_norm_act_forward_reference
from kernels.runtime import device_for_tests

DEVICE = device_for_tests()  # cpu (Triton's interpreter) unless KERNELS_TEST_DEVICE says otherwise

TORCH_ACT = {"relu": F.relu, "relu6": F.relu6, "hardswish": F.hardswish, "hardsigmoid": F.hardsigmoid}
KINKS = {"relu": (0.0,), "relu6": (0.0, 6.0), "hardswish": (-3.0, 0.0, 3.0), "hardsigmoid": (-3.0, 3.0)}


def inputs(shape, seed, offset=0.0, scale=2.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    c = shape[1]
    x = (torch.randn(shape, generator=g) * scale + offset + 1.0).to(dtype)
    w = (torch.rand(c, generator=g) + 0.5)
    b = torch.randn(c, generator=g)
    dy = torch.randn(shape, generator=g).to(dtype)
    return x.to(DEVICE), w.to(DEVICE), b.to(DEVICE), dy.to(DEVICE)


def group_norm64(x, groups, w, b, eps=1e-5):
    """GroupNorm in float64 (F.group_norm refuses a single value per group at batch 1)."""
    xg = x.double().view(x.shape[0], groups, -1)
    x_hat = ((xg - xg.mean(-1, keepdim=True)) / (xg.var(-1, unbiased=False, keepdim=True) + eps).sqrt()).view(x.shape)
    return x_hat * w.double().view(1, -1, 1, 1) + b.double().view(1, -1, 1, 1)


def near_kink(x, groups, w, b, activation, surrogate=STEP, tol=1e-4):
    """Whether some activation input lies within rounding of a point where the mask flips (then
    two correct implementations may disagree on that one bit)."""
    z = group_norm64(x, groups, w, b)
    points = KINKS[activation] + ((surrogate.threshold,) if activation == "hardswish" and surrogate else ())
    return any(bool(((z - p).abs() < tol).any()) for p in points)


def run(x, groups, w, b, dy, **kw):
    """y and (dx, dgamma, dbeta) of group_norm_act; gradients only for what requires grad."""
    x = x.clone().requires_grad_(True)
    w = w.clone().requires_grad_(kw.pop("train_gamma", True))
    b = b.clone().requires_grad_(True)
    y = group_norm_act(x, groups, w, b, **kw)
    leaves = [t for t in (x, w, b) if t.requires_grad]
    grads = dict(zip(["x", "w", "b"] if w.requires_grad else ["x", "b"], torch.autograd.grad(y, leaves, dy)))
    return y.detach(), grads


def run_torch(x, groups, w, b, dy, activation):
    x, w, b = (t.clone().requires_grad_(True) for t in (x, w, b))
    y = TORCH_ACT[activation](F.group_norm(x, groups, w, b))
    return y.detach(), dict(zip("xwb", torch.autograd.grad(y, (x, w, b), dy)))


shapes = st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.integers(1, 7), st.integers(1, 9))


@settings(max_examples=12, deadline=None)
@given(shape=shapes, activation=st.sampled_from(ACTIVATIONS), seed=st.integers(0, 2**16))
def test_exact_mode_equals_torch_group_norm_and_activation_under_autograd(shape, activation, seed):
    n, groups, per_group, h, w_ = shape
    assume(per_group * h * w_ > 1)  # one value per group: torch's x - mean is rounding noise times 1/sqrt(eps)
    x, w, b, dy = inputs((n, groups * per_group, h, w_), seed)
    assume(not near_kink(x, groups, w, b, activation))
    # Hard-Swish: the exact-derivative variant (surrogate=None), available because x is kept
    y, grads = run(x, groups, w, b, dy, activation=activation, surrogate=None, backend="triton")
    y_ref, grads_ref = run_torch(x, groups, w, b, dy, activation)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    for k in "xwb":
        torch.testing.assert_close(grads[k], grads_ref[k], atol=1e-4, rtol=1e-4)


@settings(max_examples=12, deadline=None)
@given(shape=shapes, activation=st.sampled_from(ACTIVATIONS), mode=st.sampled_from(["exact", "detached"]),
       surrogate=st.sampled_from([STEP, Surrogate(-0.5, 0.1, 0.9)]), seed=st.integers(0, 2**16))
def test_triton_and_twin_agree_in_every_mode(shape, activation, mode, surrogate, seed):
    n, groups, per_group, h, w_ = shape
    # A one-element slab has variance 0 and rstd = 1/sqrt(eps): the twin's z is PyTorch's GroupNorm,
    # x * (gamma rstd) + (beta - mean gamma rstd), which loses the exact zero of x - mean to
    # cancellation (errors ~ |x| rstd 1e-7), while the kernel's (x - mean) * rstd keeps it.
    assume(per_group * h * w_ > 1)
    x, w, b, dy = inputs((n, groups * per_group, h, w_), seed)
    assume(not near_kink(x, groups, w, b, activation, surrogate))
    kw = dict(activation=activation, backward=mode, surrogate=surrogate, train_gamma=mode == "exact")
    y, grads = run(x, groups, w, b, dy, backend="triton", **kw)
    y_twin, grads_twin = run(x, groups, w, b, dy, backend="torch", **kw)
    torch.testing.assert_close(y, y_twin, atol=1e-5, rtol=1e-5)
    assert grads.keys() == grads_twin.keys()
    for k in grads:
        torch.testing.assert_close(grads[k], grads_twin[k], atol=1e-4, rtol=1e-4)
    options = dict(eps=1e-5, activation=activation, surrogate=surrogate, write_mask=True)
    fused = group_norm_act_forward(x, groups, w, b, **options, backend="triton")
    twin = group_norm_act_forward_reference(x, groups, w, b, **options)
    assert torch.equal(fused[1], twin[1])  # the packed mask, word for word
    for a, t in zip(fused[2:], twin[2:]):
        torch.testing.assert_close(a, t)


@pytest.mark.parametrize("shape, groups", [((3, 4, 1, 3), 2), ((2, 6, 5, 7), 3), ((1, 16, 2, 2), 1), ((2, 8, 4, 4), 4)],
                         ids=["M=6", "M=70", "M=64", "M=32"])
def test_mask_is_the_bits_layout_of_the_whole_tensor_whatever_the_slab_size(shape, groups):
    # M = (C/G)HW elements per (sample, group); when M % 32 != 0 slabs share boundary words.
    x, w, b, _ = inputs(shape, seed=1)
    y, words, mean, rstd = group_norm_act_forward(x, groups, w, b, eps=1e-5, activation="relu6", surrogate=STEP,
                                                  write_mask=True, backend="triton")
    z = F.group_norm(x, groups, w, b)
    assert not near_kink(x, groups, w, b, "relu6")  # so that the bits do not depend on rounding
    assert torch.equal(words, pack_bits_reference(mask_bits(z, "relu6")))
    assert mean.shape == rstd.shape == (shape[0], groups) and mean.dtype == rstd.dtype == torch.float32


def test_large_mean_offset_keeps_the_variance_accurate():
    # 1e4 + N(0, 4): E[x^2] - E[x]^2 in float32 would lose the variance to cancellation.
    x, w, b, dy = inputs((2, 8, 9, 11), seed=3, offset=1e4)
    y, grads = run(x, 2, w, b, dy, activation="relu6", backend="triton")
    x64 = x.double().requires_grad_(True)
    w64, b64 = w.double().requires_grad_(True), b.double().requires_grad_(True)
    y64 = F.relu6(F.group_norm(x64, 2, w64, b64))
    ref = dict(zip("xwb", torch.autograd.grad(y64, (x64, w64, b64), dy.double())))
    assert (y.double() - y64).abs().max() < 1e-3
    assert (grads["x"].double() - ref["x"]).abs().max() < 1e-3
    assert (grads["w"].double() - ref["w"]).abs().max() < 1e-2 * ref["w"].abs().max()
    mean, var = x.double().view(2, 2, -1).mean(-1), x.double().view(2, 2, -1).var(-1, unbiased=False)
    _, _, got_mean, got_rstd = group_norm_act_forward(x, 2, w, b, eps=1e-5, activation="relu6", surrogate=STEP,
                                                      write_mask=False, backend="triton")
    torch.testing.assert_close(got_mean.double(), mean, atol=2e-3, rtol=0)
    torch.testing.assert_close(got_rstd.double(), (var + 1e-5).rsqrt(), rtol=1e-3, atol=0)


@pytest.mark.parametrize("dtype, tol", [(torch.float16, 1e-2), (torch.bfloat16, 6e-2)])
def test_half_precision_matches_float32_math_and_the_twin(dtype, tol):
    x, w, b, dy = inputs((2, 8, 5, 6), seed=4, dtype=dtype)
    y, grads = run(x, 4, w, b, dy, activation="relu6", backend="triton")
    y_twin, grads_twin = run(x, 4, w, b, dy, activation="relu6", backend="torch")
    y32, grads32 = run_torch(x.float(), 4, w, b, dy.float(), "relu6")
    assert y.dtype == grads["x"].dtype == dtype and grads["w"].dtype == torch.float32
    torch.testing.assert_close(y.float(), y32, atol=tol, rtol=tol)
    torch.testing.assert_close(y, y_twin, atol=tol, rtol=tol)
    for k in "xwb":
        torch.testing.assert_close(grads[k].float(), grads32[k], atol=tol * 10, rtol=tol)
        torch.testing.assert_close(grads[k], grads_twin[k], atol=tol, rtol=tol)


def test_nan_in_one_group_gives_nan_there_and_exact_values_elsewhere():
    x, w, b, dy = inputs((2, 4, 3, 3), seed=5)
    x[0, 0, 1, 1] = float("nan")  # sample 0, group 0 (channels 0-1)
    y, grads = run(x, 2, w, b, dy, activation="relu6", backend="triton")
    y_ref, grads_ref = run_torch(x, 2, w, b, dy, "relu6")
    assert torch.equal(y.isnan(), y_ref.isnan()) and bool(y[0, :2].isnan().all())
    assert torch.equal(grads["x"].isnan(), grads_ref["x"].isnan())
    ok = ~y_ref.isnan()
    torch.testing.assert_close(y[ok], y_ref[ok])
    torch.testing.assert_close(grads["x"][1], grads_ref["x"][1], atol=1e-5, rtol=1e-5)


def test_hardswish_surrogate_is_what_the_mask_serves_and_none_is_the_true_derivative():
    x, w, b, dy = inputs((2, 8, 4, 4), seed=6)
    _, true_grads = run(x, 2, w, b, dy, activation="hardswish", surrogate=None, backend="triton")
    _, step_grads = run(x, 2, w, b, dy, activation="hardswish", surrogate=STEP, backend="triton")
    _, torch_grads = run_torch(x, 2, w, b, dy, "hardswish")
    torch.testing.assert_close(true_grads["b"], torch_grads["b"], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(step_grads["b"], torch_grads["b"], atol=1e-2)  # a surrogate is not exact
    z = F.group_norm(x, 2, w, b)
    expected_db = (dy * mask_bits(z, "hardswish", STEP)).sum(dim=(0, 2, 3))  # STEP: 0 or 1 by z > 0
    torch.testing.assert_close(step_grads["b"], expected_db, atol=1e-4, rtol=1e-4)


def test_detached_mode_treats_the_statistics_as_constants():
    x, w, b, dy = inputs((2, 8, 4, 5), seed=7)
    _, grads = run(x, 4, w, b, dy, activation="relu", backward="detached", train_gamma=False, backend="triton")
    mean = x.view(2, 4, -1).mean(-1, keepdim=True)
    rstd = (x.view(2, 4, -1).var(-1, unbiased=False, keepdim=True) + 1e-5).rsqrt()
    z = ((x.view(2, 4, -1) - mean) * rstd).view_as(x) * w.view(1, -1, 1, 1) + b.view(1, -1, 1, 1)
    expected = (dy * (z > 0) * w.view(1, -1, 1, 1)).view(2, 4, -1) * rstd
    torch.testing.assert_close(grads["x"], expected.view_as(x), atol=1e-5, rtol=1e-5)


def test_without_gradients_nothing_is_kept_and_y_is_the_same():
    x, w, b, _ = inputs((1, 4, 3, 3), seed=8)
    with torch.no_grad():
        y = group_norm_act(x.requires_grad_(True), 2, w, b, backend="triton")
    assert not y.requires_grad
    torch.testing.assert_close(y, F.relu6(F.group_norm(x.detach(), 2, w, b)))
    y2 = group_norm_act(torch.randn(1, 4, 3, 3, device=DEVICE), 2, None, None, backend="triton")  # affine=False
    assert y2.grad_fn is None and y2.shape == (1, 4, 3, 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="run-to-run determinism is a GPU property")
def test_parameter_gradients_are_bitwise_deterministic_on_cuda():
    x, w, b, dy = (t.cuda() for t in inputs((4, 32, 28, 28), seed=9))
    first, second = run(x, 4, w, b, dy)[1], run(x, 4, w, b, dy)[1]
    assert all(torch.equal(first[k], second[k]) for k in "xwb")


@pytest.mark.parametrize("mode", ["exact", "detached"])
def test_strided_and_expanded_weight_and_bias_give_the_twins_values_and_gradients(mode):
    # The Triton path reads gamma and beta as contiguous float32 copies: strides cannot matter.
    x, _, _, dy = inputs((2, 8, 5, 7), seed=10)
    results = {}
    for backend in ("triton", "torch"):
        w0 = torch.tensor([2.0], device=DEVICE).requires_grad_(mode == "exact")
        b0 = torch.randn(16, generator=torch.Generator().manual_seed(1)).to(DEVICE).requires_grad_(True)
        xs = x.clone().requires_grad_(True)
        y = group_norm_act(xs, 4, w0.expand(8), b0[::2], activation="relu6", backward=mode, backend=backend)
        leaves = [t for t in (xs, w0, b0) if t.requires_grad]
        results[backend] = [y.detach(), *torch.autograd.grad(y, leaves, dy)]
    for a, b in zip(results["triton"], results["torch"]):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    x64 = x.double().requires_grad_(True)
    w64 = torch.full((8,), 2.0, dtype=torch.float64, device=DEVICE)
    b64 = torch.randn(16, generator=torch.Generator().manual_seed(1)).to(DEVICE).double()[::2]
    torch.testing.assert_close(results["triton"][0].double(), F.relu6(F.group_norm(x64, 4, w64, b64)), atol=1e-4,
                               rtol=1e-4)


def test_double_backward_says_the_function_is_once_differentiable():
    x, w, b, dy = inputs((1, 4, 3, 3), seed=11)
    x = x.requires_grad_(True)
    (dx,) = torch.autograd.grad(group_norm_act(x, 2, w, b, backend="triton"), x, dy, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        dx.sum().backward()


X = torch.randn(2, 4, 3, 3)


@pytest.mark.parametrize("call, error, message", [
    (lambda: group_norm_act([1.0], 2), TypeError, "x must be a torch.Tensor"),
    (lambda: group_norm_act(X.long(), 2), TypeError, "x must have dtype float32, float16, bfloat16"),
    (lambda: group_norm_act(X.double(), 2), TypeError, "x must have dtype"),
    (lambda: group_norm_act(X[0], 2), ValueError, r"x must be 4-D \(N, C, H, W\)"),
    (lambda: group_norm_act(X[:0], 2), ValueError, "x must have N, C, H, W >= 1"),
    (lambda: group_norm_act(X.to(memory_format=torch.channels_last), 2), ValueError, "got a channels_last tensor"),
    (lambda: group_norm_act(X, 3), ValueError, "num_groups=3 must divide the number of channels C=4"),
    (lambda: group_norm_act(X, True), ValueError, "num_groups must be an int >= 1"),
    (lambda: group_norm_act(X, 2, torch.ones(3)), ValueError, r"weight must have shape \(4,\)"),
    (lambda: group_norm_act(X, 2, None, torch.ones(4, dtype=torch.int64)), TypeError, "bias must have a floating dtype"),
    (lambda: group_norm_act(X, 2, torch.ones(4, device="meta")), ValueError, "weight is on meta but x is on cpu"),
    (lambda: group_norm_act(X, 2, eps=-1.0), ValueError, "eps must be a finite number >= 0"),
    (lambda: group_norm_act(X, 2, activation="gelu"), ValueError, "activation must be one of"),
    (lambda: group_norm_act(X, 2, backward="approx"), ValueError, r"backward must be one of \('exact', 'detached'\)"),
    (lambda: group_norm_act(X, 2, surrogate=0.5), TypeError, "surrogate must be a kernels.activations.Surrogate"),
    (lambda: group_norm_act(X, 2, activation="hardswish", backward="detached", surrogate=None), ValueError,
     "surrogate=None .* needs the activation input"),
    (lambda: group_norm_act(X, 2, backend="cuda"), ValueError, r"backend must be one of \('triton', 'torch'\)"),
    (lambda: group_norm_act(X, 2, torch.ones(4, requires_grad=True), backward="detached"), ValueError,
     r"backward='detached' keeps no x, so it cannot give d\(gamma\)"),
])
def test_bad_input_names_the_argument(call, error, message):
    with pytest.raises(error, match=message):
        call()
