"""The primer's Triton ReLU6 kernel against PyTorch and its torch twin (interpreter on CPU)."""

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

import kernels
from kernels import relu6, relu6_reference
from kernels.runtime import choose_backend


def same(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and bool(((a == b) | (a.isnan() & b.isnan())).all())


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(min_value=0, max_value=3000),
    block=st.sampled_from([64, 256, 1024]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    scale=st.sampled_from([1.0, 10.0, 1e6]),
)
def test_matches_torch_for_any_length(n, block, dtype, scale):
    x = (torch.randn(n, dtype=torch.float64) * scale).to(dtype)
    if n:
        x[0] = float("nan")
    y = relu6(x, block=block, backend="triton")
    assert same(y, torch.nn.functional.relu6(x))
    assert same(y, relu6_reference(x))


def test_keeps_shape_and_handles_non_contiguous_input():
    x = torch.randn(7, 9, 5).transpose(0, 2) * 8
    y = relu6(x, backend="triton")
    assert y.shape == x.shape
    assert same(y, torch.nn.functional.relu6(x))


def test_clip_points_and_special_values():
    x = torch.tensor([-float("inf"), -1e-30, -0.0, 0.0, 6.0, 6.0000005, float("inf"), float("nan")])
    assert same(relu6(x, backend="triton"), torch.nn.functional.relu6(x))


def test_default_backend_follows_the_interpreter_switch(monkeypatch):
    x = torch.ones(3)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert choose_backend(x, None) == "triton"
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert choose_backend(x, None) == "torch"
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        choose_backend(x, "triton")
    assert kernels.runtime.interpreter_enabled() is False


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match=r"backend must be one of \('triton', 'torch'\)"):
        relu6(torch.ones(2), backend="cuda")
    with pytest.raises(TypeError, match="x must have a floating dtype"):
        relu6(torch.ones(2, dtype=torch.int32))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        relu6([1.0, 2.0])
    with pytest.raises(ValueError, match="block must be a positive power of two"):
        relu6(torch.ones(2), block=100)
